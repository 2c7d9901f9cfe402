"""Eval runs and adapter training as background jobs: start, list, watch, cancel, download reports."""

from __future__ import annotations

import uuid
from pathlib import Path

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field
from ragft.eval.families import FamilyNames
from ragft.eval.spec import FamilyLimits, RunSpec, Seed
from ragft.service.app.api.deps import CorpusName, RuntimeDep, SettingsDep, errors
from ragft.service.app.api.job_routes import (
    JobId,
    PageLimit,
    PageOffset,
    add_report_routes,
    find_job,
    job_out,
    page,
    resolve_corpus,
    submit,
    worker,
)
from ragft.service.arms import ARMS, ArmNames, TrainableArmNames, trainable

router = APIRouter(prefix="/v1", tags=["runs"], responses=errors(404, 409, 429))


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
    return submit(request, "eval", payload)  # the corpus by name: the worker finds its folder


@router.get("/runs")
def list_runs(request: Request, response: Response, limit: PageLimit = None, offset: PageOffset = 0) -> list[dict]:
    """Eval jobs, oldest first, one page at a time."""
    return page(response, request, "eval", limit, offset)


@router.get("/runs/{run_id}")
def get_run(run_id: JobId, request: Request) -> dict:
    return job_out(find_job(request, run_id), request)


@router.delete("/runs/{run_id}")
def cancel_run(run_id: JobId, request: Request) -> dict:
    """Cancel a queued or running job; what it stored is kept."""
    return job_out(worker(request).cancel(find_job(request, run_id).id), request)


add_report_routes(router, "runs", "run_id", "The self-contained HTML report.")


@router.post("/adapters", status_code=202)
def train_adapters(body: AdapterRequest, request: Request, runtime: RuntimeDep) -> dict:
    """Queue training of the artifacts the given arms need (reused when unchanged)."""
    corpus = resolve_corpus(runtime.corpus, body.corpus)
    kinds = list(dict.fromkeys(ARMS[name].adapter for name in body.arms or trainable()))
    return submit(request, "train", {"corpus": corpus.resolve().name, "kinds": kinds, "force": body.force})


@router.get("/adapters")
def list_adapter_jobs(
    request: Request, response: Response, limit: PageLimit = None, offset: PageOffset = 0
) -> list[dict]:
    """Training jobs, oldest first, one page at a time."""
    return page(response, request, "train", limit, offset)


@router.get("/adapters/{job_id}")
def get_adapter_job(job_id: JobId, request: Request) -> dict:
    return job_out(find_job(request, job_id), request)
