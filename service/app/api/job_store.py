"""Background jobs (eval runs, adapter training) as the service tracks them, in the results database.

The jobs table lives beside the runs (one SQLite file under the data directory, so a job and
the run it produced survive a restart together) but belongs to the service: the runner knows
nothing of jobs.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ragft.eval.store import connect, now, transaction

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
# Columns added after the first release, each with its type: a database written before them gains them at open.
ADDED_COLUMNS = {
    "run_id": "TEXT",
    "owner": "TEXT",  # the worker that claimed the job (`JobWorker.owner`); NULL while it waits
    "lease_until": "REAL",  # Unix time the claim lapses unless its worker renews it
    "attempts": "INTEGER NOT NULL DEFAULT 0",  # claims that ended without the worker recording an outcome
    "cancel_requested": "INTEGER NOT NULL DEFAULT 0",  # a DELETE reached the job while it ran
}
COLUMNS = (
    "id, kind, request, status, progress, created_at, updated_at, error, run_id, attempts, cancel_requested, owner"
)

JOB_ACTIVE = ("queued", "training", "evaluating")
JOB_STATUSES = (*JOB_ACTIVE, "done", "failed", "cancelled", "interrupted")
JOB_KINDS = ("eval", "train", "curve")
JOB_RUNNING = ("training", "evaluating")  # claimed by a worker


@dataclass(frozen=True)
class JobRecord:
    """A background job (an eval run or adapter training) as the service tracks it."""

    id: str
    kind: str  # "eval", "train" or "curve"
    request: dict  # eval: a RunSpec as JSON; train: {"corpus", "kinds", "force"}
    status: str  # queued, training, evaluating, done, failed, cancelled, interrupted
    progress: dict
    created_at: str
    updated_at: str
    error: str | None
    run_id: str | None = None  # eval: the run it answers, a content hash of its inputs (as `ragft eval` names it)
    attempts: int = 0  # times a worker claimed it and died before recording how it ended
    cancel_requested: bool = False  # DELETE arrived while it ran; it stops at its next batch or step
    owner: str | None = None  # the worker running it


def _record(row: tuple) -> JobRecord:
    """A row of `COLUMNS` as a JobRecord."""
    return JobRecord(row[0], row[1], json.loads(row[2]), row[3], json.loads(row[4]), *row[5:10], bool(row[10]), row[11])


class QueueFull(RuntimeError):
    """Too many jobs wait already; the API answers 429 with Retry-After."""


class JobNotFound(KeyError):
    def __str__(self) -> str:
        return f"no job '{self.args[0]}'; GET /v1/runs and GET /v1/adapters list the known ones"


class JobStore:
    """A thread-safe handle on the jobs table (one connection, serialised writes).

    Several servers may share one database (two `ragft serve` on one data folder): a job is claimed in one write
    transaction (`claim_next`: `UPDATE ... WHERE status='queued'`), so it runs once; the claim names its worker
    (`owner`) and lapses unless renewed (`lease_until`); only the owner writes a running job's progress and outcome.
    """

    def __init__(self, path: Path):
        self._conn = connect(path, SCHEMA)
        self._lock = threading.Lock()
        if set(ADDED_COLUMNS) <= {row[1] for row in self._conn.execute("PRAGMA table_info(jobs)")}:
            return  # the usual case: a read, no write lock
        with transaction(self._conn, self._lock) as conn:  # checked inside: another process may migrate too
            columns = {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
            for name, kind in ADDED_COLUMNS.items():
                if name not in columns:
                    conn.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")

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
        return _record(row)

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
        with transaction(self._conn, self._lock):
            self._conn.execute("UPDATE jobs SET run_id=?, updated_at=? WHERE id=?", (run_id, now(), job_id))

    def jobs(self, kind: str | None = None) -> list[JobRecord]:
        """Every job (of `kind`), oldest first, in one query."""
        query = f"SELECT {COLUMNS} FROM jobs" + (" WHERE kind=?" if kind else "") + " ORDER BY rowid"
        return [_record(row) for row in self._conn.execute(query, (kind,) if kind else ()).fetchall()]

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
        rows = self._conn.execute(
            f"SELECT {COLUMNS} FROM jobs WHERE kind=? ORDER BY rowid LIMIT ? OFFSET ?", (kind, limit, offset)
        ).fetchall()
        return [_record(row) for row in rows], total

    def job_counts(self) -> dict[tuple[str, str], int]:
        """Jobs per (kind, status)."""
        rows = self._conn.execute("SELECT kind, status, COUNT(*) FROM jobs GROUP BY kind, status").fetchall()
        return {(kind, status): n for kind, status, n in rows}

    def update_job(
        self, job_id: str, status: str | None = None, progress: dict | None = None, error: str | None = None
    ):
        """Change a job's status and merge `progress` into what it reported before."""
        with transaction(self._conn, self._lock):
            job = self.job(job_id)
            self._conn.execute(
                "UPDATE jobs SET status=?, progress=?, error=?, updated_at=? WHERE id=?",
                (status or job.status, json.dumps(job.progress | (progress or {})),
                 error if error is not None else job.error, now(), job_id),
            )  # fmt: skip

    # --- claims: a job runs once, however many servers share the database --------------------------------------

    def claim_next(self, owner: str, lease_s: float) -> JobRecord | None:
        """Claim the oldest queued job for `owner` (its status becomes 'training' until its first progress says
        otherwise: every kind first loads models, indexes or trains; its attempts go up by one), or None when none
        waits. The check and the claim are one write transaction: of two workers, one
        gets the job and the other the next one."""
        if self._conn.execute("SELECT 1 FROM jobs WHERE status='queued' LIMIT 1").fetchone() is None:
            return None  # an idle worker asks every few seconds: no write lock for a look
        with transaction(self._conn, self._lock) as conn:
            row = conn.execute("SELECT id FROM jobs WHERE status='queued' ORDER BY rowid LIMIT 1").fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE jobs SET status=?, owner=?, lease_until=?, attempts=attempts+1, updated_at=? "
                "WHERE id=? AND status='queued'",
                ("training", owner, time.time() + lease_s, now(), row[0]),
            )
        return self.job(row[0])

    def renew(self, job_id: str, owner: str, lease_s: float) -> bool:
        """Extend `owner`'s claim on a running job; False when the job is no longer its own."""
        with transaction(self._conn, self._lock) as conn:
            changed = conn.execute(
                "UPDATE jobs SET lease_until=? WHERE id=? AND owner=?", (time.time() + lease_s, job_id, owner)
            ).rowcount
        return changed == 1

    def report(self, job_id: str, owner: str, status: str, progress: dict) -> None:
        """A running job's status and progress, written by the worker that owns it (no one else's claim)."""
        with transaction(self._conn, self._lock) as conn:
            row = conn.execute("SELECT progress FROM jobs WHERE id=? AND owner=?", (job_id, owner)).fetchone()
            if row is not None:
                conn.execute(
                    "UPDATE jobs SET status=?, progress=?, updated_at=? WHERE id=? AND owner=?",
                    (status, json.dumps(json.loads(row[0]) | progress), now(), job_id, owner),
                )

    def finish(self, job_id: str, owner: str, status: str, error: str | None = None) -> None:
        """Record how `owner`'s job ended and release the claim. A job interrupted by a graceful stop gives its
        attempt back (it did not crash) and waits for the next start. A DELETE that reached the job before it ended
        makes it cancelled, whichever came first after it (the shutdown, or the last answer: what was stored
        stays), so a DELETE answered with an unfinished job always ends in 'cancelled'."""
        with transaction(self._conn, self._lock) as conn:
            conn.execute(
                "UPDATE jobs SET status=CASE WHEN cancel_requested AND ? IN ('interrupted', 'done') THEN 'cancelled' "
                "ELSE ? END, error=COALESCE(?, error), owner=NULL, lease_until=NULL, updated_at=?, "
                "attempts=attempts - (?='interrupted') WHERE id=? AND owner=?",
                (status, status, error, now(), status, job_id, owner),
            )

    def request_cancel(self, job_id: str) -> JobRecord:
        """Cancel a job: a queued one at once (no worker can claim it any more), a running one at its next batch or
        step (`cancel_requested`, which its worker reads, in this process or another). A finished job is left."""
        with transaction(self._conn, self._lock) as conn:
            conn.execute("UPDATE jobs SET status='cancelled', updated_at=? WHERE id=? AND status='queued'",
                         (now(), job_id))  # fmt: skip
            running = ",".join("?" * len(JOB_RUNNING))
            conn.execute(
                f"UPDATE jobs SET cancel_requested=1, updated_at=? WHERE id=? AND status IN ({running}, 'interrupted')",
                (now(), job_id, *JOB_RUNNING),
            )
        return self.job(job_id)

    def cancel_requested(self, job_id: str) -> bool:
        row = self._conn.execute("SELECT cancel_requested FROM jobs WHERE id=?", (job_id,)).fetchone()
        return bool(row and row[0])

    def recover(self, owner: str, lapsed_before: float, max_attempts: int) -> list[tuple[str, str]]:
        """Take back the jobs no live worker runs: interrupted ones, and running ones whose claim lapsed before
        `lapsed_before` (Unix time) and is not `owner`'s. Each is queued again to resume, cancelled if a DELETE
        reached it, or failed once `max_attempts` claims of it ended with its process (a crash loop: out of
        memory, a kill). Returns (job id, new status) for each."""
        running = ",".join("?" * len(JOB_RUNNING))
        orphans = (
            f"SELECT id, attempts, cancel_requested, progress FROM jobs WHERE status='interrupted' OR "
            f"(status IN ({running}) AND (owner IS NULL OR owner!=?) AND COALESCE(lease_until, 0) < ?)"
        )
        if not self._conn.execute(orphans, (*JOB_RUNNING, owner, lapsed_before)).fetchall():
            return []  # the usual answer, without taking the write lock
        with transaction(self._conn, self._lock) as conn:
            rows = conn.execute(orphans, (*JOB_RUNNING, owner, lapsed_before)).fetchall()
            changed = []
            for job_id, attempts, cancel, progress in rows:
                error = None
                if cancel:
                    status = "cancelled"
                elif attempts >= max_attempts:
                    status = "failed"
                    error = (f"the server running this job stopped before it ended {attempts} times (killed, out of "
                             f"memory?); it is not started again. Check the server log and its memory, then submit "
                             f"the request again")  # fmt: skip
                else:
                    status = "queued"
                conn.execute(
                    "UPDATE jobs SET status=?, error=COALESCE(?, error), owner=NULL, lease_until=NULL, progress=?, "
                    "updated_at=? WHERE id=?",
                    (status, error, json.dumps(json.loads(progress) | {"resumed": True}), now(), job_id),
                )
                changed.append((job_id, status))
        return changed
