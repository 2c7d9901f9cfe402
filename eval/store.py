"""Runs, predictions and the answer cache in one embedded SQLite database under the data directory.

One row per (run, arm, task row, phase) with a primary key on exactly that, so a run that
was killed and started again with the same id skips what is stored and never duplicates a
row. Each batch of answers is committed at once: a crash loses at most the batch in flight.
Beside the runs, the answer cache holds every generated answer under the key of what produced it
(`ragft.eval.running.prediction_cache`), so any run asking the same prompt of the same weights reuses it.
Every write runs in one transaction that is rolled back when any statement fails, so a failed
write leaves neither half a batch nor an open transaction behind. The file is created 0600.

Example:
    >>> store = Store(Path("data/ragft.sqlite3"))            # doctest: +SKIP
    >>> store.missing("run-1", "rag", "main", ["k1", "k2"])  # doctest: +SKIP
    ['k1', 'k2']
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    corpus TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    status TEXT NOT NULL,
    config TEXT NOT NULL,
    meta TEXT NOT NULL DEFAULT '{}',
    error TEXT
);
CREATE TABLE IF NOT EXISTS predictions (
    run_id TEXT NOT NULL REFERENCES runs(id),
    arm TEXT NOT NULL,
    row_id TEXT NOT NULL,
    phase TEXT NOT NULL,
    prediction TEXT NOT NULL,
    passages TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    generated_tokens INTEGER NOT NULL,
    latency_ms REAL NOT NULL,
    retrieval_ms REAL NOT NULL,
    batch_size INTEGER NOT NULL,
    machine_ms REAL,
    reused INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, arm, row_id, phase)
);
CREATE TABLE IF NOT EXISTS answer_cache (
    key TEXT PRIMARY KEY,
    weights TEXT NOT NULL,
    text TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    generated_tokens INTEGER NOT NULL,
    latency_ms REAL NOT NULL,
    batch_size INTEGER NOT NULL,
    machine_ms REAL,
    created_at TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class StoredPassage:
    chunk_id: str
    doc_id: str
    text: str
    page: str | None = None  # "p. 4", "slide 3" in a paged document (stored only when set)


@dataclass(frozen=True)
class Prediction:
    """One arm's stored answer to one task row in one phase ('main', or 'fresh' after the corpus update)."""

    arm: str
    row_id: str
    phase: str
    text: str
    passages: tuple[StoredPassage, ...]
    prompt_tokens: int
    generated_tokens: int
    latency_ms: float  # wall time of the generation batch
    retrieval_ms: float
    batch_size: int
    machine_ms: float | None = None  # the batch's share of the machine's wall clock; None in older runs
    reused: bool = False  # taken from the answer cache (made by an earlier run): its costs are that run's

    @property
    def cost_ms(self) -> float:
        """This answer's share of the machine: its batch's machine time (its share of the wall clock where batches
        ran side by side, else its latency) split evenly over its answers, plus its retrieval."""
        batch = self.latency_ms if self.machine_ms is None else self.machine_ms
        return batch / max(1, self.batch_size) + self.retrieval_ms


@dataclass(frozen=True)
class CachedAnswer:
    """A generated answer as the answer cache keeps it: the text and what making it cost (`Generation`'s fields)."""

    text: str
    prompt_tokens: int
    generated_tokens: int
    latency_ms: float
    batch_size: int
    machine_ms: float | None


@dataclass(frozen=True)
class RunRecord:
    id: str
    corpus: str
    created_at: str
    updated_at: str
    status: str
    config: dict
    meta: dict
    error: str | None


class RunNotFound(KeyError):
    def __str__(self) -> str:
        return f"no run '{self.args[0]}' in the database; `ragft runs` lists the stored ones"


def now() -> str:
    """A timestamp as every table stores it: UTC, ISO 8601, to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def connect(path: Path, schema: str) -> sqlite3.Connection:
    """A connection to the results database shared by runs and jobs: WAL, so readers never block the writer,
    a busy timeout for the other process, autocommit with explicit transactions, and `schema` created."""
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))  # owner-only; SQLite gives its -wal/-shm files this mode
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA busy_timeout=10000")
    conn.executescript(schema)
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection, lock: threading.RLock) -> Iterator[sqlite3.Connection]:
    """One write transaction under `lock`: committed when the block ends, rolled back if anything in it raises,
    so a failed statement never leaves the transaction open for the next writer to trip on."""
    with lock:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


class Store:
    """A thread-safe handle on the results database (one connection, serialised writes)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._conn = connect(self.path, SCHEMA)
        self._lock = threading.RLock()  # re-entrant: a write reads the row it updates
        if {"machine_ms", "reused"} <= self._columns():  # the usual case: a read, no write lock for every reader
            return
        with transaction(self._conn, self._lock) as conn:  # checked inside: another process may migrate too
            columns = self._columns()
            if "machine_ms" not in columns:  # a database from before machine time: its answers keep their latencies
                conn.execute("ALTER TABLE predictions ADD COLUMN machine_ms REAL")
            if "reused" not in columns:  # a database from before the answer cache: every answer was made by its run
                conn.execute("ALTER TABLE predictions ADD COLUMN reused INTEGER NOT NULL DEFAULT 0")

    def _columns(self) -> set[str]:
        return {row[1] for row in self._conn.execute("PRAGMA table_info(predictions)")}

    def close(self) -> None:
        self._conn.close()

    def create_run(self, run_id: str, corpus: str, config: dict) -> RunRecord:
        """Create the run, or return the stored one with this id (resume)."""
        with transaction(self._conn, self._lock) as conn:
            stamp = now()
            conn.execute(
                "INSERT OR IGNORE INTO runs (id, corpus, created_at, updated_at, status, config) VALUES (?,?,?,?,?,?)",
                (run_id, corpus, stamp, stamp, "queued", json.dumps(config, sort_keys=True, default=str)),
            )
        return self.run(run_id)

    _RUN_COLUMNS = "id, corpus, created_at, updated_at, status, config, meta, error"

    @staticmethod
    def _run_record(row: tuple) -> RunRecord:
        return RunRecord(row[0], row[1], row[2], row[3], row[4], json.loads(row[5]), json.loads(row[6]), row[7])

    def run(self, run_id: str) -> RunRecord:
        row = self._conn.execute(f"SELECT {self._RUN_COLUMNS} FROM runs WHERE id=?", (run_id,)).fetchone()
        if row is None:
            raise RunNotFound(run_id)
        return self._run_record(row)

    def runs(self) -> list[RunRecord]:
        """Every run, oldest first, in one query."""
        cursor = self._conn.execute(f"SELECT {self._RUN_COLUMNS} FROM runs ORDER BY created_at, id")
        return [self._run_record(r) for r in cursor]

    def set_status(self, run_id: str, status: str, error: str | None = None) -> None:
        with transaction(self._conn, self._lock) as conn:
            conn.execute("UPDATE runs SET status=?, error=?, updated_at=? WHERE id=?", (status, error, now(), run_id))

    def update_meta(self, run_id: str, **values) -> None:
        """Merge figures (index time, adapter manifests, ...) into the run's metadata."""
        with transaction(self._conn, self._lock) as conn:
            meta = self.run(run_id).meta
            meta.update(values)
            conn.execute(
                "UPDATE runs SET meta=?, updated_at=? WHERE id=?",
                (json.dumps(meta, sort_keys=True, default=str), now(), run_id),
            )

    def missing(self, run_id: str, arm: str, phase: str, row_ids: list[str]) -> list[str]:
        """The row ids, in order, that have no stored prediction yet."""
        done = {
            r[0]
            for r in self._conn.execute(
                "SELECT row_id FROM predictions WHERE run_id=? AND arm=? AND phase=?", (run_id, arm, phase)
            )
        }
        return [r for r in row_ids if r not in done]

    def add_predictions(self, run_id: str, predictions: list[Prediction]) -> None:
        """Store a batch in one transaction; a row already stored is kept as it was."""
        rows = [
            (
                run_id,
                p.arm,
                p.row_id,
                p.phase,
                p.text,
                json.dumps([[s.chunk_id, s.doc_id, s.text, *([s.page] if s.page else [])] for s in p.passages]),
                p.prompt_tokens,
                p.generated_tokens,
                p.latency_ms,
                p.retrieval_ms,
                p.batch_size,
                p.machine_ms,
                int(p.reused),
            )
            for p in predictions
        ]
        with transaction(self._conn, self._lock) as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO predictions (run_id, arm, row_id, phase, prediction, passages, prompt_tokens, "
                "generated_tokens, latency_ms, retrieval_ms, batch_size, machine_ms, reused) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                rows,
            )
            conn.execute("UPDATE runs SET updated_at=? WHERE id=?", (now(), run_id))

    def predictions(self, run_id: str) -> list[Prediction]:
        cursor = self._conn.execute(
            "SELECT arm, row_id, phase, prediction, passages, prompt_tokens, generated_tokens, latency_ms, "
            "retrieval_ms, batch_size, machine_ms, reused FROM predictions WHERE run_id=? ORDER BY arm, phase, row_id",
            (run_id,),
        )
        return [Prediction(*r[:4], tuple(StoredPassage(*p) for p in json.loads(r[4])), *r[5:11], bool(r[11]))
                for r in cursor]  # fmt: skip

    def arm_costs(self, run_id: str) -> dict[str, tuple[int, float]]:
        """Per stored arm: answers so far and their summed cost in ms (`Prediction.cost_ms`), without loading them."""
        rows = self._conn.execute(
            "SELECT arm, COUNT(*), SUM(COALESCE(machine_ms, latency_ms) / MAX(1, batch_size) + retrieval_ms) FROM predictions "
            "WHERE run_id=? GROUP BY arm",
            (run_id,),
        )
        return {arm: (n, float(total or 0.0)) for arm, n, total in rows}

    def count(self, run_id: str) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM predictions WHERE run_id=?", (run_id,)).fetchone()[0]

    def counts(self, run_ids: list[str]) -> dict[str, int]:
        """Each run's stored answers, in one query per 500 runs (not one per run)."""
        found = dict.fromkeys(run_ids, 0)
        for start in range(0, len(run_ids), 500):  # SQLite binds at most 999 parameters per statement
            part = run_ids[start : start + 500]
            sql = f"SELECT run_id, COUNT(*) FROM predictions WHERE run_id IN ({','.join('?' * len(part))}) GROUP BY run_id"
            found.update(self._conn.execute(sql, part))
        return found

    def reused(self, run_id: str) -> int:
        """How many of the run's answers came from the answer cache rather than being generated for it."""
        sql = "SELECT COUNT(*) FROM predictions WHERE run_id=? AND reused=1"
        return self._conn.execute(sql, (run_id,)).fetchone()[0]

    def cached_answers(self, keys: list[str]) -> dict[str, CachedAnswer]:
        """The answers the cache holds under any of `keys`."""
        found = {}
        for start in range(0, len(keys), 500):  # SQLite binds at most 999 parameters per statement
            part = keys[start : start + 500]
            rows = self._conn.execute(
                "SELECT key, text, prompt_tokens, generated_tokens, latency_ms, batch_size, machine_ms FROM "
                f"answer_cache WHERE key IN ({','.join('?' * len(part))})",
                part,
            )
            found.update({r[0]: CachedAnswer(*r[1:]) for r in rows})
        return found

    def cache_answers(self, entries: list[tuple[str, str, CachedAnswer]]) -> None:
        """Keep each (key, weights, answer) in the cache; a key stored again takes the newer answer."""
        stamp = now()
        rows = [(key, weights, a.text, a.prompt_tokens, a.generated_tokens, a.latency_ms, a.batch_size, a.machine_ms,
                 stamp) for key, weights, a in entries]  # fmt: skip
        with transaction(self._conn, self._lock) as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO answer_cache (key, weights, text, prompt_tokens, generated_tokens, latency_ms, "
                "batch_size, machine_ms, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
                rows,
            )
