"""Keys: checked before a body is read; admin keys change things, read-only keys ask and read; paths hidden."""

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app.api.main import create_app
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


@pytest.mark.parametrize(
    ("method", "url", "body", "reader_status"),
    [
        ("POST", "/v1/query", {"question": "k2 ?", "arms": ["base"]}, 200),
        ("GET", "/v1/models", None, 200),
        ("GET", "/v1/runs/missing/report", None, 404),
        ("PUT", "/v1/corpora/{name}/documents/dock", {"text": "The dock is red."}, 403),
        ("DELETE", "/v1/corpora/{name}/documents/kestrel-k2", None, 403),
        ("POST", "/v1/runs", {}, 403),
        ("GET", "/v1/runs", None, 403),
        ("POST", "/v1/adapters", {}, 403),
    ],
)
def test_read_only_keys_ask_and_read_admin_keys_change(keyed, method, url, body, reader_status):
    app, corpus = keyed
    client = TestClient(app)
    url = url.format(name=corpus.name)
    r = client.request(method, url, json=body, headers={"Authorization": f"Bearer {READER}"})
    assert r.status_code == reader_status, r.text
    if reader_status == 403:
        assert "api.api_keys" in r.json()["detail"]
        admin = client.request(method, url, json=body, headers={"Authorization": f"Bearer {KEY}"})
        assert admin.status_code != 403 and admin.status_code != 401


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
