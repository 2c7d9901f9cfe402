"""FastAPI dependencies, named once."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.api.monitoring import Telemetry
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
