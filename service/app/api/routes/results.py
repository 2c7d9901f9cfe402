"""Stored runs read back for people: the runs with live progress, a run's verdicts and charts, its rows with every
arm's answer, two runs compared row by row, and reviewers' marks. The web UI (`service/app/ui`) reads only these
routes and /v1/query.

A run is scored once per change (its answers, status, task files) and kept in a cache bounded in bytes, so paging
through rows costs no rescoring: scoring a demo run (1,696 answers) takes seconds of CPU. One request scores a run
at a time (others wait for it), a running run is rescored at most every api.rescore_running_s, and each key may
ask for scored runs api.scoring_reads_per_minute times a minute, so no key can fill the worker threads with
scorings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import sys
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import asdict
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field
from pyrate_limiter import Duration, Rate, RateItem, StateBucket
from ragft.eval.reporting.answers import (
    ArmAnswer,
    OutcomeChange,
    RowFilter,
    RowView,
    ScoredRun,
    filter_rows,
    highlight,
    outcome_changes,
    row_views,
    score_run,
)
from ragft.eval.reporting.comparison import headline_changes
from ragft.eval.reporting.report import REPORT_FILES, charts, review_line, verdict_rows
from ragft.eval.reporting.review import (
    MAX_REVIEWER_CHARS,
    Review,
    Reviews,
    publish_reviewed,
    review_summary,
    reviewed_dir,
)
from ragft.eval.running.progress import planned_answers
from ragft.eval.spec import register_external_arms
from ragft.eval.store import RunNotFound, RunRecord, Store
from ragft.service.app.api.deps import SettingsDep, errors, hide_paths
from ragft.service.app.api.job_store import JOB_ACTIVE, JobRecord
from ragft.service.arms import ARMS
from ragft.service.settings import Settings

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["results"], responses=errors(404, 409))
RunId = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$", description="A stored run's id.")]
Name = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9][A-Za-z0-9_@.-]{0,127}$")]


RUNNING = ("queued", "evaluating")  # a run's statuses while answers may still be added


def footprint(obj: object) -> int:
    """Approximate bytes `obj` holds: sys.getsizeof over everything reachable through containers, dataclasses and
    pydantic models, each object once (a scored demo run: ~4 MB; tracemalloc counts ~1.4x this)."""
    seen, total, stack = set(), 0, [obj]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        total += sys.getsizeof(item)
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)
        elif dataclasses.is_dataclass(item) and not isinstance(item, type):
            stack.extend(getattr(item, f.name) for f in dataclasses.fields(item))
        elif isinstance(item, BaseModel):
            stack.append(item.__dict__)
    return total


@dataclasses.dataclass(frozen=True)
class _Kept:
    key: tuple  # what changes the scores: status, answers stored, the task files
    scored: ScoredRun
    views: list[RowView]
    nbytes: int
    at: float  # time.monotonic() of the scoring


class ScoredRuns:
    """The runs scored lately, kept while they take at most `max_bytes` (`footprint`; the least recently read leaves
    first), each keyed by what changes its scores, so a finished run is scored once and paging through its rows costs
    nothing. A run is scored by one request at a time: requests for it meanwhile wait for that scoring and share it.
    A running run is rescored at most every `rescore_s` seconds however often it is read (every filter keystroke in
    the row browser asks again).

    Example:
        >>> # runs = ScoredRuns(max_bytes=64 * 2**20, rescore_s=10.0)
        >>> # scored, views = runs.get(settings, "quillmark-1a2b3c4d5e")
    """

    def __init__(self, max_bytes: int, rescore_s: float):
        self.max_bytes, self.rescore_s = max_bytes, rescore_s
        self.scorings = 0  # runs scored since start (tests, the soak)
        self._kept: OrderedDict[str, _Kept] = OrderedDict()
        self._scoring: dict[str, Future] = {}  # run id -> the scoring in progress
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(k.nbytes for k in self._kept.values())

    def get(self, settings: Settings, run_id: str) -> tuple[ScoredRun, list[RowView]]:
        """The run scored (RunNotFound when there is none): kept, shared with a scoring in progress, or scored now."""
        store = Store(settings.database)
        try:
            run = store.run(run_id)
            key = (run.status, store.count(run_id), _tasks_stamp(run))
        finally:
            store.close()
        register_external_arms(run.config)  # in this request's context only, scored here or not (`ArmTable`)
        with self._lock:
            kept = self._kept.get(run_id)
            if kept is not None and (kept.key == key or self._fresh_enough(kept, run.status)):
                self._kept.move_to_end(run_id)
                return kept.scored, kept.views
            scoring = self._scoring.get(run_id)
            if scoring is None:
                scoring = self._scoring[run_id] = Future()
                mine = True
            else:
                mine = False
        if not mine:
            return scoring.result()
        try:
            result = self._score(settings, run_id, key)
        except BaseException as exc:
            scoring.set_exception(exc)
            raise
        finally:
            with self._lock:
                self._scoring.pop(run_id, None)
        scoring.set_result(result)
        return result

    def _fresh_enough(self, kept: _Kept, status: str) -> bool:
        """A running run scored less than rescore_s ago is served as it was (a status change rescores at once)."""
        return status in RUNNING and kept.key[0] == status and time.monotonic() - kept.at < self.rescore_s

    def _score(self, settings: Settings, run_id: str, key: tuple) -> tuple[ScoredRun, list[RowView]]:
        store = Store(settings.database)
        try:
            scored = score_run(store, run_id, settings)
        finally:
            store.close()
        views = row_views(scored)
        nbytes = footprint((scored, views))
        with self._lock:
            self.scorings += 1
            self._kept.pop(run_id, None)
            if nbytes <= self.max_bytes:
                self._kept[run_id] = _Kept(key, scored, views, nbytes, time.monotonic())
            else:
                log.warning("run %s scored to ~%.0f MB, over api.scored_runs_mb (%.0f MB): not kept", run_id,
                            nbytes / 2**20, self.max_bytes / 2**20)  # fmt: skip
            while sum(k.nbytes for k in self._kept.values()) > self.max_bytes:
                self._kept.popitem(last=False)
        return scored, views


def _tasks_stamp(run: RunRecord) -> tuple:
    """The task files' names, sizes and modification times: a change rescores a kept run (`ScoredRun.tasks_note`)."""
    folder = Path(run.config.get("spec", {}).get("corpus", "")) / "tasks"
    try:
        return tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.glob("*.jsonl")))
    except OSError:  # a file renamed away between listing and stat: the next read sees the new state
        return ("changing",)


def _scored(request: Request, run_id: str) -> tuple[ScoredRun, list[RowView]]:
    try:
        return _scored_runs(request.app.state).get(request.app.state.settings, run_id)
    except RunNotFound as exc:
        raise HTTPException(404, str(exc)) from exc


_STATE_LOCK = threading.Lock()  # creates each app's cache and limiter once


def _scored_runs(state) -> ScoredRuns:
    with _STATE_LOCK:
        if not hasattr(state, "scored_runs"):
            api = state.settings.api
            state.scored_runs = ScoredRuns(int(api.scored_runs_mb * 2**20), api.rescore_running_s)
        return state.scored_runs


class ReadLimits:
    """api.scoring_reads_per_minute per key, as pyrate-limiter's GCRA (a burst of that many, then one every 60/N s;
    a few numbers per key, however many requests)."""

    def __init__(self, per_minute: int):
        self.per_minute = per_minute
        self._buckets: dict[str, StateBucket] = {}
        self._lock = threading.Lock()

    def wait_s(self, who: str) -> float:
        """0 when `who` may go on (the request is counted), else the seconds until it may."""
        with self._lock:
            bucket = self._buckets.get(who)
            if bucket is None:
                bucket = self._buckets[who] = StateBucket([Rate(self.per_minute, Duration.MINUTE)])
            item = RateItem(who, bucket.now())
            return 0.0 if bucket.put(item) else max(bucket.waiting(item), 1) / 1000


def _read_limits(state) -> ReadLimits:
    with _STATE_LOCK:
        if not hasattr(state, "read_limits"):
            state.read_limits = ReadLimits(state.settings.api.scoring_reads_per_minute)
        return state.read_limits


async def limit_scoring_reads(request: Request, settings: SettingsDep) -> None:
    """429 with Retry-After past api.scoring_reads_per_minute for the request's key (async: no worker thread)."""
    given = request.headers.get("authorization", "")
    who = hashlib.sha256(given.encode()).hexdigest() if settings.api.keyed else "no key"
    wait_s = _read_limits(request.app.state).wait_s(who)
    if wait_s:
        raise HTTPException(
            429, f"this key asked for scored runs more than {settings.api.scoring_reads_per_minute} times in a minute "
            f"(api.scoring_reads_per_minute): retry in {math.ceil(wait_s)} s. Filter and page the rows of one run "
            "(/rows?family=...&limit=...) rather than asking again; an API client should wait for Retry-After.",
            headers={"Retry-After": str(math.ceil(wait_s))},
        )  # fmt: skip


ScoringRead = Depends(limit_scoring_reads)


def _reviews(settings: Settings, run_id: str) -> dict[tuple[str, str], Review]:
    db = Reviews(settings.database)
    try:
        return db.for_run(run_id)
    finally:
        db.close()


def _report_files(settings: Settings, run_id: str) -> dict[str, bool]:
    folder = Path(settings.eval.reports_dir) / run_id
    reviewed = reviewed_dir(settings) / run_id
    return {name: (folder / name).is_file() for name in REPORT_FILES} | {
        f"reviewed/{name}": (reviewed / name).is_file() for name in REPORT_FILES
    }


def _run_out(run: RunRecord, answers: int, job: JobRecord | None, settings: Settings, request: Request) -> dict:
    spec = run.config.get("spec", {})
    register_external_arms(run.config)  # known to this request only
    arms = [a for a in spec.get("arms", []) if a in ARMS]
    planned = planned_answers(run.meta.get("rows", {}), arms, settings.eval.training_seeds) if arms else {}
    return {"id": run.id, "corpus": run.corpus, "status": job.status if job and job.status in JOB_ACTIVE else run.status,
            "created_at": run.created_at, "updated_at": run.updated_at, "arms": spec.get("arms", []),
            "families": spec.get("families", []), "answers": answers, "planned_answers": sum(planned.values()),
            "error": _shown(run.error, request), "job": _job_out(job, request) if job else None,
            "reports": _report_files(settings, run.id)}  # fmt: skip


def _job_out(job: JobRecord, request: Request) -> dict:
    return {"id": job.id, "status": job.status, "progress": job.progress, "error": _shown(job.error, request)}


def _shown(error: str | None, request: Request) -> str | None:
    """An error as a client sees it: without this server's folders (`hide_paths`)."""
    return hide_paths(error, request) if error else error


@router.get("/results")
def list_results(request: Request, settings: SettingsDep) -> list[dict]:
    """Every stored run, newest first, with its eval job's live progress (stage, done/total, eta_s weighted by each
    arm's measured cost per answer); jobs still indexing or training, with no run yet, come first."""
    jobs = request.app.state.jobs.store.jobs("eval")
    by_run = {j.run_id: j for j in jobs if j.run_id}  # the latest job per run (rowid order)
    store = Store(settings.database)
    try:
        page = list(reversed(store.runs()))[: settings.api.max_page_size]  # counted and checked: this page only
        counts = store.counts([r.id for r in page])  # one query, not one per run: every open tab asks every 3 s
        runs = [_run_out(r, counts[r.id], by_run.get(r.id), settings, request) for r in page]
    finally:
        store.close()
    waiting = [{"id": j.id, "corpus": Path(j.request.get("corpus", "")).name, "status": j.status,
                "created_at": j.created_at, "updated_at": j.updated_at, "arms": j.request.get("arms", []),
                "families": j.request.get("families", []), "answers": 0, "planned_answers": None,
                "error": _shown(j.error, request), "job": _job_out(j, request), "reports": {}}
               for j in reversed(jobs) if not j.run_id and j.status in JOB_ACTIVE]  # fmt: skip
    return waiting + runs[: settings.api.max_page_size]


def _results_json(settings: Settings, run_id: str) -> dict | None:
    path = Path(settings.eval.reports_dir) / run_id / "results.json"
    return json.loads(path.read_text()) if path.is_file() else None


_charts_cache: dict[tuple[str, float], dict[str, str]] = {}
_charts_lock = threading.Lock()  # another request cleared the cache between a store and a read: a KeyError, a 500


@router.get("/results/{run_id}", dependencies=[ScoringRead], responses=errors(429))
def get_result(run_id: RunId, request: Request, settings: SettingsDep) -> dict:
    """A stored run: its verdict table and charts (from its published results.json; none until the run is done),
    the families, arms and row counts the row browser filters on, and its reviews."""
    scored, views = _scored(request, run_id)
    results = _results_json(settings, run_id)
    out = {"run": _run_out(scored.run, len(scored.predictions), None, settings, request), "verdicts": [], "charts": {},
           "how_to_read": None, "families": sorted({f for v in views for f in v.families}, key=_family_order),
           "arms": [{"name": a, "label": _label(a)} for a in scored.arms], "rows": len(views),
           "tasks_note": scored.tasks_note}  # fmt: skip
    if results is not None:
        out["verdicts"] = verdict_rows(results)
        key = (run_id, (Path(settings.eval.reports_dir) / run_id / "results.json").stat().st_mtime)
        with _charts_lock:  # one drawing per run at a time, read and kept under the lock
            drawn = _charts_cache.get(key)
            if drawn is None:
                drawn = charts(results)
                _charts_cache.clear()  # one run's charts at a time: a few hundred KB of PNG
                _charts_cache[key] = drawn
        out["charts"] = drawn
    out["review"] = _review_out(_reviews(settings, run_id))
    return out


def _review_out(reviews: dict[tuple[str, str], Review]) -> dict | None:
    summary = review_summary(reviews)
    return summary | {"line": review_line(summary)} if reviews else None


@router.get("/results/{run_id}/reviews")
def get_reviews(run_id: RunId, settings: SettingsDep) -> dict:
    """The run's reviews: how many answers on how many rows were marked, by whom (null: none), and each mark."""
    reviews = _reviews(settings, run_id)
    marks = [{"arm": r.arm, "row_id": r.row_id, "correct": r.correct, "reviewer": r.reviewer,
              "created_at": r.created_at} for r in reviews.values()]  # fmt: skip
    return {"summary": _review_out(reviews), "marks": marks}


def _family_order(name: str) -> int:
    from ragft.eval.scoring.metrics import report_families

    order = report_families()
    return order.index(name) if name in order else len(order)


def _label(arm: str) -> str:
    from ragft.eval.spec import replicated_arm

    base = ARMS.get(replicated_arm(arm))
    return (base.label + arm[len(replicated_arm(arm)) :]) if base else arm


def _answer_out(a: ArmAnswer, review: Review | None, accepted: tuple[str, ...] | None) -> dict:
    out = {"arm": a.arm, "label": _label(a.arm), "text": a.text, "outcome": a.outcome, "headline": a.headline,
           "abstained": a.abstained, "retrieve": a.retrieve, "cost_ms": a.cost_ms,
           "review": None if review is None else {"correct": review.correct, "reviewer": review.reviewer,
                                                  "created_at": review.created_at}}  # fmt: skip
    if accepted is not None:  # the full row: scores and passages, accepted answers marked
        out["scores"] = a.scores
        out["passages"] = [{"doc_id": p.doc_id, "page": p.page, "chunk_id": p.chunk_id, "pieces": highlight(p.text, accepted)}
                           for p in a.passages]  # fmt: skip
    return out


def _row_out(v: RowView, reviews: dict, full: bool = False) -> dict:
    return {"id": v.id, "family": v.family, "kind": v.kind, "families": list(v.families), "input": v.input,
            "expected": v.expected, "accepted": list(v.accepted), "disagree": v.disagree, "all_wrong": v.all_wrong,
            "answers": [_answer_out(a, reviews.get((a.arm, v.id)), v.accepted if full else None)
                        for a in v.answers.values()]}  # fmt: skip


@router.get("/results/{run_id}/rows", dependencies=[ScoringRead], responses=errors(429))
def list_rows(
    run_id: RunId,
    request: Request,
    response: Response,
    settings: SettingsDep,
    family: Annotated[str | None, Query(max_length=64, description="A report family that scores the row.")] = None,
    arm: Annotated[str | None, Query(max_length=128, description="Show this arm's answers only.")] = None,
    disagree: Annotated[bool, Query(description="Rows whose arms' marks differ.")] = False,
    wrong: Annotated[str | None, Query(max_length=128, description="Rows this arm got wrong.")] = None,
    all_wrong: Annotated[bool, Query(description="Rows every arm got wrong.")] = False,
    abstained: Annotated[bool, Query(description="Rows where a shown arm abstained.")] = False,
    q: Annotated[str | None, Query(max_length=200, description="Text in the row id, input or answers.")] = None,
    limit: Annotated[int | None, Query(ge=1, description="Rows per page (at most api.max_page_size).")] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[dict]:
    """One page of the run's test rows with every (or one) arm's answer and mark, filtered; X-Total-Count gives
    how many rows the filters select. Passages and per-metric scores come with one row (`/rows/{row_id}`)."""
    _, views = _scored(request, run_id)
    shown = filter_rows(views, RowFilter(family, arm, disagree, wrong, all_wrong, abstained, q))
    size = min(limit or settings.api.max_page_size, settings.api.max_page_size)
    response.headers["X-Total-Count"] = str(len(shown))
    reviews = _reviews(settings, run_id)
    return [_row_out(v, reviews) for v in shown[offset : offset + size]]


@router.get("/results/{run_id}/rows/{row_id}", dependencies=[ScoringRead], responses=errors(429))
def get_row(run_id: RunId, row_id: Name, request: Request, settings: SettingsDep) -> dict:
    """One test row: input, expected answer or schema, every arm's answer with its per-metric scores and mark,
    and the retrieving arms' passages cut into pieces where an accepted answer occurs (`[text, is_match]`)."""
    _, views = _scored(request, run_id)
    for v in views:
        if v.id == row_id:
            return _row_out(v, _reviews(settings, run_id), full=True)
    raise HTTPException(404, f"run {run_id} has no scored row '{row_id}'")


@router.get("/results/{run_id}/files/{name:path}", response_class=FileResponse)
def result_file(run_id: RunId, name: str, settings: SettingsDep) -> FileResponse:
    """One of the run's report files (report.html, report.md, results.json), or the reviewed report's
    (reviewed/report.html, ...)."""
    reviewed, _, file = name.rpartition("/")
    if file not in REPORT_FILES or reviewed not in ("", "reviewed"):
        raise HTTPException(404, f"no report file '{name}': report.html, report.md, results.json, or reviewed/...")
    folder = reviewed_dir(settings) if reviewed else Path(settings.eval.reports_dir)
    path = folder / run_id / file
    if not path.is_file():
        raise HTTPException(409, f"run {run_id} has no {name} yet (`ragft report {run_id}` writes it)")
    return FileResponse(path, media_type=REPORT_FILES[file])


class ReviewRequest(BaseModel):
    correct: bool = Field(description="The reviewer's mark: the answer is right (true) or wrong (false).")
    reviewer: str = Field(min_length=1, max_length=MAX_REVIEWER_CHARS, description="Who marks it, as shown.")


@router.put("/results/{run_id}/reviews/{arm}/{row_id}")
def put_review(run_id: RunId, arm: Name, row_id: Name, body: ReviewRequest, request: Request,
               settings: SettingsDep) -> dict:  # fmt: skip
    """Mark one arm's answer right or wrong (again: the new mark replaces the old). Stored apart from the measured
    scores: the run's results and report stay as measured; `POST .../reviewed-report` renders one with the marks."""
    _, views = _scored(request, run_id)
    if not any(v.id == row_id and arm in v.answers for v in views):
        raise HTTPException(404, f"run {run_id} has no scored answer of arm '{arm}' to row '{row_id}'")
    db = Reviews(settings.database)
    try:
        review = db.mark(run_id, arm, row_id, correct=body.correct, reviewer=body.reviewer)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc
    finally:
        db.close()
    return {"arm": review.arm, "row_id": review.row_id, "correct": review.correct, "reviewer": review.reviewer,
            "created_at": review.created_at}  # fmt: skip


@router.delete("/results/{run_id}/reviews/{arm}/{row_id}", status_code=204)
def delete_review(run_id: RunId, arm: Name, row_id: Name, settings: SettingsDep) -> Response:
    """Take a mark back."""
    db = Reviews(settings.database)
    try:
        db.clear(run_id, arm, row_id)
    finally:
        db.close()
    return Response(status_code=204)


def from_another_site(request: Request) -> bool:
    """Whether a browser sent this request from another site's page. A POST without a body is a 'simple' request
    that any page can make with no CORS preflight; on a server without keys nothing else would stop it."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site not in ("same-origin", "none")
    origin = request.headers.get("origin")
    return origin is not None and urlsplit(origin).netloc != request.headers.get("host")


_RENDERING = threading.Lock()  # guards the creation of each app's render lock


@router.post("/results/{run_id}/reviewed-report")
def render_reviewed(run_id: RunId, request: Request, settings: SettingsDep) -> dict:
    """Render the run's report with the reviewers' marks in place of the measured headline scores (under
    <reports_dir>/reviewed/<run-id>/); the measured report and results are untouched. One render at a time (409
    while one runs); refused (403) from another site's page."""
    if from_another_site(request):
        raise HTTPException(403, "a reviewed report is rendered from this server's own pages (/ui) or an API client, "
                                 "not from another site's page")  # fmt: skip
    _scored(request, run_id)  # 404 for an unknown run
    if not _reviews(settings, run_id):
        raise HTTPException(409, f"run {run_id} has no reviews yet: mark an answer first")
    with _RENDERING:
        if not hasattr(request.app.state, "rendering_reviewed"):
            request.app.state.rendering_reviewed = threading.Lock()
    busy = request.app.state.rendering_reviewed
    if not busy.acquire(blocking=False):
        raise HTTPException(409, "a reviewed report is being rendered; retry when it is done",
                            headers={"Retry-After": "10"})  # fmt: skip
    try:
        runtime = request.app.state.runtime
        results, _ = publish_reviewed(settings, run_id, embed=lambda texts: runtime.embedder().encode(texts).tolist())
    finally:
        busy.release()
    return {"review": results["review"] | {"line": review_line(results["review"])},
            "files": {n: f"/v1/results/{run_id}/files/reviewed/{n}" for n in REPORT_FILES}}  # fmt: skip


@router.get("/compare/{run_a}/{run_b}", dependencies=[ScoringRead], responses=errors(429))
def compare_results(run_a: RunId, run_b: RunId, request: Request, settings: SettingsDep) -> dict:
    """Run B against run A: per family and arm the headline change on the rows both scored, with its paired 95%
    interval and Holm-adjusted p-value (the report's tests), and per arm the rows that changed outcome (fixed:
    wrong in A, correct in B; broke: the other way) with both answers."""
    earlier, before = _scored(request, run_a)
    later, after = _scored(request, run_b)
    changes = headline_changes(earlier, later)
    rows = outcome_changes(before, after)
    return {
        "a": run_a,
        "b": run_b,
        "headline_changes": [
            asdict(c) | {"significant": c.significant, "regression": c.regression, "label": _label(c.arm)}
            for c in changes
        ],
        "regressions": sum(c.regression for c in changes),
        "changed_rows": {arm: _changed_out(arm, items, settings.api.max_page_size) for arm, items in rows.items()},
    }


def _changed_out(arm: str, items: list[OutcomeChange], size: int) -> dict:
    """One arm's rows that changed outcome (the first `size`, broken first), with both runs' answers."""
    shown = [{"id": c.row.id, "family": c.row.family, "change": c.change, "input": c.row.input,
              "expected": c.row.expected, "before": c.before.text, "after": c.after.text}
             for c in items[:size]]  # fmt: skip
    return {"label": _label(arm), "fixed": sum(c.change == "fixed" for c in items),
            "broke": sum(c.change == "broke" for c in items), "rows": shown}  # fmt: skip
