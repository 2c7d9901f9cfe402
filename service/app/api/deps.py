"""FastAPI dependencies, named once."""

from __future__ import annotations

import re
import secrets
import sys
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from ragft.service.app.api.monitoring import Telemetry
from ragft.service.coalesce import Coalescer
from ragft.service.runtime import Runtime
from ragft.service.settings import ApiSettings, Settings


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]


_bearer = HTTPBearer(auto_error=False, description="An API key from api.api_keys, when any are configured.")


def key_role(api: ApiSettings, authorization: str | None) -> str | None:
    """'admin' or 'reader' for the bearer key in an Authorization header value, None for a missing or wrong one."""
    scheme, _, token = (authorization or "").partition(" ")
    given = token.strip().encode() if scheme.lower() == "bearer" else b""
    # compare with every key (no early exit), so timing does not tell which key a guess came close to
    admin = [k for k in api.api_keys if secrets.compare_digest(given, k.get_secret_value().encode())]
    reader = [k for k in api.read_only_keys if secrets.compare_digest(given, k.get_secret_value().encode())]
    return "admin" if admin else "reader" if reader else None


# What a read-only key (api.read_only_keys) may call, route by route (path templates): questions, stored results and
# reports, reviews read back. Everything else (documents, training, starting, listing or cancelling jobs, reviewing)
# needs a key from api.api_keys. tests/app/api/test_deps.py holds every route of the app with what a reader gets.
READER_ROUTES: dict[str, frozenset[str]] = {
    "POST": frozenset({"/v1/query", "/v1/query/batch", "/v1/chat/completions"}),
    "GET": frozenset({
        "/v1/models", "/v1/arms",
        "/v1/results", "/v1/results/{run_id}", "/v1/results/{run_id}/rows", "/v1/results/{run_id}/rows/{row_id}",
        "/v1/results/{run_id}/reviews", "/v1/results/{run_id}/files/{name:path}",
        "/v1/compare/{run_a}/{run_b}",
        "/v1/runs/{run_id}/report", "/v1/runs/{run_id}/report.json", "/v1/runs/{run_id}/report.md",
        "/v1/curves/{curve_id}/report", "/v1/curves/{curve_id}/report.json", "/v1/curves/{curve_id}/report.md",
    }),
}  # fmt: skip


def reader_may(method: str, route: str) -> bool:
    """Whether a read-only key may call `route` (its path template) with `method` (HEAD as GET): `READER_ROUTES`."""
    return route in READER_ROUTES.get("GET" if method == "HEAD" else method, frozenset())


def unauthorized() -> HTTPException:
    """The 401 of a missing or wrong key."""
    return HTTPException(
        401,
        "missing or wrong API key: send 'Authorization: Bearer <key>' with a key from RAGFT_API__API_KEYS",
        headers={"WWW-Authenticate": "Bearer"},
    )


async def require_api_key(
    request: Request,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """401 unless the request carries one of the configured keys (no keys configured: open); 403 when a read-only
    key (api.read_only_keys) calls a route that changes something. `RequestGuard` checks the key first, before
    the body is read; this names the scheme in the OpenAPI schema and checks the key's role on the route.

    Async, like everything on the path of /metrics: it must never wait for a worker thread."""
    if not settings.api.keyed:
        return
    role = key_role(settings.api, f"Bearer {credentials.credentials}" if credentials else None)
    if role is None:
        raise unauthorized()
    route = getattr(request.scope.get("route"), "path", request.url.path)
    if role == "reader" and not reader_may(request.method, route):
        raise HTTPException(
            403, f"this key is read-only (api.read_only_keys): it may ask questions and read reports; "
            f"{request.method} {route} needs a key from api.api_keys",
        )  # fmt: skip


async def require_key_for_operations(
    request: Request,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """The API key check on /metrics and the docs, when api.protect_metrics_and_docs (default: keys are set);
    either kind of key will do."""
    given = f"Bearer {credentials.credentials}" if credentials else None
    if settings.api.guards_operations and settings.api.keyed and key_role(settings.api, given) is None:
        raise unauthorized()


def hide_paths(message: str, request: Request) -> str:
    """`message` with this server's folders replaced by the setting or name that stands for them, so an
    error tells a client what to fix without showing where the server keeps its files."""
    settings, corpus = request.app.state.settings, request.app.state.runtime.corpus
    roots = [
        (corpus, f"<corpus {Path(corpus).resolve().name}>"),
        (settings.artifact_dir, "<artifact_dir>"),
        (settings.data_dir, "<data_dir>"),
        (settings.eval.reports_dir, "<reports_dir>"),
        *(
            (Path(m), f"<models.{name}>")
            for name, m in (("generator", settings.models.generator), ("embedder", settings.models.embedder))
            if Path(m).is_absolute()
        ),  # fmt: skip
        (Path(sys.prefix), "<python>"),
        (Path.cwd(), "."),
        (Path.home(), "~"),
    ]
    forms = {(str(form), label) for root, label in roots for form in (Path(root), Path(root).resolve())}
    for form, label in sorted(forms, key=lambda f: -len(f[0])):  # the longest first: data/artifacts before data
        if form not in (".", "/"):
            message = message.replace(form, label)
    return message


def get_telemetry(request: Request) -> Telemetry:
    return request.app.state.telemetry


TelemetryDep = Annotated[Telemetry, Depends(get_telemetry)]


def get_coalescer(request: Request) -> Coalescer:
    return request.app.state.coalescer


CoalescerDep = Annotated[Coalescer, Depends(get_coalescer)]


class Problem(BaseModel):
    """Every error body: what went wrong and what to change (request validation lists each field)."""

    detail: str | list[dict[str, Any]] = Field(description="The reason, naming the limit, setting or command.")


_REASONS = {
    401: "missing or wrong API key (when api.api_keys or api.read_only_keys is set)",
    403: "a read-only key (api.read_only_keys) on a route that changes something",
    404: "no such model, run, job or corpus",
    409: "not ready: index missing, adapter untrained or for another model, backend lacks the LoRA module",
    413: "body, question or batch over its limit (the message names the setting)",
    422: "invalid field, or a value over a configured limit",
    429: "too much queued work (jobs or answers); retry after the Retry-After seconds",
    503: "the generator backend does not answer, or a query waited past api.query_timeout_s",
    507: "the server could not store the change (disk full, file-size limit); nothing was changed",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the error codes a router can answer, all with the Problem body."""
    return {code: {"model": Problem, "description": _REASONS[code]} for code in (401, 403, 413, 422, *codes)}


CORPUS_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
CORPUS_NAME = re.compile(CORPUS_NAME_PATTERN)
CorpusName = Annotated[
    str, Field(pattern=CORPUS_NAME_PATTERN, description="A corpus folder name next to the served one.")
]
