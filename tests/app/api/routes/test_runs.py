import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from ragft.eval.families import FAMILIES
from ragft.eval.store import Store
from ragft.service.app.api.job_store import JobStore
from ragft.service.app.api.main import create_app


@pytest.fixture(autouse=True)
def full_length_answers(monkeypatch):
    """Questions are cut at 32 new tokens (eval/families.py); these tests need answers slow enough to act on a
    run while it is still going, so they lift the cut and use generation.max_new_tokens."""
    import dataclasses

    for name, family in list(FAMILIES.items()):
        monkeypatch.setitem(FAMILIES, name, dataclasses.replace(family, max_new_tokens=None))


def slow(settings):
    """Answers long enough that a run is still going while the test acts on it."""
    generation = settings.generation.model_copy(update={"max_new_tokens": 120, "batch_size": 1})
    return settings.model_copy(update={
        "generation": generation,
        "eval": settings.eval.model_copy(update={"rows_per_batch": 1, "reports_dir": settings.data_dir / "reports"}),
    })  # fmt: skip


def wait_for(client, run_id, statuses, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = client.get(f"/v1/runs/{run_id}").json()
        if job["status"] in statuses:
            return job
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} stayed {job['status']}: {job}")


RUN = {"arms": ["base", "rag"], "families": ["knowledge", "abstention"]}


def test_a_run_goes_from_queued_to_done_and_its_report_downloads(settings, corpus, caplog):
    caplog.set_level("INFO", logger="ragft.service.app.api.jobs")
    settings = slow(settings).model_copy(update={"generation": settings.generation})
    with TestClient(create_app(settings, corpus)) as client:
        started = client.post("/v1/runs", json=RUN)
        assert started.status_code == 202 and started.json()["status"] == "queued"
        run_id = started.json()["id"]
        job = wait_for(client, run_id, {"done", "failed"})
        assert job["status"] == "done", job
        assert [r["id"] for r in client.get("/v1/runs").json()] == [run_id]
        html = client.get(f"/v1/runs/{run_id}/report")
        assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
        assert client.get(f"/v1/runs/{run_id}/report.json").json()["run_id"] == job["run_id"]
        assert client.get(f"/v1/runs/{run_id}/report.md").text.startswith("# ragft report")
        assert client.get(f"/v1/runs/{job['run_id']}").json()["id"] == run_id  # the run id links to its job
    states = [(r.job_id, r.status) for r in caplog.records if hasattr(r, "job_id")]
    assert states == [(run_id, "started"), (run_id, "done")]


def test_restart_mid_run_lists_it_and_finishes_it(settings, full_corpus):
    settings = slow(settings)
    run = {"arms": ["base", "fewshot"], "families": ["knowledge", "abstention", "behaviour", "general"]}
    with TestClient(create_app(settings, full_corpus)) as client:
        run_id = client.post("/v1/runs", json=run).json()["id"]
        job = wait_for(client, run_id, {"evaluating"})
        while client.get(f"/v1/runs/{run_id}").json()["progress"].get("done", 0) < 1:
            time.sleep(0.05)
    # the service stopped gracefully: the job is checkpointed, not lost (enough rows that it cannot finish first)
    assert JobStore(settings.database).job(run_id).status == "interrupted"
    with TestClient(create_app(settings, full_corpus)) as client:
        assert run_id in [r["id"] for r in client.get("/v1/runs").json()]
        job = wait_for(client, run_id, {"done", "failed"})
        assert job["status"] == "done" and job["progress"].get("resumed")
    store = Store(settings.database)
    assert store.count(job["run_id"]) == job["progress"]["total"]  # every answer stored once, none twice


def test_fifty_concurrent_queries_succeed_while_a_run_is_in_progress(settings, corpus):
    settings = slow(settings)
    api = settings.api.model_copy(update={"max_queued_answers": 100})  # 50 queries x 2 arms all admitted at once
    settings = settings.model_copy(update={"api": api})
    with TestClient(create_app(settings, corpus)) as client:
        client.app.state.runtime.index()
        run_id = client.post("/v1/runs", json=RUN).json()["id"]
        wait_for(client, run_id, {"evaluating"})
        body = {"question": "what does the kestrel k2 cost ?", "arms": ["base", "rag"]}
        with ThreadPoolExecutor(max_workers=50) as pool:
            codes = list(pool.map(lambda _: client.post("/v1/query", json=body).status_code, range(50)))
        assert codes == [200] * 50
        assert client.get(f"/v1/runs/{run_id}").json()["status"] in ("evaluating", "done")
        cancelled = client.delete(f"/v1/runs/{run_id}").json()
        assert cancelled["id"] == run_id
        final = wait_for(client, run_id, {"cancelled", "done"})["status"]
        assert final == "cancelled" or cancelled["status"] == "done"  # a DELETE of a running job is never lost


def test_adapters_train_as_a_job(settings, full_corpus):
    with TestClient(create_app(settings, full_corpus)) as client:
        job = client.post("/v1/adapters", json={"arms": ["lora"]})
        assert job.status_code == 202
        deadline = time.time() + 60
        while client.get(f"/v1/adapters/{job.json()['id']}").json()["status"] not in ("done", "failed"):
            assert time.time() < deadline
            time.sleep(0.1)
        assert client.get(f"/v1/adapters/{job.json()['id']}").json()["status"] == "done"
        assert "lora" in [m["id"] for m in client.get("/v1/models").json()["data"]]


@pytest.mark.parametrize(
    ("method", "url", "body", "status"),
    [
        ("get", "/v1/runs/..%2F..%2Fetc%2Fpasswd", None, (404, 422)),  # decoded slashes match no route
        ("get", "/v1/runs/..", None, (404, 422)),
        ("get", "/v1/runs/.hidden/report", None, 422),
        ("get", "/v1/runs/run-does-not-exist", None, 404),
        ("get", "/v1/runs/run-does-not-exist/report", None, 404),
        ("post", "/v1/runs", {"corpus": "../../etc"}, 422),
        ("post", "/v1/runs", {"corpus": "nope"}, 404),
        ("post", "/v1/runs", {"arms": ["ragg"]}, 422),
        ("post", "/v1/runs", {"families": ["trivia"]}, 422),
        ("post", "/v1/runs", {"limit": 0}, 422),
        ("post", "/v1/runs", {"family_limits": {"behavior": None}}, 422),
        ("post", "/v1/runs", {"family_limits": {"behaviour": 0}}, 422),
        ("post", "/v1/adapters", {"arms": ["base"]}, 422),
        ("post", "/v1/runs", {"seed": -1}, 422),  # answered every row for hours, then failed building the report
        ("post", "/v1/runs", {"seed": 2**63}, 422),
        ("get", "/v1/runs?offset=9223372036854775808", None, 422),  # past SQLite's integers: was a 500
        ("get", "/v1/adapters?offset=9223372036854775807", None, 422),
    ],
)
def test_bad_run_requests(settings, corpus, method, url, body, status):
    client = TestClient(create_app(settings, corpus))
    r = client.request(method.upper(), url, json=body)
    assert r.status_code in (status if isinstance(status, tuple) else (status,)), r.text
    assert "root:" not in r.text


def test_a_run_request_can_give_a_family_its_own_limit_as_the_demo_does(settings, corpus):
    client = TestClient(create_app(settings, corpus))  # no lifespan: queued, not run; the request is what is checked
    job = client.post("/v1/runs", json={"limit": 2, "family_limits": {"behaviour": None}}).json()
    assert job["request"]["limit"] == 2 and job["request"]["family_limits"] == {"behaviour": None}


def test_the_schema_names_the_families_family_limits_accepts(settings, corpus):
    """A schema that allowed any key would call a 422 for an unknown family a rejected valid request."""
    schema = TestClient(create_app(settings, corpus)).get("/openapi.json").json()
    request = schema["components"]["schemas"]["RunRequest"]["properties"]["family_limits"]
    objects = [s for s in request.get("anyOf", [request]) if s.get("type") == "object"]
    assert objects and all(set(s["propertyNames"]["enum"]) == set(FAMILIES) for s in objects)


def test_identical_submissions_share_a_job_the_queue_is_capped_and_listing_pages(settings, corpus):
    capped = settings.model_copy(update={"api": settings.api.model_copy(update={"max_queued_jobs": 2})})
    client = TestClient(create_app(capped, corpus))  # no lifespan: the worker never starts, jobs stay queued
    first = client.post("/v1/runs", json=RUN).json()
    again = client.post("/v1/runs", json=RUN)
    assert again.status_code == 202 and again.json()["id"] == first["id"]  # the same work is not queued twice
    other = client.post("/v1/runs", json=RUN | {"limit": 1}).json()
    assert other["id"] != first["id"]
    full = client.post("/v1/runs", json=RUN | {"limit": 2})
    assert full.status_code == 429 and full.headers["retry-after"] and "api.max_queued_jobs" in full.json()["detail"]
    page = client.get("/v1/runs", params={"limit": 1, "offset": 1})
    assert [j["id"] for j in page.json()] == [other["id"]] and page.headers["x-total-count"] == "2"
    assert client.delete(f"/v1/runs/{other['id']}").json()["status"] == "cancelled"
    assert client.post("/v1/runs", json=RUN | {"limit": 2}).status_code == 202  # a cancelled job frees its place


def test_an_identical_http_run_is_the_cli_run_and_answers_nothing_again(settings, corpus, monkeypatch):
    """A run over HTTP is named by its inputs as `ragft eval` names it: after it finished, the same request
    re-renders it from the stored answers (no arm is asked again); `fresh` answers again under a new id."""
    from ragft.eval.running import runner
    from ragft.service.app import cli
    from typer.testing import CliRunner

    run = {"arms": ["base", "rag"], "families": ["knowledge"], "limit": 3}
    with TestClient(create_app(settings, corpus)) as client:
        first = wait_for(client, client.post("/v1/runs", json=run).json()["id"], {"done", "failed"})
        assert first["status"] == "done" and first["run_id"].startswith(corpus.name + "-"), first
        asked = []
        real_answer = runner.answer
        monkeypatch.setattr(runner, "answer", lambda *a, **k: asked.append(1) or real_answer(*a, **k))
        second = client.post("/v1/runs", json=run).json()
        assert second["id"] != first["id"]  # a new job, for a finished run ...
        second = wait_for(client, second["id"], {"done", "failed"})
        assert second["status"] == "done" and second["run_id"] == first["run_id"] and asked == []  # ... reused
        assert client.get(f"/v1/runs/{second['id']}/report.json").json()["run_id"] == first["run_id"]
        wider = wait_for(client, client.post("/v1/runs", json=run | {"families": ["knowledge", "abstention"]}).json()["id"],
                         {"done", "failed"})  # fmt: skip
        fresh = wait_for(client, client.post("/v1/runs", json=run | {"fresh": True}).json()["id"], {"done", "failed"})
        assert fresh["status"] == "done" and fresh["run_id"] != first["run_id"] and asked  # answered again
        assert fresh["request"]["fresh"] is True
    store = Store(settings.database)
    answers = store.count(first["run_id"])
    # another run (fresh false) takes the answers it shares with the first from the answer cache ...
    knowledge = [p for p in store.predictions(wider["run_id"]) if p.row_id.startswith("k")]
    assert wider["run_id"] != first["run_id"] and len(knowledge) == answers and all(p.reused for p in knowledge)
    assert store.reused(wider["run_id"]) < store.count(wider["run_id"])  # ... and answers the rest
    assert store.count(fresh["run_id"]) == answers and store.reused(fresh["run_id"]) == 0  # fresh: every one again
    store.close()
    monkeypatch.setattr(cli, "get_settings", lambda: settings)
    out = CliRunner().invoke(cli.app, ["eval", "--corpus", str(corpus), "--arms", "base,rag", "--families",
                                       "knowledge", "--limit", "3"])  # fmt: skip
    assert out.exit_code == 0, out.output
    assert f"Verdict for run {first['run_id']}" in out.stdout  # the CLI names the same run the same way


def test_routes_resolve_the_served_corpus_not_the_configured_one(settings, corpus):
    """`ragft serve --corpus X` with RAGFT_CORPUS naming another folder: runs and training default to X, X's own
    name is a valid corpus, and a missing sibling is a 404, never a 500."""
    other = settings.model_copy(update={"corpus": corpus.parent / "elsewhere"})  # not the served folder
    client = TestClient(create_app(other, corpus))  # no lifespan: jobs stay queued, their requests show the corpus
    default = client.post("/v1/runs", json=RUN | {"limit": 1})
    assert default.status_code == 202 and default.json()["request"]["corpus"] == corpus.name
    named = client.post("/v1/runs", json=RUN | {"corpus": corpus.name})
    assert named.status_code == 202 and named.json()["request"]["corpus"] == corpus.name
    trained = client.post("/v1/adapters", json={})
    assert trained.status_code == 202 and trained.json()["request"]["corpus"] == corpus.name
    assert client.app.state.jobs.corpus_folder(corpus.name) == corpus  # the worker runs the served folder
    missing = client.post("/v1/runs", json={"corpus": "elsewhere"})
    assert missing.status_code == 404 and "next to the served corpus" in missing.json()["detail"]
    assert client.get("/v1/corpora").status_code == 200
