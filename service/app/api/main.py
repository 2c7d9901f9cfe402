"""The FastAPI application: every router and middleware is included here."""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import threading
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.middleware.trustedhost import TrustedHostMiddleware
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from ragft.eval.running.pipeline import open_runtime
from ragft.service import folders
from ragft.service.adapters import MANIFEST, AdapterMismatch, ArtifactMissing
from ragft.service.app import ui
from ragft.service.app.api import job_routes
from ragft.service.app.api.deps import hide_paths, key_role, require_api_key, require_key_for_operations, unauthorized
from ragft.service.app.api.jobs import JobWorker
from ragft.service.app.api.monitoring import RequestGuard, Telemetry
from ragft.service.app.api.routes import corpora, curves, generated, health, openai, query, results, runs
from ragft.service.backend import BackendError, BackendUnavailable
from ragft.service.coalesce import Busy, Coalescer, DeadlineExceeded
from ragft.service.conversion import configure_from as configure_conversions
from ragft.service.documents import recover_document_changes
from ragft.service.retrieval import IndexMissing, index_lock, read_index_manifest, recover_index
from ragft.service.runtime import Runtime
from ragft.service.settings import Settings, make_storage_private
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


def warm_up(runtime: Runtime) -> None:
    """Load the generator or reach the backend (and load the retriever when an index exists), so /readyz
    turns ready without a query."""
    try:
        runtime.load_generation()
        if runtime.index_ready:
            runtime.retriever()
    except Exception as exc:  # readiness reports it; queries will show the same error with its fix
        runtime.warm_up_error = f"{type(exc).__name__}: {exc}"


# An arm that cannot answer yet: the message names the command or setting that fixes it.
NOT_READY = (IndexMissing, ArtifactMissing, AdapterMismatch, BackendError)


async def not_ready(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": hide_paths(str(exc), request)}, status_code=409)


async def backend_down(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": hide_paths(str(exc), request)}, status_code=503, headers={"Retry-After": "30"})


async def busy(request: Request, exc: Busy | DeadlineExceeded) -> JSONResponse:
    """429 when the queue is full, 503 when a query's deadline passed in it; both say when to retry."""
    status = 429 if isinstance(exc, Busy) else 503
    return JSONResponse({"detail": str(exc)}, status_code=status, headers={"Retry-After": str(exc.retry_after_s)})


async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
    """FastAPI's HTTP error answer, with this server's folders taken out of the message."""
    if isinstance(exc.detail, str):
        exc.detail = hide_paths(exc.detail, request)
    return await http_exception_handler(request, exc)


async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
    """FastAPI's 422, written in ASCII JSON: a refused input may hold a lone surrogate, which UTF-8 cannot encode
    (FastAPI's own answer then failed with a 500)."""
    body = json.dumps({"detail": jsonable_encoder(exc.errors())}, allow_nan=False, separators=(",", ":"))
    return Response(body, 422, media_type="application/json")


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def check_binding(host: str, settings: Settings, insecure: bool) -> str | None:
    """Refuse to serve a network interface without API keys, or CORS origins without them (any page on those
    origins could then read and change everything, as any program on the network could); with `insecure`, allow it
    and return the warning to log. Closed by default: an open API lets anyone edit the corpus and start training."""
    if settings.api.cors_origins and not settings.api.keyed:
        if not insecure:
            raise ValueError(
                f"refusing api.cors_origins {settings.api.cors_origins} without API keys: pages on those origins "
                "could read every stored answer and change the corpus through visitors' browsers. Set "
                "RAGFT_API__API_KEYS='[\"<random key of 16+ characters>\"]', or drop RAGFT_API__CORS_ORIGINS, or "
                "pass --insecure to allow it anyway."
            )
        if is_loopback(host):
            return f"INSECURE: CORS open to {settings.api.cors_origins} with no API key (--insecure)"
    if settings.api.keyed or is_loopback(host):
        return None
    if not insecure:
        raise ValueError(
            f"refusing to serve on {host} without API keys: anyone who can reach it could change the corpus and "
            "start jobs. Set RAGFT_API__API_KEYS='[\"<random key of 16+ characters>\"]' (clients send "
            "'Authorization: Bearer <key>'), or bind --host 127.0.0.1, or pass --insecure to serve it open anyway."
        )
    return f"INSECURE: serving on {host} with no API key (--insecure): every /v1 route is open to the network"


def recover_storage(runtime: Runtime) -> None:
    """Finish or undo what a crash interrupted, before serving: an index swap, then document changes (judged
    against the index they were made for), so documents and index agree again."""
    with index_lock(runtime.index_dir):
        note = recover_index(runtime.index_dir)
        if note:
            log.warning("start-up recovery: %s", note)
        folder = runtime.corpus / "documents"
        if folder.is_dir():
            manifest = read_index_manifest(runtime.index_dir)
            touched = recover_document_changes(folder, manifest.documents if manifest else None)
            if touched:
                log.warning("start-up recovery: finished or undid interrupted changes to documents %s", touched)
    for note in recover_artifacts(runtime.settings, runtime.corpus):
        log.warning("start-up recovery: %s", note)


def recover_artifacts(settings: Settings, corpus: Path) -> list[str]:
    """Finish or undo the artifact swaps of `corpus` a kill interrupted (a retrain's two renames), so its arms
    do not answer 409 until someone retrains; a build another process still runs is left alone."""
    root = settings.artifact_dir / "adapters" / Path(corpus).resolve().name
    if not root.is_dir():
        return []
    named = {p.parent / p.name.split(".tmp-")[0].split(".old-")[0] for p in [*root.glob("*"), *root.glob("*/*")]
             if p.is_dir()}  # fmt: skip
    notes = [folders.recover(f, lambda f: (f / MANIFEST).is_file(), f"{f.name} artifact") for f in sorted(named)]
    return [n for n in notes if n]


def key_check(settings: Settings):
    """The check RequestGuard runs before reading a /v1 body: None (go on) or the 401 to send. The route's
    dependency then checks what a read-only key may do."""
    if not settings.api.keyed:
        return None

    def refusal(scope, headers: dict) -> Response | None:
        if not scope["path"].startswith("/v1/") or scope["method"] == "OPTIONS":
            return None
        if key_role(settings.api, headers.get(b"authorization", b"").decode("latin-1")) is not None:
            return None
        exc = unauthorized()
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    return refusal


def serve_docs(app: FastAPI) -> None:
    """/openapi.json, /docs and /redoc, behind the API key when api.protect_metrics_and_docs says so."""
    guard = [Depends(require_key_for_operations)]

    @app.get("/openapi.json", include_in_schema=False, dependencies=guard)
    async def openapi_json() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=guard)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - docs")

    @app.get("/redoc", include_in_schema=False, dependencies=guard)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title=f"{app.title} - ReDoc")


def document_limits(app: FastAPI, limits) -> None:
    """Write this deployment's configured limits into the OpenAPI schema, so clients (and schemathesis)
    see the same bounds the handlers enforce."""
    bounds = {
        "top_k": {"maximum": limits.max_top_k},
        "max_new_tokens": {"maximum": limits.max_tokens},
        "question": {"maxLength": limits.max_question_chars},
        "questions": {"maxItems": limits.max_batch_questions},
        "max_tokens": {"maximum": limits.max_tokens},
        "max_completion_tokens": {"maximum": limits.max_tokens},
    }
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = build()
            for model in schema["components"]["schemas"].values():
                for name, prop in model.get("properties", {}).items():
                    for variant in [prop, *prop.get("anyOf", [])]:
                        if variant.get("type") in ("integer", "string", "array") and name in bounds:
                            variant.update(bounds[name])
                    if name == "questions" and prop.get("type") == "array":  # a batch's questions, not a sheet
                        prop["items"]["maxLength"] = limits.max_question_chars
        return app.openapi_schema

    app.openapi = openapi


def create_app(settings: Settings, corpus: Path | None = None) -> FastAPI:
    """An app serving `corpus` (default: settings.corpus)."""
    corpus = Path(corpus or settings.corpus)
    make_storage_private(settings)
    configure_conversions(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if settings.api.warm_up:
            threading.Thread(target=warm_up, args=(app.state.runtime,), daemon=True).start()
        app.state.jobs.start()
        yield
        app.state.jobs.stop()

    app = FastAPI(
        title="ragft",
        version="0.1.0",
        description="Compare RAG, LoRA, both, or neither on one question.",
        lifespan=lifespan,
        docs_url=None,  # served by serve_docs, behind the key when configured
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    app.state.runtime = open_runtime(settings, corpus)
    app.state.telemetry = Telemetry()
    recover_storage(app.state.runtime)
    app.state.coalescer = Coalescer(
        app.state.runtime, settings.generation.batch_size, settings.api.max_queued_answers, settings.api.query_timeout_s
    )
    app.state.document_changes = threading.BoundedSemaphore(settings.api.max_document_changes)
    app.state.jobs = JobWorker(settings)
    app.state.jobs.corpus_folder = functools.partial(job_routes.corpus_folder, corpus)
    app.state.telemetry.watch_jobs(app.state.jobs)
    guarded = [Depends(require_api_key)]
    app.include_router(health.router)
    app.include_router(query.router, dependencies=guarded)
    app.include_router(openai.router, dependencies=guarded)
    app.include_router(runs.router, dependencies=guarded)
    app.include_router(curves.router, dependencies=guarded)
    app.include_router(corpora.router, dependencies=guarded)
    app.include_router(results.router, dependencies=guarded)
    app.include_router(generated.router, dependencies=guarded)
    app.include_router(ui.router)  # the page shell only: its data comes from the guarded routes above
    for error in NOT_READY:
        app.add_exception_handler(error, not_ready)
    app.add_exception_handler(BackendUnavailable, backend_down)
    app.add_exception_handler(Busy, busy)
    app.add_exception_handler(DeadlineExceeded, busy)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    serve_docs(app)
    document_limits(app, settings.api)
    # Host names checked inside RequestGuard, so a refused host (a DNS-rebinding page) is logged and counted
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.api.trusted_hosts, www_redirect=False)
    app.add_middleware(RequestGuard, telemetry=app.state.telemetry, max_body_bytes=settings.api.max_body_bytes,
                       authorized=key_check(settings))  # fmt: skip
    if settings.api.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.api.cors_origins, allow_methods=["*"], allow_headers=["*"]
        )
    return app
