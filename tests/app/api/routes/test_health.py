import json
import time

import pytest
from fastapi.testclient import TestClient
from ragft.service.app.api.main import create_app

from tests.app.api.conftest import KEY


def test_readyz_turns_ready_after_warm_up_and_index(settings, corpus):
    with TestClient(create_app(settings, corpus)) as client:  # the context runs the lifespan (warm-up)
        deadline = time.time() + 20
        while not client.app.state.runtime.generator_loaded and time.time() < deadline:
            time.sleep(0.05)
        body = client.get("/readyz")
        assert body.status_code == 503 and body.json()["generator_loaded"] and "ragft index" in body.json()["fix"]
        client.app.state.runtime.index()
        assert client.get("/readyz").json() == {
            "ready": True,
            "generator_loaded": True,
            "index_present": True,
            "job_worker_alive": True,
            "jobs": "running",
        }


def test_metrics_count_requests_and_answers_per_arm(settings, corpus):
    client = TestClient(create_app(settings, corpus))
    client.app.state.runtime.index()
    client.post("/v1/query", json={"question": "what is the price ?", "arms": ["base", "rag"]})
    text = client.get("/metrics").text
    assert 'ragft_arm_answers_total{arm="rag"} 1.0' in text
    assert 'ragft_requests_total{route="/v1/query",status="200"} 1.0' in text


@pytest.fixture
def keyed(with_api, corpus):
    return TestClient(create_app(with_api(api_keys=[KEY], max_body_bytes=2048), corpus))


@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Basic {KEY}", "Bearer "])
def test_missing_or_wrong_key_is_401(keyed, header):
    headers = {"Authorization": header} if header else {}
    r = keyed.post("/v1/query", json={"question": "q", "arms": ["base"]}, headers=headers)
    assert r.status_code == 401 and "RAGFT_API__API_KEYS" in r.text
    assert keyed.get("/v1/models", headers=headers).status_code == 401
    assert keyed.get("/healthz").status_code == 200  # operations stay open


def test_right_key_passes_and_oversize_body_is_413(keyed):
    auth = {"Authorization": f"Bearer {KEY}"}
    assert keyed.get("/v1/models", headers=auth).status_code == 200
    r = keyed.post(
        "/v1/query",
        content=b'{"question": "' + b"x" * 4096 + b'"}',
        headers=auth | {"content-type": "application/json"},
    )
    assert r.status_code == 413 and "api.max_body_bytes" in r.text


def test_cors_is_off_unless_configured(settings, corpus):
    plain = TestClient(create_app(settings, corpus))
    preflight = {"Origin": "https://example.org", "Access-Control-Request-Method": "POST"}
    assert "access-control-allow-origin" not in plain.options("/v1/query", headers=preflight).headers
    api = settings.api.model_copy(update={"cors_origins": ["https://example.org"]})
    open_app = TestClient(create_app(settings.model_copy(update={"api": api}), corpus))
    r = open_app.options("/v1/query", headers=preflight)
    assert r.headers["access-control-allow-origin"] == "https://example.org"


def test_metrics_show_job_states_from_the_database(settings, corpus):
    client = TestClient(create_app(settings, corpus))  # no lifespan: the worker does not start, jobs stay queued
    run_id = client.post("/v1/runs", json={"arms": ["base"], "families": ["knowledge"]}).json()["id"]
    text = client.get("/metrics").text
    assert 'ragft_jobs{kind="eval",status="queued"} 1.0' in text
    assert 'ragft_jobs{kind="train",status="queued"} 0.0' in text
    client.delete(f"/v1/runs/{run_id}")
    text = client.get("/metrics").text
    assert 'ragft_jobs{kind="eval",status="cancelled"} 1.0' in text
    assert 'ragft_jobs{kind="eval",status="queued"} 0.0' in text


def test_each_request_logs_one_json_line_with_its_request_id(settings, corpus, capfd):
    from ragft.service.logs import configure_logging

    configure_logging("json", "INFO")
    try:
        client = TestClient(create_app(settings, corpus))
        given = client.get("/healthz", headers={"X-Request-ID": "trace-42"})
        fresh = client.get("/v1/runs/no-such-run")
    finally:
        configure_logging("text", "WARNING")
    assert given.headers["x-request-id"] == "trace-42"
    assert len(fresh.headers["x-request-id"]) == 32  # none given: a new one
    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith("{")]
    access = [line for line in lines if line["logger"] == "ragft.access"]
    assert [(a["request_id"], a["route"], a["status"]) for a in access] == [
        ("trace-42", "/healthz", 200), (fresh.headers["x-request-id"], "/v1/runs/{run_id}", 404)
    ]  # fmt: skip
    assert {"time", "level", "method", "path", "duration_ms"} <= set(access[0])


def test_probes_and_metrics_answer_while_generation_is_saturated(settings, corpus):
    """45 queries wait for a busy model (its lock held here) on a real server; /healthz, /readyz and /metrics
    still answer. They once waited for the worker threads the queued queries held, as long as generation took."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from tests.live import serving

    app = create_app(settings, corpus)
    body = {"question": "what does the k2 cost ?", "arms": ["base"]}
    with serving(app) as url, ThreadPoolExecutor(max_workers=48) as pool:
        with app.state.runtime.lock:
            queued = [pool.submit(httpx.post, f"{url}/v1/query", json=body, timeout=120) for _ in range(45)]
            deadline = time.time() + 10  # until all 45 are queued (or 10 s, where the queue cannot tell)
            while getattr(app.state.coalescer, "_admitted", 0) < 45 and time.time() < deadline:
                time.sleep(0.01)
            probes = [
                pool.submit(httpx.get, f"{url}{path}", timeout=60) for path in ("/healthz", "/readyz", "/metrics")
            ]
            answered = [p.result(timeout=30) for p in probes]  # a probe stuck behind the model would time out
            assert [r.status_code for r in answered] == [200, 503, 200]  # readyz: no index, by design
            assert not any(q.done() for q in queued)  # the model really was busy throughout
        assert {q.result(timeout=120).status_code for q in queued} == {200}


def test_metrics_and_docs_need_the_key_when_keys_are_set(with_api, corpus):
    keyed = TestClient(create_app(with_api(api_keys=[KEY]), corpus))
    auth = {"Authorization": f"Bearer {KEY}"}
    for path in ("/metrics", "/docs", "/redoc", "/openapi.json"):
        assert keyed.get(path).status_code == 401, path
        assert keyed.get(path, headers=auth).status_code == 200, path
    assert keyed.get("/healthz").status_code == 200 and keyed.get("/readyz").status_code == 503  # probes stay open
    opened = TestClient(create_app(with_api(api_keys=[KEY], protect_metrics_and_docs=False), corpus))
    assert opened.get("/metrics").status_code == 200 and opened.get("/openapi.json").status_code == 200
    assert TestClient(create_app(with_api(), corpus)).get("/docs").status_code == 200  # no keys: all open


def test_a_chunked_body_over_the_limit_is_413_too(keyed):
    def chunks():
        for _ in range(8):
            yield b" " * 512  # 4 KiB in all, no Content-Length: the limit is 2 KiB

    r = keyed.post("/v1/query", content=chunks(), headers={"Authorization": f"Bearer {KEY}",
                                                           "content-type": "application/json"})  # fmt: skip
    assert r.status_code == 413 and "api.max_body_bytes" in r.text


def test_metrics_count_curve_jobs_and_never_wait_for_the_database(settings, corpus, monkeypatch):
    """ragft_jobs had no curve kind, and a scrape counted jobs in SQLite under the store's lock inside the event
    loop: a busy database stalled every request. It reads the worker's snapshot now."""
    from ragft.service.app.api.job_store import JobStore

    client = TestClient(create_app(settings, corpus))  # no lifespan: the curve stays queued
    assert client.post("/v1/curves", json={"arms": ["lora"], "limit": 1}).status_code == 202
    assert 'ragft_jobs{kind="curve",status="queued"} 1.0' in client.get("/metrics").text

    def stuck(self):
        time.sleep(5)  # a database held by a long write
        return {}

    monkeypatch.setattr(JobStore, "job_counts", stuck)
    started = time.perf_counter()
    text = client.get("/metrics").text
    assert time.perf_counter() - started < 2 and 'ragft_jobs{kind="curve",status="queued"} 1.0' in text
