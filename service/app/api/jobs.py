"""Background jobs (eval runs, adapter training, curves), one at a time, their state in the results database.

One worker thread runs jobs in order with its own models, so queries keep their own and are
never blocked by a job's lock. Predictions are committed per batch, so stopping is cheap: at
shutdown the running job stops after its current batch and is marked `interrupted`; the next
worker to start queues it again and it resumes where it stopped. Nothing is lost across a restart.

Servers sharing a data folder share its jobs: each job is claimed in one SQLite transaction by one
worker, which renews its claim while the job runs, and only the server holding the folder's worker
lock runs jobs at all (the others queue jobs for it and take over when it stops). A job whose claim
ended with its process (killed, out of memory) is queued again, and failed after MAX_ATTEMPTS such
claims. A DELETE is stored in the database and read at the job's next batch or training step. A
failed status write is logged and retried; the worker thread goes on (`state`, in /readyz and /metrics).

An eval job answers the run its inputs name (`ragft.eval.running.runner.run_id_for`, as `ragft eval` does), so
an identical request made after an earlier one finished answers nothing again: it finds every
answer stored and re-renders the report. A request with `fresh` carries its own run id and reads nothing from the
answer cache. While a run goes on, each family's figures join the job's progress as soon as they are ready
(`progress.figures`, provisional then final, as `ragft eval` prints them).
"""

from __future__ import annotations

import contextvars
import fcntl
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from ragft.eval.curve_spec import CurveSpec
from ragft.eval.reporting.report import publish_run
from ragft.eval.running import pipeline
from ragft.eval.running.curve import run_curve
from ragft.eval.running.early_results import shown_figures
from ragft.eval.running.progress import answering_eta_s
from ragft.eval.running.runner import run_eval
from ragft.eval.spec import RunCancelled, RunSpec
from ragft.eval.store import Store
from ragft.service import engine_ct2
from ragft.service.app.api.job_store import JobRecord, JobStore
from ragft.service.finetune import TrainingCancelled
from ragft.service.kinds import parse_kind
from ragft.service.settings import Settings

log = logging.getLogger(__name__)


JOB_PREFIX = {"eval": "run", "train": "train", "curve": "curve"}  # job ids: run-..., train-..., curve-...
LEASE_S = 60.0  # a claim lapses a minute after its last renewal (every LEASE_S / 4), when its worker died
MAX_ATTEMPTS = 3  # claims of one job that may end with their process (OOM, kill) before it is failed
POLL_S = 2.0  # an idle worker looks for jobs another server queued, a standby one for the lock, this often


class WorkerLock:
    """One job worker per data folder: an exclusive flock on `<database>.worker.lock`, released by the OS when its
    process dies. The holder writes who it is into the file, so a second server can say which one runs the jobs."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self, holder: str) -> bool:
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder.encode(), 0)
        self._fd = fd
        return True

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "another process"
        except OSError:
            return "another process"

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the flock
            self._fd = None


class JobWorker:
    """Runs queued jobs one at a time in a thread of its own, if it holds the data folder's worker lock; a second
    server on the same folder queues jobs for the holder and takes over when it stops (`state` says which)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.store = JobStore(settings.database)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lock = WorkerLock(Path(settings.database).with_name(Path(settings.database).name + ".worker.lock"))
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._beat: threading.Thread | None = None
        self._unrecorded: dict[str, tuple[str, str | None]] = {}  # job -> outcome whose write failed, retried
        self.current: str | None = None
        self.errors = 0  # failed writes and loop errors the worker survived
        self.last_error: str | None = None
        self.beat_at = time.time()  # when the worker thread last went round its loop or the heartbeat renewed
        self.counts: dict[tuple[str, str], int] = {}  # jobs per (kind, status), refreshed by the heartbeat
        self.corpus_folder = Path  # a request's corpus (a name, as the API stores it) -> its folder; set by the app

    @property
    def state(self) -> str:
        """'running' (holds the lock and runs jobs), 'standby' (another server does), 'stopped' (never started or
        shut down) or 'dead' (its thread ended on its own: nothing queued will run)."""
        if self._thread is None:
            return "stopped"
        if not self._thread.is_alive():
            return "stopped" if self._stopping.is_set() else "dead"
        return "running" if self.lock.held else "standby"

    def start(self) -> None:
        """Start the worker thread (it takes the lock, then resumes what an earlier process left unfinished) and the
        heartbeat that renews the running job's claim."""
        if self.lock.acquire(self._holder()):
            self._recover(lapsed_before=float("inf"))  # the lock was free: no other worker is alive
        else:
            log.warning("another ragft server (%s) runs the jobs of %s: jobs queued here run there, one at a time; "
                        "this server takes over when it stops", self.lock.holder(), self.settings.database.parent)  # fmt: skip
        self._refresh_counts()
        self._thread = threading.Thread(target=self._loop, name="ragft-jobs", daemon=True)
        self._beat = threading.Thread(target=self._heartbeat, name="ragft-jobs-beat", daemon=True)
        self._thread.start()
        self._beat.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Graceful shutdown: the running job stops after its current batch (checkpointed) and resumes later."""
        self._stopping.set()
        self._wake.set()
        for thread in (self._thread, self._beat):
            if thread is not None:
                thread.join(timeout)
        self.lock.release()
        self.store.close()

    def submit(self, kind: str, request: dict) -> JobRecord:
        """Queue a job, or return the queued, running or finished job with the same request (deduplicated);
        QueueFull past `api.max_queued_jobs` waiting jobs."""
        job_id = f"{JOB_PREFIX.get(kind, kind)}-{uuid.uuid4().hex[:12]}"
        job, new = self.store.add_job(job_id, kind, request, self.settings.api.max_queued_jobs)  # one transaction
        if new:
            self._wake.set()
            self._refresh_counts()
        return job

    def cancel(self, job_id: str) -> JobRecord:
        """Cancel a job wherever it runs: stored in the database, which the running job reads at every batch."""
        job = self.store.request_cancel(job_id)
        self._refresh_counts()
        return job

    def _should_stop(self, job_id: str):
        return lambda: self._stopping.is_set() or self.store.cancel_requested(job_id)

    def _holder(self) -> str:
        return f"pid {os.getpid()} on {socket.gethostname()}"

    def _recover(self, lapsed_before: float) -> None:
        for job_id, status in self.store.recover(self.owner, lapsed_before, MAX_ATTEMPTS):
            log.warning("job %s was left unfinished by a stopped worker: %s", job_id, status,
                        extra={"job_id": job_id, "status": status})  # fmt: skip

    def _survive(self, what: str, exc: Exception) -> None:
        """Log an error the worker goes on after (a failed status write: disk full, database locked)."""
        self.errors += 1
        self.last_error = f"{what}: {type(exc).__name__}: {exc}"
        log.error("job worker: %s failed; going on", what, exc_info=exc)

    def _refresh_counts(self) -> None:
        try:
            self.counts = self.store.job_counts()
        except Exception as exc:
            self._survive("counting jobs", exc)

    def _heartbeat(self) -> None:
        """Renew the running job's claim and refresh the job counts /metrics shows (read there without SQLite)."""
        while not self._stopping.wait(LEASE_S / 4):
            job_id = self.current
            if job_id is not None:
                try:
                    self.store.renew(job_id, self.owner, LEASE_S)
                    self.beat_at = time.time()  # the job's thread is busy in it, not stuck in the loop
                except Exception as exc:
                    self._survive(f"renewing the claim on {job_id}", exc)
            self._refresh_counts()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self.beat_at = time.time()
            try:
                ran = self._step()
            except Exception as exc:  # e.g. the database unreadable for a moment: never let the thread die
                self._survive("looking for the next job", exc)
                ran = False
            if not ran:
                self._wake.wait(POLL_S)
                self._wake.clear()

    def _step(self) -> bool:
        """Do one thing: take the lock if free, retry an outcome that could not be written, or run the next job.
        False when there was nothing to do."""
        if not self.lock.held:
            if not self.lock.acquire(self._holder()):
                return False
            log.warning("this server now runs the jobs of %s", self.settings.database.parent)
            self._recover(lapsed_before=float("inf"))
        for job_id, (status, error) in list(self._unrecorded.items()):
            self.store.finish(job_id, self.owner, status, error)
            del self._unrecorded[job_id]
        self._recover(lapsed_before=time.time())  # claims another worker let lapse (a lock that did not hold)
        job = self.store.claim_next(self.owner, LEASE_S)
        if job is None:
            return False
        self._refresh_counts()
        self._work(job)
        self._refresh_counts()
        return True

    def _work(self, job: JobRecord) -> None:
        self.current = job.id
        started = time.perf_counter()
        log.info("job %s started", job.id, extra={"job_id": job.id, "kind": job.kind, "status": "started"})
        try:
            contextvars.copy_context().run(self._run, job)  # arms a run registers stay with this job
            status, error = "done", None
        except (RunCancelled, TrainingCancelled):
            # a stop at shutdown waits for the next start, unless a DELETE reached the job too (`JobStore.finish`)
            status, error = ("interrupted" if self._stopping.is_set() else "cancelled"), None
        except Exception as exc:  # the job failed; the service goes on
            log.exception("job %s failed", job.id, extra={"job_id": job.id, "kind": job.kind})
            status, error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            self.current = None
        try:
            self.store.finish(job.id, self.owner, status, error)
        except Exception as exc:  # disk full: the outcome is retried before the next job, the worker goes on
            self._unrecorded[job.id] = (status, error)
            self._survive(f"recording that job {job.id} is {status}", exc)
        log.info("job %s %s", job.id, status, extra={"job_id": job.id, "kind": job.kind, "status": status,
                                                     "duration_s": round(time.perf_counter() - started, 1)})  # fmt: skip

    def _progress(self, job_id: str, status: str, progress: dict) -> None:
        """Write a running job's progress; a failed write (disk full) is logged and the job goes on."""
        try:
            self.store.report(job_id, self.owner, status, progress)
        except Exception as exc:
            self._survive(f"writing the progress of {job_id}", exc)

    def _run(self, job: JobRecord) -> None:
        if job.kind == "train":
            request = job.request

            def report(p) -> None:
                self._progress(job.id, "training", {"stage": f"train {p.kind}", "done": p.step,
                                                    "total": p.max_steps, "loss": p.loss, "eta_s": round(p.eta_s)})  # fmt: skip

            runtime = pipeline.open_runtime(self.settings, self.corpus_folder(request["corpus"]))
            kinds = [parse_kind(k) for k in request["kinds"]]
            pipeline.train_artifacts(self.settings, runtime, kinds, force=request.get("force", False), progress=report,
                                     should_stop=self._should_stop(job.id))  # fmt: skip
            return

        if job.kind == "curve":
            self._run_curve(job)
            return

        request = dict(job.request)
        fresh = request.pop("fresh", False)  # read nothing from the answer cache (`ragft eval --fresh`)
        spec = RunSpec.model_validate(request)
        spec = spec.model_copy(update={"corpus": self.corpus_folder(str(spec.corpus))})
        named: dict[str, str] = {}
        figures: dict[str, dict] = {}  # each family's figures so far (`ragft.eval.running.early_results.shown_figures`)
        results = Store(self.settings.database)

        def progress(stage: str, done: int, total: int) -> None:
            status = "training" if stage.startswith(("train", "index")) else "evaluating"
            eta = None
            if status == "evaluating" and "run_id" in named:  # weighted by each arm's measured cost per answer
                eta = answering_eta_s(results, named["run_id"], spec.arms, self.settings.eval.training_seeds)
            self._progress(job.id, status, {"stage": stage, "done": done, "total": total,
                                            "eta_s": round(eta) if eta is not None else None})  # fmt: skip

        def family(event) -> None:
            figures[event.family] = shown_figures(event)  # a final entry replaces the provisional one
            self._progress(job.id, "evaluating", {"figures": figures})

        def name(run_id: str) -> None:
            named["run_id"] = run_id
            self.store.set_run_id(job.id, run_id)

        kept = engine_ct2.loaded_artifacts()  # what the server answered with before the job (its adapters) stays
        try:
            run_id = run_eval(self.settings, spec, progress=progress, should_stop=self._should_stop(job.id),
                              named=name, on_family=family, reuse=not fresh)  # fmt: skip
        finally:
            results.close()
            # conversions the run loaded (a sibling corpus's or another seed's adapters: ~514 MB each) would stay
            # until restart; a later call loads one again if it needs it, as curve points do (ragft.eval.running.curve)
            engine_ct2.release(engine_ct2.loaded_artifacts() - kept)
        if self.store.cancel_requested(job.id):  # a DELETE during the last batch: the answers stay, no report
            raise RunCancelled(f"run {run_id} was cancelled after its last answer; its report was not written")
        publish_run(self.settings, run_id)

    def _run_curve(self, job: JobRecord) -> None:
        """A crossover curve (`ragft.eval.running.curve`): its points are ordinary runs, so a resumed job reuses what they stored;
        the job's run_id is the curve id, whose report folder the report routes serve."""
        spec = CurveSpec.model_validate(job.request)
        spec = spec.model_copy(update={"corpus": self.corpus_folder(str(spec.corpus))})

        left = {"eta_s": None}  # the curve's own estimate, renewed after each point

        def progress(stage: str, done: int, total: int) -> None:
            status = "training" if stage.startswith(("train", "index")) else "evaluating"
            self._progress(job.id, status, {"stage": stage, "done": done, "total": total, **left})

        def eta(seconds: float | None) -> None:
            left["eta_s"] = round(seconds) if seconds is not None else None

        results, _ = run_curve(self.settings, spec, progress=progress, should_stop=self._should_stop(job.id),
                               on_eta=eta)  # fmt: skip
        self.store.set_run_id(job.id, results["curve_id"])
