"""Keys: checked before a body is read; admin keys change things, read-only keys ask and read; paths hidden."""

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from ragft.service.app.api.main import create_app

from tests.app.api.conftest import KEY

READER = "reader-key-0123456789abcdef"


@pytest.fixture
def keyed(with_api, corpus):
    app = create_app(with_api(api_keys=[KEY], read_only_keys=[READER]), corpus)
    return app, corpus


def test_a_request_without_a_key_is_refused_before_its_body_is_read(keyed):
    """Malformed JSON without a key is a 401 (it was a 422: the body was parsed first)."""
    app, corpus = keyed
    client = TestClient(app)
    r = client.post("/v1/query", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
    r = client.put(
        f"/v1/corpora/{corpus.name}/documents/x", content=b"x" * 5000, headers={"Authorization": "Bearer no"}
    )
    assert r.status_code == 401
    assert client.get("/healthz").status_code == 200  # probes stay open


# Every /v1 route of the app and whether a read-only key may call it (True) or gets 403 (False). A route added to
# the app without a line here fails `test_every_route_is_in_the_reader_table`.
READER_TABLE = {
    ("POST", "/v1/query"): True,
    ("POST", "/v1/query/batch"): True,
    ("POST", "/v1/chat/completions"): True,
    ("GET", "/v1/models"): True,
    ("GET", "/v1/arms"): True,  # the ask page's arms and which to tick
    ("GET", "/v1/results"): True,
    ("GET", "/v1/results/{run_id}"): True,
    ("GET", "/v1/results/{run_id}/rows"): True,
    ("GET", "/v1/results/{run_id}/rows/{row_id}"): True,
    ("GET", "/v1/results/{run_id}/reviews"): True,
    ("GET", "/v1/results/{run_id}/files/{name:path}"): True,
    ("PUT", "/v1/results/{run_id}/reviews/{arm}/{row_id}"): False,
    ("DELETE", "/v1/results/{run_id}/reviews/{arm}/{row_id}"): False,
    ("POST", "/v1/results/{run_id}/reviewed-report"): False,
    ("GET", "/v1/compare/{run_a}/{run_b}"): True,  # the UI's compare page (it was 403 for readers)
    ("GET", "/v1/runs/{run_id}/report"): True,
    ("GET", "/v1/runs/{run_id}/report.json"): True,
    ("GET", "/v1/runs/{run_id}/report.md"): True,
    ("GET", "/v1/curves/{curve_id}/report"): True,  # as /v1/runs/<curve job>/report already served it
    ("GET", "/v1/curves/{curve_id}/report.json"): True,
    ("GET", "/v1/curves/{curve_id}/report.md"): True,
    ("POST", "/v1/runs"): False,
    ("GET", "/v1/runs"): False,  # jobs show their requests and errors: operators only
    ("GET", "/v1/runs/{run_id}"): False,
    ("DELETE", "/v1/runs/{run_id}"): False,
    ("POST", "/v1/adapters"): False,
    ("GET", "/v1/adapters"): False,
    ("GET", "/v1/adapters/{job_id}"): False,
    ("POST", "/v1/curves"): False,
    ("GET", "/v1/curves"): False,
    ("GET", "/v1/curves/{curve_id}"): False,
    ("DELETE", "/v1/curves/{curve_id}"): False,
    ("GET", "/v1/corpora"): False,
    ("POST", "/v1/corpora"): False,
    ("PUT", "/v1/corpora/{name}/documents/{doc_id}"): False,
    ("DELETE", "/v1/corpora/{name}/documents/{doc_id}"): False,
    ("GET", "/v1/corpora/{name}/generated"): False,  # generated rows under review: the corpus's owners
    ("PUT", "/v1/corpora/{name}/generated/{item}"): False,
}
PARAMS = {"run_id": "missing-run", "run_a": "missing-a", "run_b": "missing-b", "curve_id": "missing-curve",
          "job_id": "missing-job", "row_id": "k1", "arm": "base", "doc_id": "kestrel-k2",
          "item": "gen-k-0123456789"}  # fmt: skip


def _routes(app) -> set[tuple[str, str]]:
    """(method, path template) of every /v1 route, through the routers included in the app (included without a
    prefix of their own, so each route's path is whole)."""
    from fastapi.routing import APIRoute

    found, routes = set(), list(app.routes)
    while routes:
        route = routes.pop()
        if hasattr(route, "original_router"):  # FastAPI 0.165: an included router, resolved lazily
            routes.extend(route.original_router.routes)
        elif isinstance(route, APIRoute) and route.path.startswith("/v1/"):
            found |= {(method, route.path) for method in route.methods}
    return found


def test_every_route_is_in_the_reader_table(keyed):
    app, _ = keyed
    assert _routes(app) == set(READER_TABLE)


@pytest.mark.parametrize(("method", "route"), sorted(READER_TABLE))
def test_read_only_keys_ask_and_read_admin_keys_change(keyed, method, route):
    """Route by route: a reader key gets 403 exactly where the table says, an admin key never does."""
    app, corpus = keyed
    client = TestClient(app)
    url = route.replace("{name:path}", "report.html").format(**PARAMS, name=corpus.name)
    body = {"question": "k2 ?", "arms": ["base"]} if route == "/v1/query" else {}
    r = client.request(method, url, json=body if method in ("POST", "PUT") else None,
                       headers={"Authorization": f"Bearer {READER}"})  # fmt: skip
    if READER_TABLE[(method, route)]:
        assert r.status_code not in (401, 403), r.text
    else:
        assert r.status_code == 403 and "api.api_keys" in r.json()["detail"], r.text
        admin = client.request(method, url, json=body if method in ("POST", "PUT") else None,
                               headers={"Authorization": f"Bearer {KEY}"})  # fmt: skip
        assert admin.status_code not in (401, 403), admin.text


def test_job_requests_store_corpus_names_and_errors_hide_server_paths(settings, corpus):
    client = TestClient(create_app(settings, corpus))
    job = client.post("/v1/adapters", json={"arms": ["lora"]}).json()
    stored = client.app.state.jobs.store.job(job["id"])
    assert stored.request["corpus"] == corpus.name and job["request"]["corpus"] == corpus.name
    client.app.state.jobs.store.update_job(job["id"], "failed", error=f"FileNotFoundError: {corpus}/tasks/x.jsonl")
    shown = client.get(f"/v1/adapters/{job['id']}").json()
    assert str(corpus) not in shown["error"] and "x.jsonl" in shown["error"]
    assert client.app.state.jobs.corpus_folder(corpus.name) == corpus


def test_readyz_hides_the_model_folders_in_a_warm_up_error(settings, corpus):
    client = TestClient(create_app(settings, corpus))
    folder = Path(settings.models.generator)
    client.app.state.runtime.warm_up_error = f"OSError: {folder}/model.safetensors is not readable"
    body = client.get("/readyz").json()
    assert str(folder) not in body["error"] and "model.safetensors" in body["error"]
