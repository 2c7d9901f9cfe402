"""The FastAPI application: every router and middleware is included here."""

from __future__ import annotations

import threading
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse

from eval.tasks import corpus_examples
from service.adapters import AdapterMismatch, ArtifactMissing
from service.api.deps import require_api_key
from service.api.jobs import JobWorker
from service.api.monitoring import RequestGuard, Telemetry
from service.api.routes import corpora, health, openai, query, runs
from service.backend import BackendError, BackendUnavailable
from service.coalesce import Coalescer
from service.retrieval import IndexMissing
from service.runtime import Runtime
from service.settings import Settings


def warm_up(runtime: Runtime) -> None:
    """Load the generator or reach the backend (and load the retriever when an index exists), so /readyz
    turns ready without a query."""
    try:
        runtime.load_generation()
        if (runtime.index_dir / "index.faiss").is_file():
            runtime.retriever()
    except Exception as exc:  # readiness reports it; queries will show the same error with its fix
        runtime.warm_up_error = f"{type(exc).__name__}: {exc}"


# An arm that cannot answer yet: the message names the command or setting that fixes it.
NOT_READY = (IndexMissing, ArtifactMissing, AdapterMismatch, BackendError)


async def not_ready(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=409)


async def backend_down(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "30"})


def document_limits(app: FastAPI, limits) -> None:
    """Write this deployment's configured limits into the OpenAPI schema, so clients (and schemathesis)
    see the same bounds the handlers enforce."""
    bounds = {
        "top_k": {"maximum": limits.max_top_k},
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
                    if name == "questions":
                        prop["items"]["maxLength"] = limits.max_question_chars
        return app.openapi_schema

    app.openapi = openapi


def create_app(settings: Settings, corpus: Path | None = None) -> FastAPI:
    """An app serving `corpus` (default: settings.corpus)."""
    corpus = Path(corpus or settings.corpus)

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
    )
    app.state.settings = settings
    app.state.runtime = Runtime(settings, corpus, corpus_examples(corpus, settings.generation))
    app.state.telemetry = Telemetry()
    app.state.coalescer = Coalescer(app.state.runtime, settings.generation.batch_size)
    app.state.jobs = JobWorker(settings)
    app.state.telemetry.watch_jobs(app.state.jobs.store)
    guarded = [Depends(require_api_key)]
    app.include_router(health.router)
    app.include_router(query.router, dependencies=guarded)
    app.include_router(openai.router, dependencies=guarded)
    app.include_router(runs.router, dependencies=guarded)
    app.include_router(corpora.router, dependencies=guarded)
    for error in NOT_READY:
        app.add_exception_handler(error, not_ready)
    app.add_exception_handler(BackendUnavailable, backend_down)
    document_limits(app, settings.api)
    app.add_middleware(RequestGuard, telemetry=app.state.telemetry, max_body_bytes=settings.api.max_body_bytes)
    if settings.api.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.api.cors_origins, allow_methods=["*"], allow_headers=["*"]
        )
    return app
