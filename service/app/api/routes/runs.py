"""Eval runs and adapter training as background jobs: start, list, watch, cancel, download reports."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from eval.families import FamilyNames
from eval.spec import FamilyLimits, RunSpec, Seed
from service.app.api.deps import CORPUS_NAME, CorpusName, RuntimeDep, SettingsDep, errors, hide_paths
from service.app.api.job_store import JobNotFound, JobRecord, QueueFull
from service.arms import ARMS, ArmNames, TrainableArmNames, trainable
from service.settings import Settings

router = APIRouter(prefix="/v1", tags=["runs"], responses=errors(404, 409, 429))
JobId = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$", description="A job or run id.")]
REPORT_FILES = {"": ("report.html", "text/html"), ".json": ("results.json", "application/json"),
                ".md": ("report.md", "text/markdown")}  # fmt: skip


def corpus_folder(served: Path, name: str) -> Path:
    """The folder of a corpus a job request names: the served one or a sibling (a path stored by an older
    version is used as it is)."""
    if "/" in name or "\\" in name:
        return Path(name)
    return served if name == served.resolve().name else served.resolve().parent / name


def resolve_corpus(served: Path, name: str | None) -> Path:
    """The served corpus (by default or by its own name), or a sibling folder named `name` with tasks/; never a
    path a request spells out."""
    if name is None or name == served.resolve().name:
        return served
    if not CORPUS_NAME.match(name):
        raise HTTPException(422, f"corpus '{name}' is not a corpus name (letters, digits, '-' and '_')")
    folder = served.resolve().parent / name
    if not (folder / "tasks").is_dir():
        raise HTTPException(404, f"no corpus '{name}' with tasks/ next to the served corpus '{served.resolve().name}'")
    return folder


class RunRequest(BaseModel):
    corpus: CorpusName | None = Field(None, description="Corpus name (default: the served corpus).")
    arms: ArmNames | None = Field(None, min_length=1, description="Default: every arm.")
    families: FamilyNames | None = Field(None, min_length=1, description="Default: eval.families (else every family).")
    limit: int | None = Field(None, ge=1, le=100_000, description="Test rows per family (default: eval.limit).")
    family_limits: FamilyLimits | None = Field(
        None, description='Per row family, test rows in place of limit (null: every row), e.g. {"behaviour": null}.'
    )
    seed: Seed | None = Field(None, description="Default: generation.seed.")
    fresh: bool = Field(
        False,
        description="Answer every row again, under a new run id, reading nothing from the answer cache (as "
        "`ragft eval --fresh`). By default a run is named by its inputs, as `ragft eval` names it, so an identical "
        "run already answered is re-rendered, and any answer another run made for the same prompt, weights and "
        "decoding is reused.",
    )


class AdapterRequest(BaseModel):
    corpus: CorpusName | None = None
    arms: TrainableArmNames | None = Field(
        None, min_length=1, description="Arms whose artifacts to train (default: every arm with one)."
    )
    force: bool = Field(False, description="Train again even if an identical artifact is stored.")


def _out(job: JobRecord, request: Request) -> dict:
    """A job as the API shows it: its corpus by name and its error without this server's folders."""
    shown = job.request | ({"corpus": Path(job.request["corpus"]).name} if job.request.get("corpus") else {})
    error = hide_paths(job.error, request) if job.error else job.error
    return {"id": job.id, "kind": job.kind, "status": job.status, "progress": job.progress, "request": shown,
            "created_at": job.created_at, "updated_at": job.updated_at, "error": error,
            "run_id": job.run_id, "attempts": job.attempts, "cancel_requested": job.cancel_requested}  # fmt: skip


def _worker(request: Request):
    return request.app.state.jobs


def _submit(request: Request, kind: str, payload: dict) -> dict:
    try:
        return _out(_worker(request).submit(kind, payload), request)
    except QueueFull as exc:
        raise HTTPException(429, str(exc), headers={"Retry-After": "60"}) from exc


def _page(response: Response, request: Request, kind: str, limit: int | None, offset: int) -> list[dict]:
    settings = request.app.state.settings
    size = min(limit or settings.api.max_page_size, settings.api.max_page_size)
    jobs, total = _worker(request).store.jobs_page(kind, size, offset)
    response.headers["X-Total-Count"] = str(total)
    return [_out(j, request) for j in jobs]


PageLimit = Annotated[int | None, Query(ge=1, description="Jobs per page (at most api.max_page_size).")]
# SQLite's integers stop at 2**63 - 1 (an offset past it was a 500); no job table comes near a billion rows
PageOffset = Annotated[
    int, Query(ge=0, le=10**9, description="Jobs to skip, oldest first; X-Total-Count gives the total.")
]


@router.post("/runs", status_code=202)
def start_run(body: RunRequest, request: Request, settings: SettingsDep, runtime: RuntimeDep) -> dict:
    """Queue an eval run; returns at once with its job id. Its `run_id` (set once indexing and training are done)
    is a hash of its inputs, the same as `ragft eval` gives: an identical run answered before is re-rendered from
    its stored answers, and answers other runs made for the same prompts and weights come from the answer cache
    (`fresh` reads none). The same request while an identical one waits or runs returns that job. While it runs,
    `progress.figures` holds each family's figures as soon as they are ready: provisional (the arms that need no
    training; no verdict) before the adapters have answered, final (with the verdict) once every arm has."""
    corpus = resolve_corpus(runtime.corpus, body.corpus)
    run_id = f"{corpus.resolve().name}-fresh-{uuid.uuid4().hex[:10]}" if body.fresh else None
    spec = RunSpec.resolve(settings, Path(corpus.resolve().name), arms=body.arms, families=body.families,
                           limit=body.limit, family_limits=body.family_limits, seed=body.seed, run_id=run_id)  # fmt: skip
    payload = spec.model_dump(mode="json") | ({"fresh": True} if body.fresh else {})  # absent: older jobs match
    return _submit(request, "eval", payload)  # the corpus by name: the worker finds its folder


@router.get("/runs")
def list_runs(request: Request, response: Response, limit: PageLimit = None, offset: PageOffset = 0) -> list[dict]:
    """Eval jobs, oldest first, one page at a time."""
    return _page(response, request, "eval", limit, offset)


def _job(request: Request, job_id: str) -> JobRecord:
    try:
        return _worker(request).store.job_for(job_id)
    except JobNotFound as exc:
        raise HTTPException(404, str(exc)) from exc


@router.get("/runs/{run_id}")
def get_run(run_id: JobId, request: Request) -> dict:
    return _out(_job(request, run_id), request)


@router.delete("/runs/{run_id}")
def cancel_run(run_id: JobId, request: Request) -> dict:
    """Cancel a queued or running job; what it stored is kept."""
    return _out(_worker(request).cancel(_job(request, run_id).id), request)


def _file(media: str) -> dict:
    return {200: {"content": {media: {}}, "description": "The report file."}}


def _report(run_id: str, suffix: str, request: Request, settings: Settings) -> FileResponse:
    job = _job(request, run_id)
    name, media = REPORT_FILES[suffix]
    path = Path(settings.eval.reports_dir) / (job.run_id or job.id) / name
    if not path.is_file():
        raise HTTPException(409, f"run {run_id} is {job.status}; its report exists once it is done")
    return FileResponse(path, media_type=media)


@router.get("/runs/{run_id}/report", response_class=FileResponse, responses=_file("text/html"))
def run_report(run_id: JobId, request: Request, settings: SettingsDep) -> FileResponse:
    """The self-contained HTML report."""
    return _report(run_id, "", request, settings)


@router.get("/runs/{run_id}/report.json", response_class=FileResponse, responses=_file("application/json"))
def run_report_json(run_id: JobId, request: Request, settings: SettingsDep) -> FileResponse:
    return _report(run_id, ".json", request, settings)


@router.get("/runs/{run_id}/report.md", response_class=FileResponse, responses=_file("text/markdown"))
def run_report_md(run_id: JobId, request: Request, settings: SettingsDep) -> FileResponse:
    return _report(run_id, ".md", request, settings)


@router.post("/adapters", status_code=202)
def train_adapters(body: AdapterRequest, request: Request, runtime: RuntimeDep) -> dict:
    """Queue training of the artifacts the given arms need (reused when unchanged)."""
    corpus = resolve_corpus(runtime.corpus, body.corpus)
    kinds = list(dict.fromkeys(ARMS[name].adapter for name in body.arms or trainable()))
    return _submit(request, "train", {"corpus": corpus.resolve().name, "kinds": kinds, "force": body.force})


@router.get("/adapters")
def list_adapter_jobs(
    request: Request, response: Response, limit: PageLimit = None, offset: PageOffset = 0
) -> list[dict]:
    """Training jobs, oldest first, one page at a time."""
    return _page(response, request, "train", limit, offset)


@router.get("/adapters/{job_id}")
def get_adapter_job(job_id: JobId, request: Request) -> dict:
    return _out(_job(request, job_id), request)
