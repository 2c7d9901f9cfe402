"""Runs and predictions in one embedded SQLite database under the data directory.

One row per (run, arm, task row, phase) with a primary key on exactly that, so a run that
was killed and started again with the same id skips what is stored and never duplicates a
row. Each batch of answers is committed at once: a crash loses at most the batch in flight.

Example:
    >>> store = Store(Path("data/ragft.sqlite3"))            # doctest: +SKIP
    >>> store.missing("run-1", "rag", "main", ["k1", "k2"])  # doctest: +SKIP
    ['k1', 'k2']
"""

from __future__ import annotations

import json
import sqlite3
import threading
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
    PRIMARY KEY (run_id, arm, row_id, phase)
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    request TEXT NOT NULL,
    status TEXT NOT NULL,
    progress TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    error TEXT
);
"""

JOB_ACTIVE = ("queued", "training", "evaluating")
JOB_STATUSES = (*JOB_ACTIVE, "done", "failed", "cancelled", "interrupted")
JOB_KINDS = ("eval", "train")


@dataclass(frozen=True)
class StoredPassage:
    chunk_id: str
    doc_id: str
    text: str


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

    @property
    def cost_ms(self) -> float:
        """This answer's share of the compute: its batch's time split evenly, plus its retrieval."""
        return self.latency_ms / max(1, self.batch_size) + self.retrieval_ms


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


@dataclass(frozen=True)
class JobRecord:
    """A background job (an eval run or adapter training) as the service tracks it."""

    id: str
    kind: str  # "eval" or "train"
    request: dict
    status: str  # queued, training, evaluating, done, failed, cancelled, interrupted
    progress: dict
    created_at: str
    updated_at: str
    error: str | None


class RunNotFound(KeyError):
    def __str__(self) -> str:
        return f"no run '{self.args[0]}' in the database; `ragft runs` lists the stored ones"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Store:
    """A thread-safe handle on the results database (one connection, serialised writes)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA busy_timeout=10000")
        self._conn.executescript(SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._conn.close()

    def create_run(self, run_id: str, corpus: str, config: dict) -> RunRecord:
        """Create the run, or return the stored one with this id (resume)."""
        with self._lock:
            now = _now()
            self._conn.execute(
                "INSERT OR IGNORE INTO runs (id, corpus, created_at, updated_at, status, config) VALUES (?,?,?,?,?,?)",
                (run_id, corpus, now, now, "queued", json.dumps(config, sort_keys=True, default=str)),
            )
        return self.run(run_id)

    def run(self, run_id: str) -> RunRecord:
        row = self._conn.execute(
            "SELECT id, corpus, created_at, updated_at, status, config, meta, error FROM runs WHERE id=?", (run_id,)
        ).fetchone()
        if row is None:
            raise RunNotFound(run_id)
        return RunRecord(row[0], row[1], row[2], row[3], row[4], json.loads(row[5]), json.loads(row[6]), row[7])

    def runs(self) -> list[RunRecord]:
        ids = [r[0] for r in self._conn.execute("SELECT id FROM runs ORDER BY created_at, id")]
        return [self.run(i) for i in ids]

    def set_status(self, run_id: str, status: str, error: str | None = None) -> None:
        with self._lock:
            self._conn.execute(
                "UPDATE runs SET status=?, error=?, updated_at=? WHERE id=?", (status, error, _now(), run_id)
            )

    def update_meta(self, run_id: str, **values) -> None:
        """Merge figures (index time, adapter manifests, ...) into the run's metadata."""
        with self._lock:
            meta = self.run(run_id).meta
            meta.update(values)
            self._conn.execute(
                "UPDATE runs SET meta=?, updated_at=? WHERE id=?",
                (json.dumps(meta, sort_keys=True, default=str), _now(), run_id),
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
                json.dumps([[s.chunk_id, s.doc_id, s.text] for s in p.passages]),
                p.prompt_tokens,
                p.generated_tokens,
                p.latency_ms,
                p.retrieval_ms,
                p.batch_size,
            )
            for p in predictions
        ]
        with self._lock:
            self._conn.execute("BEGIN")
            self._conn.executemany("INSERT OR IGNORE INTO predictions VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
            self._conn.execute("UPDATE runs SET updated_at=? WHERE id=?", (_now(), run_id))
            self._conn.execute("COMMIT")

    def predictions(self, run_id: str) -> list[Prediction]:
        cursor = self._conn.execute(
            "SELECT arm, row_id, phase, prediction, passages, prompt_tokens, generated_tokens, latency_ms, "
            "retrieval_ms, batch_size FROM predictions WHERE run_id=? ORDER BY arm, phase, row_id",
            (run_id,),
        )
        return [
            Prediction(
                r[0], r[1], r[2], r[3], tuple(StoredPassage(*p) for p in json.loads(r[4])), r[5], r[6], r[7], r[8], r[9]
            )
            for r in cursor
        ]

    def add_job(self, job_id: str, kind: str, request: dict) -> JobRecord:
        with self._lock:
            now = _now()
            self._conn.execute(
                "INSERT INTO jobs (id, kind, request, status, created_at, updated_at) VALUES (?,?,?,?,?,?)",
                (job_id, kind, json.dumps(request, sort_keys=True, default=str), "queued", now, now),
            )
        return self.job(job_id)

    def job(self, job_id: str) -> JobRecord:
        row = self._conn.execute(
            "SELECT id, kind, request, status, progress, created_at, updated_at, error FROM jobs WHERE id=?", (job_id,)
        ).fetchone()
        if row is None:
            raise RunNotFound(job_id)
        return JobRecord(row[0], row[1], json.loads(row[2]), row[3], json.loads(row[4]), row[5], row[6], row[7])

    def jobs(self, kind: str | None = None) -> list[JobRecord]:
        query = "SELECT id FROM jobs" + (" WHERE kind=?" if kind else "") + " ORDER BY created_at, id"
        return [self.job(r[0]) for r in self._conn.execute(query, (kind,) if kind else ())]

    def job_counts(self) -> dict[tuple[str, str], int]:
        """Jobs per (kind, status)."""
        with self._lock:
            rows = self._conn.execute("SELECT kind, status, COUNT(*) FROM jobs GROUP BY kind, status").fetchall()
        return {(kind, status): n for kind, status, n in rows}

    def update_job(
        self, job_id: str, status: str | None = None, progress: dict | None = None, error: str | None = None
    ):
        """Change a job's status and merge `progress` into what it reported before."""
        with self._lock:
            job = self.job(job_id)
            self._conn.execute(
                "UPDATE jobs SET status=?, progress=?, error=?, updated_at=? WHERE id=?",
                (status or job.status, json.dumps(job.progress | (progress or {})),
                 error if error is not None else job.error, _now(), job_id),
            )  # fmt: skip

    def count(self, run_id: str) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM predictions WHERE run_id=?", (run_id,)).fetchone()[0]
