"""Background jobs (eval runs, adapter training), one at a time, their state in the results database.

One worker thread runs jobs in order with its own models, so queries keep their own and are
never blocked by a job's lock. Predictions are committed per batch, so stopping is cheap: at
shutdown the running job stops after its current batch and is marked `interrupted`; at the
next start every queued, running or interrupted job is queued again and resumes where it
stopped. Nothing is lost across a restart.

An eval job answers the run its inputs name (`eval.runner.run_id_for`, as `ragft eval` does), so
an identical request made after an earlier one finished answers nothing again: it finds every
answer stored and re-renders the report. A request with `fresh` carries its own run id.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from pathlib import Path

from eval import pipeline
from eval.curve import CurveSpec, run_curve
from eval.families import FAMILIES
from eval.results import publish_run
from eval.runner import run_eval
from eval.spec import RunCancelled, RunSpec, replicate_name, replicated_arm
from eval.store import Store
from service.app.api.job_store import JOB_ACTIVE, JobRecord, JobStore
from service.arms import ARMS
from service.finetune import TrainingCancelled
from service.kinds import parse_kind
from service.settings import Settings

log = logging.getLogger(__name__)


def planned_answers(rows: dict[str, list[str]], arms: list[str], training_seeds: int) -> dict[str, int]:
    """Answers a run gives per stored arm: the chosen rows (`rows`: row family -> ids, as the run's meta records
    them) of every family that scores the arm, and again for each extra training seed of an adapter arm."""
    stored = [*arms, *(replicate_name(a, i) for i in range(1, training_seeds) for a in arms if ARMS[a].adapter)]
    return {name: sum(len(ids) for family, ids in rows.items()
                      if family in FAMILIES and FAMILIES[family].scores(ARMS[replicated_arm(name)]))
            for name in stored}  # fmt: skip


def eta_s(planned: dict[str, int], answered: dict[str, tuple[int, float]]) -> float | None:
    """Seconds left in a run's answering: each arm's remaining answers times its own measured cost per answer
    (`answered[arm]` = (answers, summed ms), from the stored predictions), not one flat rate: a rag answer reads a
    long prompt and can cost several base answers. An arm not started yet is priced like the started arms that
    retrieve as it does, else like the dearest started arm (rather late than early). None before any answer."""
    per_answer = {arm: total / n for arm, (n, total) in answered.items() if n}
    if not per_answer:
        return None
    left_ms = 0.0
    for arm, want in planned.items():
        remaining = want - answered.get(arm, (0, 0.0))[0]
        if remaining <= 0:
            continue
        cost = per_answer.get(arm)
        if cost is None:
            retrieves = ARMS[replicated_arm(arm)].retrieve
            alike = [c for a, c in per_answer.items() if ARMS[replicated_arm(a)].retrieve == retrieves]
            cost = sum(alike) / len(alike) if alike else max(per_answer.values())
        left_ms += remaining * cost
    return left_ms / 1000


def answering_eta_s(store: Store, run_id: str, arms: list[str], training_seeds: int) -> float | None:
    """Seconds left in run `run_id`'s answering, from what it has stored so far (`eta_s` of `planned_answers`)."""
    planned = planned_answers(store.run(run_id).meta.get("rows", {}), arms, training_seeds)
    return eta_s(planned, store.arm_costs(run_id))


JOB_PREFIX = {"eval": "run", "train": "train", "curve": "curve"}  # job ids: run-..., train-..., curve-...


class JobWorker:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.store = JobStore(settings.database)
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._cancelled: set[str] = set()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.current: str | None = None
        self.corpus_folder = Path  # a request's corpus (a name, as the API stores it) -> its folder; set by the app

    def start(self) -> None:
        """Queue again whatever an earlier process left unfinished, then start the worker thread."""
        for job in self.store.jobs():
            if job.status in (*JOB_ACTIVE, "interrupted"):
                self.store.update_job(job.id, "queued", progress=job.progress | {"resumed": True})
                self._queue.put(job.id)
        self._thread = threading.Thread(target=self._loop, name="ragft-jobs", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Graceful shutdown: the running job stops after its current batch (checkpointed) and resumes later."""
        self._stopping.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)
        self.store.close()

    def submit(self, kind: str, request: dict) -> JobRecord:
        """Queue a job, or return the queued, running or finished job with the same request (deduplicated);
        QueueFull past `api.max_queued_jobs` waiting jobs."""
        job_id = f"{JOB_PREFIX.get(kind, kind)}-{uuid.uuid4().hex[:12]}"
        job, new = self.store.add_job(job_id, kind, request, self.settings.api.max_queued_jobs)  # one transaction
        if new:
            self._queue.put(job_id)
        return job

    def cancel(self, job_id: str) -> JobRecord:
        job = self.store.job(job_id)
        if job.status == "queued":
            self.store.update_job(job_id, "cancelled")
        elif job.status in JOB_ACTIVE:
            self._cancelled.add(job_id)  # the job stops at its next batch or training step
        return self.store.job(job_id)

    def _should_stop(self, job_id: str):
        return lambda: job_id in self._cancelled or self._stopping.is_set()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            job_id = self._queue.get()
            if job_id is None:
                break
            job = self.store.job(job_id)
            if job.status != "queued":
                continue
            self.current = job_id
            started = time.perf_counter()
            log.info("job %s started", job_id, extra={"job_id": job_id, "kind": job.kind, "status": "started"})
            try:
                self._run(job)
                status, error = "done", None
            except (RunCancelled, TrainingCancelled):
                status, error = ("interrupted" if self._stopping.is_set() else "cancelled"), None
            except Exception as exc:  # the job failed; the service goes on
                log.exception("job %s failed", job_id, extra={"job_id": job_id, "kind": job.kind})
                status, error = "failed", f"{type(exc).__name__}: {exc}"
            finally:
                self.current = None
            self.store.update_job(job_id, status, error=error)
            log.info("job %s %s", job_id, status, extra={"job_id": job_id, "kind": job.kind, "status": status,
                                                         "duration_s": round(time.perf_counter() - started, 1)})  # fmt: skip

    def _run(self, job: JobRecord) -> None:
        if job.kind == "train":
            request = job.request
            self.store.update_job(job.id, "training")

            def report(p) -> None:
                self.store.update_job(job.id, progress={"stage": f"train {p.kind}", "done": p.step,
                                                        "total": p.max_steps, "loss": p.loss, "eta_s": round(p.eta_s)})  # fmt: skip

            runtime = pipeline.open_runtime(self.settings, self.corpus_folder(request["corpus"]))
            kinds = [parse_kind(k) for k in request["kinds"]]
            pipeline.train_artifacts(self.settings, runtime, kinds, force=request.get("force", False), progress=report,
                                     should_stop=self._should_stop(job.id))  # fmt: skip
            return

        if job.kind == "curve":
            self._run_curve(job)
            return

        spec = RunSpec.model_validate(job.request)
        spec = spec.model_copy(update={"corpus": self.corpus_folder(str(spec.corpus))})
        named: dict[str, str] = {}
        results = Store(self.settings.database)

        def progress(stage: str, done: int, total: int) -> None:
            status = "training" if stage.startswith(("train", "index")) else "evaluating"
            eta = None
            if status == "evaluating" and "run_id" in named:  # weighted by each arm's measured cost per answer
                eta = answering_eta_s(results, named["run_id"], spec.arms, self.settings.eval.training_seeds)
            self.store.update_job(job.id, status, progress={"stage": stage, "done": done, "total": total,
                                                            "eta_s": round(eta) if eta is not None else None})  # fmt: skip

        def name(run_id: str) -> None:
            named["run_id"] = run_id
            self.store.set_run_id(job.id, run_id)

        try:
            run_id = run_eval(self.settings, spec, progress=progress, should_stop=self._should_stop(job.id),
                              named=name)  # fmt: skip
        finally:
            results.close()
        publish_run(self.settings, run_id)

    def _run_curve(self, job: JobRecord) -> None:
        """A crossover curve (`eval.curve`): its points are ordinary runs, so a resumed job reuses what they stored;
        the job's run_id is the curve id, whose report folder the report routes serve."""
        spec = CurveSpec.model_validate(job.request)
        spec = spec.model_copy(update={"corpus": self.corpus_folder(str(spec.corpus))})

        left = {"eta_s": None}  # the curve's own estimate, renewed after each point

        def progress(stage: str, done: int, total: int) -> None:
            status = "training" if stage.startswith(("train", "index")) else "evaluating"
            self.store.update_job(job.id, status, progress={"stage": stage, "done": done, "total": total, **left})

        def eta(seconds: float | None) -> None:
            left["eta_s"] = round(seconds) if seconds is not None else None

        results, _ = run_curve(self.settings, spec, progress=progress, should_stop=self._should_stop(job.id),
                               on_eta=eta)  # fmt: skip
        self.store.set_run_id(job.id, results["curve_id"])
