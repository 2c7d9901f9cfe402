"""Prometheus metrics and request guards shared by every route.

A private registry per app (not the process-global one), so several apps in one process
(tests, or a judge ragft beside a served one) never mix their counts.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from ragft.service.app.api.job_store import JOB_KINDS, JOB_STATUSES
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

access_log = logging.getLogger("ragft.access")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class Telemetry:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "ragft_requests_total", "HTTP requests by route and status", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "ragft_request_seconds", "HTTP request latency by route", ["route"], registry=self.registry,
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120),
        )  # fmt: skip
        self.arm_answers = Counter("ragft_arm_answers_total", "Answers given per arm", ["arm"], registry=self.registry)
        self.arm_latency = Histogram(
            "ragft_arm_seconds", "Generation time per answer by arm", ["arm"], registry=self.registry,
            buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60),
        )  # fmt: skip

    def observe_answer(self, arm: str, seconds: float) -> None:
        self.arm_answers.labels(arm).inc()
        self.arm_latency.labels(arm).observe(seconds)

    def watch_jobs(self, worker) -> None:
        self.registry.register(JobStates(worker))


class JobStates(Collector):
    """`ragft_jobs{kind,status}` from the job worker's snapshot of the results database (refreshed by its heartbeat,
    so a scrape neither waits for a lock nor queries SQLite inside the event loop), and the worker's health:
    `ragft_job_worker_up` (its thread runs: jobs will run here or on the server holding the lock),
    `ragft_job_worker_lock_held`, `ragft_job_worker_errors_total` (failed writes it survived) and
    `ragft_job_worker_heartbeat_age_seconds`."""

    def __init__(self, worker):
        self.worker = worker

    def collect(self):
        gauge = GaugeMetricFamily("ragft_jobs", "Jobs (eval runs, adapter training, curves) by kind and status",
                                  labels=["kind", "status"])  # fmt: skip
        counts = self.worker.counts
        for kind in JOB_KINDS:
            for status in JOB_STATUSES:
                gauge.add_metric([kind, status], counts.get((kind, status), 0))
        yield gauge
        state = self.worker.state
        yield GaugeMetricFamily("ragft_job_worker_up", "1 while the job worker thread runs (or stands by for the "
                                "data folder's lock), 0 when it has stopped", value=int(state in ("running", "standby")))  # fmt: skip
        yield GaugeMetricFamily("ragft_job_worker_lock_held", "1 when this server runs its data folder's jobs",
                                value=int(self.worker.lock.held))  # fmt: skip
        yield CounterMetricFamily("ragft_job_worker_errors", "Errors the job worker logged and went on after "
                                  "(failed status writes)", value=self.worker.errors)  # fmt: skip
        yield GaugeMetricFamily("ragft_job_worker_heartbeat_age_seconds", "Seconds since the job worker last went "
                                "round its loop or renewed its job's claim", value=time.time() - self.worker.beat_at)  # fmt: skip


def request_id(headers: dict[bytes, bytes]) -> str:
    """The caller's X-Request-ID when it is a sane token, else a new one; echoed back and logged."""
    given = headers.get(b"x-request-id", b"").decode("latin-1")
    return given if REQUEST_ID.match(given) else uuid.uuid4().hex


class RequestGuard:
    """ASGI middleware: refuses bodies over the limit (413, before reading them), records request metrics,
    tags each request with an X-Request-ID and logs one access line per request."""

    def __init__(self, app: ASGIApp, telemetry: Telemetry, max_body_bytes: int, authorized=None):
        """`authorized(scope, headers) -> None | Response`: the answer to send instead (a 401) when the request
        lacks a key, checked before any of the body is read."""
        self.app, self.telemetry, self.max_body, self.authorized = app, telemetry, max_body_bytes, authorized

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        rid = request_id(headers)
        status = {"code": 500}

        async def recording_send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        started = time.perf_counter()
        try:
            await self._guarded(scope, receive, recording_send, headers)
        finally:
            route = scope.get("route")
            name = getattr(route, "path", None) or "unmatched"
            seconds = time.perf_counter() - started
            self.telemetry.requests.labels(name, str(status["code"])).inc()
            self.telemetry.latency.labels(name).observe(seconds)
            access_log.info(
                "%s %s %s", scope["method"], scope["path"], status["code"],
                extra={"request_id": rid, "method": scope["method"], "path": scope["path"], "route": name,
                       "status": status["code"], "duration_ms": round(seconds * 1000, 1),
                       "client": (scope.get("client") or ("", 0))[0]},
            )  # fmt: skip

    async def _guarded(self, scope: Scope, receive: Receive, send: Send, headers: dict) -> None:
        """Read the whole body here (at most max_body bytes), refuse it or JSON the standard does not allow,
        then hand it on. Reading it here, not in the route, makes a chunked body over the limit a 413 too
        (an error raised inside FastAPI's body reader turns into a 400)."""
        refusal = self.authorized(scope, headers) if self.authorized is not None else None
        if refusal is not None:  # no key: not a byte of the body is read or parsed
            await refusal(scope, receive, send)
            return
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            detail = f"request body is {int(length)} bytes; the limit is {self.max_body} (api.max_body_bytes)"
            await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)
            return
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away before sending it all
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body:
                detail = f"request body exceeds {self.max_body} bytes (api.max_body_bytes)"
                await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)
                return
        problem = non_standard_json(bytes(body), headers.get(b"content-type", b""))
        if problem:
            await JSONResponse({"detail": problem}, status_code=422)(scope, receive, send)
            return
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: disconnects, which streaming responses listen for
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)


class _NonFinite(ValueError):
    pass


def _refuse_constant(name: str):
    raise _NonFinite(name)


def non_standard_json(body: bytes, content_type: bytes) -> str | None:
    """Why a JSON body is refused, or None. Python's json reads NaN and Infinity, which JSON does not have;
    let through, a NaN reached a handler and a 500 came back, so they are a 422 here."""
    if not body or b"json" not in content_type.lower():
        return None
    try:
        json.loads(body, parse_constant=_refuse_constant)
    except _NonFinite as exc:
        return f"the JSON body holds {exc}, which JSON does not allow; send a finite number or null"
    except RecursionError:
        return "the JSON body is nested too deeply to read"
    except ValueError:  # not JSON at all: the route's validation names the problem
        return None
    return None
