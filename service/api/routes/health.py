"""Operations: liveness, readiness and Prometheus metrics."""

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Not ready: the body says what is missing."}})
def readyz(request: Request, response: Response) -> dict:
    """Ready when the generator is loaded and the corpus index exists; 503 (with what is missing) otherwise."""
    runtime = request.app.state.runtime
    checks = {
        "generator_loaded": runtime.generator_loaded,
        "index_present": (runtime.index_dir / "index.faiss").is_file(),
    }
    ready = all(checks.values())
    response.status_code = 200 if ready else 503
    body = {"ready": ready, **checks}
    if getattr(runtime, "warm_up_error", None):
        body["error"] = runtime.warm_up_error
    if not checks["index_present"]:
        body["fix"] = f"ragft index {runtime.corpus}"
    return body


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(request: Request) -> Response:
    """Prometheus text format: requests and latency per route, answers and generation time per arm."""
    return Response(generate_latest(request.app.state.telemetry.registry), media_type=CONTENT_TYPE_LATEST)
