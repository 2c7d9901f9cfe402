"""Liveness."""

from fastapi import APIRouter

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up (models load lazily, on the first query)."""
    return {"status": "ok"}
