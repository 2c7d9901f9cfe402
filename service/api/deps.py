"""FastAPI dependencies, named once."""

from __future__ import annotations

import re
import secrets
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, WithJsonSchema

from service.api.monitoring import Telemetry
from service.arms import ARMS
from service.coalesce import Coalescer
from service.runtime import Runtime
from service.settings import Settings


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]


_bearer = HTTPBearer(auto_error=False, description="An API key from api.api_keys, when any are configured.")


def require_api_key(
    settings: SettingsDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """401 unless the request carries one of the configured keys (no keys configured: open)."""
    keys = settings.api.api_keys
    if not keys:
        return
    given = credentials.credentials if credentials else ""
    if not any(secrets.compare_digest(given.encode(), k.encode()) for k in keys):
        raise HTTPException(
            401,
            "missing or wrong API key: send 'Authorization: Bearer <key>' with a key from RAGFT_API__API_KEYS",
            headers={"WWW-Authenticate": "Bearer"},
        )


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
    401: "missing or wrong API key (when api.api_keys is set)",
    404: "no such model, run, job or corpus",
    409: "not ready: index missing, adapter untrained or for another model, backend lacks the LoRA module",
    413: "body, question or batch over its limit (the message names the setting)",
    422: "invalid field, or a value over a configured limit",
    503: "the generator backend does not answer",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the error codes a router can answer, all with the Problem body."""
    return {code: {"model": Problem, "description": _REASONS[code]} for code in (401, 413, 422, *codes)}


def arm_name(*names: str) -> Any:
    """A string field documented as one of `names` (default: every arm); the validator accepts 'rag+lora' too."""
    choices = list(names or ARMS)
    return Annotated[
        str, WithJsonSchema({"type": "string", "enum": [*choices, *(["rag+lora"] if "rag_lora" in choices else [])]})
    ]


CORPUS_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
CORPUS_NAME = re.compile(CORPUS_NAME_PATTERN)
CorpusName = Annotated[
    str, Field(pattern=CORPUS_NAME_PATTERN, description="A corpus folder name next to the served one.")
]
