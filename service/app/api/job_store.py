"""Background jobs (eval runs, adapter training) as the service tracks them, in the results database.

The jobs table lives beside the runs (one SQLite file under the data directory, so a job and
the run it produced survive a restart together) but belongs to the service: the runner knows
nothing of jobs.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

from eval.store import connect, now, transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    request TEXT NOT NULL,
    status TEXT NOT NULL,
    progress TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    error TEXT,
    run_id TEXT
);
"""
COLUMNS = "id, kind, request, status, progress, created_at, updated_at, error, run_id"

JOB_ACTIVE = ("queued", "training", "evaluating")
JOB_STATUSES = (*JOB_ACTIVE, "done", "failed", "cancelled", "interrupted")
JOB_KINDS = ("eval", "train")


@dataclass(frozen=True)
class JobRecord:
    """A background job (an eval run or adapter training) as the service tracks it."""

    id: str
    kind: str  # "eval" or "train"
    request: dict  # eval: a RunSpec as JSON; train: {"corpus", "kinds", "force"}
    status: str  # queued, training, evaluating, done, failed, cancelled, interrupted
    progress: dict
    created_at: str
    updated_at: str
    error: str | None
    run_id: str | None = None  # eval: the run it answers, a content hash of its inputs (as `ragft eval` names it)


class QueueFull(RuntimeError):
    """Too many jobs wait already; the API answers 429 with Retry-After."""


class JobNotFound(KeyError):
    def __str__(self) -> str:
        return f"no job '{self.args[0]}'; GET /v1/runs and GET /v1/adapters list the known ones"


class JobStore:
    """A thread-safe handle on the jobs table (one connection, serialised writes)."""

    def __init__(self, path: Path):
        self._conn = connect(path, SCHEMA)
        self._lock = threading.Lock()
        columns = {row[1] for row in self._conn.execute("PRAGMA table_info(jobs)")}
        if "run_id" not in columns:  # a jobs table written before runs were named by their inputs over HTTP too
            self._conn.execute("ALTER TABLE jobs ADD COLUMN run_id TEXT")

    def close(self) -> None:
        self._conn.close()

    def add_job(self, job_id: str, kind: str, request: dict, max_queued: int | None = None) -> tuple[JobRecord, bool]:
        """Queue a job and return (it, True), or (the job with the same request still waiting or running, False);
        QueueFull when `max_queued` jobs wait already. The checks and the insert are one write transaction, so
        concurrent submissions (threads, or another process on the same database) cannot pass `max_queued`."""
        with transaction(self._conn, self._lock):
            same = self.same_request(kind, request)
            if same is not None:
                return same, False
            waiting = self._conn.execute("SELECT COUNT(*) FROM jobs WHERE status='queued'").fetchone()[0]
            if max_queued is not None and waiting >= max_queued:
                raise QueueFull(
                    f"{waiting} jobs are already queued (api.max_queued_jobs={max_queued}); retry when one has "
                    "finished, or cancel one with DELETE /v1/runs/<id>"
                )
            stamp = now()
            self._conn.execute(
                "INSERT INTO jobs (id, kind, request, status, created_at, updated_at) VALUES (?,?,?,?,?,?)",
                (job_id, kind, json.dumps(request, sort_keys=True, default=str), "queued", stamp, stamp),
            )
        return self.job(job_id), True

    def job(self, job_id: str) -> JobRecord:
        row = self._conn.execute(f"SELECT {COLUMNS} FROM jobs WHERE id=?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFound(job_id)
        return JobRecord(row[0], row[1], json.loads(row[2]), row[3], json.loads(row[4]), *row[5:])

    def job_for(self, key: str) -> JobRecord:
        """The job with id `key`, else the latest job that answered run `key` (a run id links to its job)."""
        row = self._conn.execute(
            "SELECT id FROM jobs WHERE id=? OR run_id=? ORDER BY id=? DESC, rowid DESC LIMIT 1", (key, key, key)
        ).fetchone()
        if row is None:
            raise JobNotFound(key)
        return self.job(row[0])

    def set_run_id(self, job_id: str, run_id: str) -> None:
        """Record which run a job answers, once its inputs (index, adapters) are known."""
        with self._lock:
            self._conn.execute("UPDATE jobs SET run_id=?, updated_at=? WHERE id=?", (run_id, now(), job_id))

    def jobs(self, kind: str | None = None) -> list[JobRecord]:
        query = "SELECT id FROM jobs" + (" WHERE kind=?" if kind else "") + " ORDER BY rowid"
        return [self.job(r[0]) for r in self._conn.execute(query, (kind,) if kind else ())]

    def same_request(self, kind: str, request: dict) -> JobRecord | None:
        """The job of `kind` with exactly this request that is still waiting or running: a repeated submission
        returns it instead of queueing the same work again. Finished jobs do not count (the corpus may have
        changed since)."""
        active = ",".join("?" * len(JOB_ACTIVE))
        row = self._conn.execute(
            f"SELECT id FROM jobs WHERE kind=? AND request=? AND status IN ({active}) ORDER BY rowid LIMIT 1",
            (kind, json.dumps(request, sort_keys=True, default=str), *JOB_ACTIVE),
        ).fetchone()
        return None if row is None else self.job(row[0])

    def jobs_page(self, kind: str, limit: int, offset: int) -> tuple[list[JobRecord], int]:
        """One page of `kind`'s jobs, oldest first, and how many there are in all."""
        total = self._conn.execute("SELECT COUNT(*) FROM jobs WHERE kind=?", (kind,)).fetchone()[0]
        ids = self._conn.execute(
            "SELECT id FROM jobs WHERE kind=? ORDER BY rowid LIMIT ? OFFSET ?", (kind, limit, offset)
        ).fetchall()
        return [self.job(r[0]) for r in ids], total

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
                 error if error is not None else job.error, now(), job_id),
            )  # fmt: skip
