"""Operations: liveness, readiness and Prometheus metrics.

Every handler here is `async` and takes no lock: a plain `def` handler waits for a worker thread, and
with the pool full of queued queries probes took 40 s to answer. They must answer while generation is
saturated.
"""

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from ragft.service.app.api.deps import errors, hide_paths, require_key_for_operations

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Not ready: the body says what is missing."}})
async def readyz(request: Request, response: Response) -> dict:
    """Ready when the generator is loaded, the corpus index exists and the job worker runs (`jobs`: 'running', or
    'standby' while another server on the same data folder runs the jobs); 503 (with what is missing) otherwise."""
    runtime, worker = request.app.state.runtime, request.app.state.jobs
    jobs = worker.state
    checks = {
        "generator_loaded": runtime.generator_loaded,
        "index_present": runtime.index_ready,
        "job_worker_alive": jobs in ("running", "standby"),
    }
    ready = all(checks.values())
    response.status_code = 200 if ready else 503
    body = {"ready": ready, **checks, "jobs": jobs}
    if worker.last_error:
        body["job_worker_error"] = hide_paths(worker.last_error, request)
    if jobs == "standby":
        body["jobs_run_by"] = worker.lock.holder()
    if getattr(runtime, "warm_up_error", None):
        body["error"] = hide_paths(runtime.warm_up_error, request)
    if not checks["index_present"]:
        body["fix"] = hide_paths(f"ragft index {runtime.corpus}", request)
    return body


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}, **errors()},
    dependencies=[Depends(require_key_for_operations)],
)
async def metrics(request: Request) -> Response:
    """Prometheus text format: requests and latency per route, answers and generation time per arm."""
    return Response(generate_latest(request.app.state.telemetry.registry), media_type=CONTENT_TYPE_LATEST)
