"""Crossover curves as background jobs (`ragft.eval.running.curve`, as `ragft curve`): start, list, watch, cancel, reports."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel, Field
from ragft.eval.curve_spec import CurveSpec, learns
from ragft.eval.families import FamilyNames
from ragft.eval.spec import Seed
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
from ragft.service.arms import ARMS, ArmNames, curve_defaults, parse_arm, spellings

router = APIRouter(prefix="/v1", tags=["curves"], responses=errors(404, 409, 429))


def learners() -> list[str]:
    """The arm names (spellings included) that learn from train rows, for the schema's `contains`."""
    return [n for n in spellings(list(ARMS)) if learns(parse_arm(n))]


class CurveRequest(BaseModel):
    corpus: CorpusName | None = Field(None, description="Corpus name (default: the served corpus).")
    arms: ArmNames | None = Field(
        None, min_length=1,
        description=f"Default: {', '.join(curve_defaults())}; at least one arm that learns from train rows.",
        json_schema_extra=lambda schema: schema.update(contains={"enum": learners()}),
    )  # fmt: skip
    families: FamilyNames | None = Field(None, min_length=1, description="Default: eval.families (else every family).")
    rows: list[Annotated[int, Field(ge=1, le=1_000_000)] | Literal["all"]] | None = Field(
        None, min_length=1, max_length=20, description="Train rows per family at each point (default 10,25,50,100,all)."
    )
    noise: list[Annotated[float, Field(ge=0, lt=1)]] | None = Field(
        None, min_length=1, max_length=10, description="Shares of train rows given a wrong target, each in [0, 1)."
    )
    limit: int | None = Field(None, ge=1, le=100_000, description="Test rows per family (default: eval.limit).")
    seed: Seed | None = Field(None, description="Default: generation.seed.")


@router.post("/curves", status_code=202)
def start_curve(body: CurveRequest, request: Request, settings: SettingsDep, runtime: RuntimeDep) -> dict:
    """Queue a crossover curve; returns at once with its job id. Its points are runs named by their inputs, so a
    point answered before (by a curve or `ragft eval`) is reused, and its `run_id` is the curve id once done."""
    corpus = resolve_corpus(runtime.corpus, body.corpus)
    try:
        spec = CurveSpec.resolve(settings, Path(corpus.resolve().name), arms=body.arms, families=body.families,
                                 rows=body.rows, noise=body.noise, limit=body.limit, seed=body.seed)  # fmt: skip
    except ValueError as exc:  # e.g. no arm that learns from train rows, a noise share of 1 or more
        raise HTTPException(422, str(exc).replace("\n", " ")) from exc
    return submit(request, "curve", spec.model_dump(mode="json"))


@router.get("/curves")
def list_curves(request: Request, response: Response, limit: PageLimit = None, offset: PageOffset = 0) -> list[dict]:
    """Curve jobs, oldest first, one page at a time."""
    return page(response, request, "curve", limit, offset)


@router.get("/curves/{curve_id}")
def get_curve(curve_id: JobId, request: Request) -> dict:
    return job_out(find_job(request, curve_id), request)


@router.delete("/curves/{curve_id}")
def cancel_curve(curve_id: JobId, request: Request) -> dict:
    """Cancel a queued or running curve; the points it stored are kept and a new request resumes them."""
    return job_out(worker(request).cancel(find_job(request, curve_id).id), request)


add_report_routes(
    router,
    "curves",
    "curve_id",
    "The self-contained HTML report: one chart per family, the crossover and its evidence.",
)
