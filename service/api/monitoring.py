"""Prometheus metrics and request guards shared by every route.

A private registry per app (not the process-global one), so several apps in one process
(tests, or a judge ragft beside a served one) never mix their counts.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send


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


class RequestGuard:
    """ASGI middleware: refuses bodies over the limit (413, before reading them) and records request metrics."""

    def __init__(self, app: ASGIApp, telemetry: Telemetry, max_body_bytes: int):
        self.app, self.telemetry, self.max_body = app, telemetry, max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            response = JSONResponse(
                {"detail": f"request body is {int(length)} bytes; the limit is {self.max_body} (api.max_body_bytes)"},
                status_code=413,
            )
            await response(scope, receive, send)
            return
        received = 0

        async def counting_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body:
                raise BodyTooLarge()
            return message

        status = {"code": 500}

        async def recording_send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, counting_receive, recording_send)
        except BodyTooLarge:
            response = JSONResponse({"detail": f"request body exceeds {self.max_body} bytes (api.max_body_bytes)"}, 413)
            await response(scope, receive, send)
            status["code"] = 413
        finally:
            route = scope.get("route")
            name = getattr(route, "path", None) or "unmatched"
            self.telemetry.requests.labels(name, str(status["code"])).inc()
            self.telemetry.latency.labels(name).observe(time.perf_counter() - started)


class BodyTooLarge(Exception):
    pass
