"""The FastAPI application: every router is included here."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from eval.tasks import corpus_examples
from service.api.routes import health, openai, query
from service.runtime import Runtime
from service.settings import Settings


def create_app(settings: Settings, corpus: Path | None = None) -> FastAPI:
    """An app serving `corpus` (default: settings.corpus); models load on the first query."""
    corpus = Path(corpus or settings.corpus)
    app = FastAPI(title="ragft", version="0.1.0", description="Compare RAG, LoRA, both, or neither on one question.")
    app.state.settings = settings
    app.state.runtime = Runtime(settings, corpus, corpus_examples(corpus, settings.generation))
    app.include_router(health.router)
    app.include_router(query.router)
    app.include_router(openai.router)
    return app
