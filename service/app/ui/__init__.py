"""The web UI under /ui: one static page and its script and styles, served from this package (no front-end build,
nothing fetched from elsewhere). The page holds no data: its script reads the guarded JSON routes (/v1/results,
/v1/compare, /v1/query) with the API key the user enters once (kept in sessionStorage, sent as the bearer header;
no cookies), and builds every element with textContent, so a stored answer holding HTML shows as text.

Pages: /ui (runs), /ui/runs/<run_id> (verdicts, charts, row browser; filters and the open row in the query string,
so a link can be shared), /ui/compare/<a>/<b>, /ui/ask, /ui/review (generated rows to accept, edit or reject).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, HTTPException
from fastapi import Path as PathParam
from fastapi.responses import FileResponse

STATIC = Path(__file__).parent / "static"
ASSETS = {"app.js": "text/javascript", "app.css": "text/css"}
# Scripts and styles from this server only (no inline script can run, so injected markup could not act), images
# from this server or data: URIs (the report's charts), requests to this server only, and never framed.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")  # fmt: skip
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "X-Frame-Options": "DENY", "Cache-Control": "no-cache"}  # fmt: skip
RunId = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")]

router = APIRouter(prefix="/ui", include_in_schema=False)


def _page() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html", headers=HEADERS)


@router.get("")
@router.get("/")
@router.get("/ask")
@router.get("/review")
def runs_page() -> FileResponse:
    """The runs list (and the ask page): the same shell, which reads the path."""
    return _page()


@router.get("/runs/{run_id}")
def run_page(run_id: RunId) -> FileResponse:
    return _page()


@router.get("/compare/{run_a}/{run_b}")
def compare_page(run_a: RunId, run_b: RunId) -> FileResponse:
    return _page()


@router.get("/static/{name}")
def asset(name: str) -> FileResponse:
    if name not in ASSETS:
        raise HTTPException(404, f"no UI file '{name}'")
    return FileResponse(STATIC / name, media_type=ASSETS[name], headers=HEADERS)
