"""What the routes of every job resource share (runs and adapters in `routes/runs.py`, curves in `routes/curves.py`):
the corpus a request names, a job as the API shows it, queueing one, a page of them, finding one by id, and a
finished job's three report files, registered on a resource's router by one call (`add_report_routes`).

Example:
    >>> # add_report_routes(router, "runs", "run_id", "The self-contained HTML report.")
    >>> sorted(REPORT_SUFFIXES)
    ['', '.json', '.md']
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from ragft.eval.reporting.report import REPORT_FILES
from ragft.service.app.api.deps import CORPUS_NAME, SettingsDep, hide_paths
from ragft.service.app.api.job_store import JobNotFound, JobRecord, QueueFull
from ragft.service.settings import Settings

JobId = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$", description="A job or run id.")]
PageLimit = Annotated[int | None, Query(ge=1, description="Jobs per page (at most api.max_page_size).")]
# SQLite's integers stop at 2**63 - 1 (an offset past it was a 500); no job table comes near a billion rows
PageOffset = Annotated[
    int, Query(ge=0, le=10**9, description="Jobs to skip, oldest first; X-Total-Count gives the total.")
]
REPORT_SUFFIXES = {"": "report.html", ".json": "results.json", ".md": "report.md"}  # route suffix -> report file


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


def job_out(job: JobRecord, request: Request) -> dict:
    """A job as the API shows it: its corpus by name and its error without this server's folders."""
    shown = job.request | ({"corpus": Path(job.request["corpus"]).name} if job.request.get("corpus") else {})
    error = hide_paths(job.error, request) if job.error else job.error
    return {"id": job.id, "kind": job.kind, "status": job.status, "progress": job.progress, "request": shown,
            "created_at": job.created_at, "updated_at": job.updated_at, "error": error,
            "run_id": job.run_id, "attempts": job.attempts, "cancel_requested": job.cancel_requested}  # fmt: skip


def worker(request: Request):
    """The app's job worker (`ragft.service.app.api.jobs.JobWorker`)."""
    return request.app.state.jobs


def submit(request: Request, kind: str, payload: dict) -> dict:
    """Queue a job (or find the identical one waiting or running); 429 with Retry-After when the queue is full."""
    try:
        return job_out(worker(request).submit(kind, payload), request)
    except QueueFull as exc:
        raise HTTPException(429, str(exc), headers={"Retry-After": "60"}) from exc


def page(response: Response, request: Request, kind: str, limit: int | None, offset: int) -> list[dict]:
    """One page of the jobs of `kind`, oldest first, the total in X-Total-Count."""
    settings = request.app.state.settings
    size = min(limit or settings.api.max_page_size, settings.api.max_page_size)
    jobs, total = worker(request).store.jobs_page(kind, size, offset)
    response.headers["X-Total-Count"] = str(total)
    return [job_out(j, request) for j in jobs]


def find_job(request: Request, job_id: str) -> JobRecord:
    """The job with this id (or run id); 404 naming it when there is none."""
    try:
        return worker(request).store.job_for(job_id)
    except JobNotFound as exc:
        raise HTTPException(404, str(exc)) from exc


def report_file(job_id: str, suffix: str, request: Request, settings: Settings) -> FileResponse:
    """One of a finished job's report files; 409 while the job has not written it yet."""
    job = find_job(request, job_id)
    name = REPORT_SUFFIXES[suffix]
    path = Path(settings.eval.reports_dir) / (job.run_id or job.id) / name
    if not path.is_file():
        raise HTTPException(409, f"run {job_id} is {job.status}; its report exists once it is done")
    return FileResponse(path, media_type=REPORT_FILES[name])


def add_report_routes(router: APIRouter, collection: str, id_name: str, html_description: str) -> None:
    """GET /<collection>/{<id_name>}/report, report.json and report.md on `router`, named <resource>_report,
    <resource>_report_json and <resource>_report_md (<resource>: `id_name` without its '_id')."""
    resource = id_name.removesuffix("_id")
    for suffix, name in REPORT_SUFFIXES.items():
        router.add_api_route(
            f"/{collection}/{{{id_name}}}/report{suffix}", _report_endpoint(id_name, suffix), methods=["GET"],
            name=f"{resource}_report{suffix.replace('.', '_')}", response_class=FileResponse,
            responses={200: {"content": {REPORT_FILES[name]: {}}, "description": "The report file."}},
            description=html_description if not suffix else None,
        )  # fmt: skip


def _report_endpoint(id_name: str, suffix: str):
    """An endpoint whose path parameter is called `id_name` (run_id, curve_id), as the schema names it."""

    def endpoint(request: Request, settings: Settings, **path: str) -> FileResponse:
        return report_file(path[id_name], suffix, request, settings)

    keyword = inspect.Parameter.KEYWORD_ONLY
    endpoint.__signature__ = inspect.Signature(
        [inspect.Parameter(id_name, keyword, annotation=JobId), inspect.Parameter("request", keyword, annotation=Request),
         inspect.Parameter("settings", keyword, annotation=SettingsDep)],
        return_annotation=FileResponse,
    )  # fmt: skip
    return endpoint
