"""Eval runs and adapter training as background jobs: start, list, watch, cancel, download reports."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field, WithJsonSchema, field_validator

from eval.metrics import report_families
from eval.store import JobRecord, RunNotFound
from service.api.deps import CORPUS_NAME, CorpusName, SettingsDep, arm_name, errors
from service.arms import ARMS, parse_arm
from service.settings import Settings

router = APIRouter(prefix="/v1", tags=["runs"], responses=errors(404, 409))
JobId = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$", description="A run or job id.")]
Family = Annotated[str, WithJsonSchema({"type": "string", "enum": report_families()})]
REPORT_FILES = {"": ("report.html", "text/html"), ".json": ("results.json", "application/json"),
                ".md": ("report.md", "text/markdown")}  # fmt: skip


def resolve_corpus(settings: Settings, name: str | None) -> Path:
    """The served corpus, or a sibling folder named `name`; never a path a request spells out."""
    if name is None:
        return Path(settings.corpus)
    if not CORPUS_NAME.match(name):
        raise HTTPException(422, f"corpus '{name}' is not a corpus name (letters, digits, '-' and '_')")
    folder = Path(settings.corpus).parent / name
    if not (folder / "tasks").is_dir():
        raise HTTPException(404, f"no corpus '{name}' with tasks/ next to {settings.corpus}")
    return folder


class RunRequest(BaseModel):
    corpus: CorpusName | None = Field(None, description="Corpus name (default: the served corpus).")
    arms: list[arm_name()] = Field(default_factory=lambda: list(ARMS), min_length=1)
    families: list[Family] | None = Field(None, description="Default: eval.families.")
    limit: int | None = Field(None, ge=1, le=100_000, description="Test rows per family.")
    seed: int | None = None

    @field_validator("arms")
    @classmethod
    def _known_arms(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(parse_arm(name).name for name in value))

    @field_validator("families")
    @classmethod
    def _known_families(cls, value: list[str] | None) -> list[str] | None:
        unknown = [f for f in value or [] if f not in report_families()]
        if unknown:
            raise ValueError(f"unknown families {unknown}; choose from {report_families()}")
        return value


class AdapterRequest(BaseModel):
    corpus: CorpusName | None = None
    arms: list[arm_name("lora", "rag_lora", "scratch")] = Field(default=["lora", "rag_lora", "scratch"], min_length=1)

    @field_validator("arms")
    @classmethod
    def _trainable(cls, value: list[str]) -> list[str]:
        arms = [parse_arm(name) for name in value]
        bad = [a.name for a in arms if a.adapter is None]
        if bad:
            raise ValueError(f"arms {bad} have nothing to train; choose lora, rag_lora or scratch")
        return list(dict.fromkeys(a.adapter for a in arms))


def _out(job: JobRecord) -> dict:
    return {"id": job.id, "kind": job.kind, "status": job.status, "progress": job.progress, "request": job.request,
            "created_at": job.created_at, "updated_at": job.updated_at, "error": job.error}  # fmt: skip


def _worker(request: Request):
    return request.app.state.jobs


@router.post("/runs", status_code=202)
def start_run(body: RunRequest, request: Request, settings: SettingsDep) -> dict:
    """Queue an eval run; returns at once with its id (also the run id of its report)."""
    corpus = resolve_corpus(settings, body.corpus)
    job = _worker(request).submit("eval", {
        "corpus": str(corpus), "arms": body.arms, "families": body.families or settings.eval.families,
        "limit": body.limit, "seed": body.seed if body.seed is not None else settings.generation.seed,
    })  # fmt: skip
    return _out(job)


@router.get("/runs")
def list_runs(request: Request) -> list[dict]:
    return [_out(j) for j in _worker(request).store.jobs("eval")]


def _job(request: Request, job_id: str) -> JobRecord:
    try:
        return _worker(request).store.job(job_id)
    except RunNotFound as exc:
        raise HTTPException(404, str(exc)) from exc


@router.get("/runs/{run_id}")
def get_run(run_id: JobId, request: Request) -> dict:
    return _out(_job(request, run_id))


@router.delete("/runs/{run_id}")
def cancel_run(run_id: JobId, request: Request) -> dict:
    """Cancel a queued or running job; what it stored is kept."""
    _job(request, run_id)
    return _out(_worker(request).cancel(run_id))


def _file(media: str) -> dict:
    return {200: {"content": {media: {}}, "description": "The report file."}}


def _report(run_id: str, suffix: str, request: Request, settings: Settings) -> FileResponse:
    job = _job(request, run_id)
    name, media = REPORT_FILES[suffix]
    path = Path(settings.eval.reports_dir) / run_id / name
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
def train_adapters(body: AdapterRequest, request: Request, settings: SettingsDep) -> dict:
    """Queue training of the artifacts the given arms need (reused when unchanged)."""
    corpus = resolve_corpus(settings, body.corpus)
    return _out(_worker(request).submit("train", {"corpus": str(corpus), "kinds": body.arms}))


@router.get("/adapters")
def list_adapter_jobs(request: Request) -> list[dict]:
    return [_out(j) for j in _worker(request).store.jobs("train")]


@router.get("/adapters/{job_id}")
def get_adapter_job(job_id: JobId, request: Request) -> dict:
    return _out(_job(request, job_id))
