"""Start-up: closed by default (no open API on the network), private storage, no secrets written."""

import pytest
from fastapi.testclient import TestClient
from ragft.service.app import cli
from ragft.service.app.api.main import check_binding, create_app
from ragft.service.logs import configure_logging
from typer.testing import CliRunner

from tests.app.api.conftest import KEY


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_needs_no_key(settings, host):
    assert check_binding(host, settings, insecure=False) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "ragft.example.org"])
def test_a_network_interface_without_keys_is_refused_unless_insecure(settings, with_api, host):
    with pytest.raises(ValueError, match="RAGFT_API__API_KEYS") as refused:
        check_binding(host, settings, insecure=False)
    assert "--insecure" in str(refused.value)
    assert "INSECURE" in check_binding(host, settings, insecure=True)
    assert check_binding(host, with_api(api_keys=[KEY]), insecure=False) is None


def test_ragft_serve_refuses_0000_without_keys_and_warns_with_insecure(settings, corpus, monkeypatch, capfd):
    import uvicorn

    served = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.append((app, kw)))
    monkeypatch.setattr(cli, "build_settings", lambda overrides: settings)
    refused = CliRunner().invoke(cli.app, ["serve", "--host", "0.0.0.0", "--corpus", str(corpus)])
    assert refused.exit_code == 2 and "RAGFT_API__API_KEYS" in refused.output and served == []
    try:
        opened = CliRunner().invoke(cli.app, ["serve", "--host", "0.0.0.0", "--corpus", str(corpus), "--insecure"])
    finally:
        configure_logging("text", "WARNING")  # serve configured JSON logs for the process
    assert opened.exit_code == 0, opened.output
    assert served[0][1]["host"] == "0.0.0.0" and served[0][0].state.runtime.corpus == corpus
    assert "INSECURE" in capfd.readouterr().err + opened.output


def test_what_the_service_writes_is_private_to_its_user(settings, corpus):
    client = TestClient(create_app(settings, corpus))
    client.app.state.runtime.index()
    assert (
        client.put(f"/v1/corpora/{corpus.name}/documents/dock", json={"text": "The dock costs $89."}).status_code == 200
    )
    assert settings.data_dir.stat().st_mode & 0o777 == 0o700
    for path in settings.data_dir.rglob("*"):
        assert path.stat().st_mode & 0o077 == 0, f"{path} is open to others ({oct(path.stat().st_mode)})"
    assert (corpus / "documents" / "dock.md").stat().st_mode & 0o077 == 0


def test_a_run_writes_no_configured_secret_anywhere(with_api, full_corpus, tmp_path):
    """Every file a run writes (database, reports, run config) is scanned for each configured secret."""
    secrets = {"api": "api-key-0123456789abcdef", "backend": "backend-key-0123456789", "judge": "judge-key-0123456789"}
    settings = with_api(api_keys=[secrets["api"]])
    settings = settings.model_copy(update={
        "models": settings.models.model_copy(update={"backend_api_key": settings.models.model_validate(
            {**settings.models.model_dump(), "backend_api_key": secrets["backend"]}).backend_api_key}),
        "eval": settings.eval.model_validate({**settings.eval.model_dump(), "judge_api_key": secrets["judge"],
                                              "reports_dir": tmp_path / "reports", "rows_per_batch": 4}),
    })  # fmt: skip
    auth = {"Authorization": f"Bearer {secrets['api']}"}
    with TestClient(create_app(settings, full_corpus)) as client:
        client.app.state.runtime.index()
        run = client.post("/v1/runs", json={"arms": ["base"], "families": ["knowledge"], "limit": 2}, headers=auth)
        assert run.status_code == 202, run.text
        import time

        deadline = time.time() + 240
        while (job := client.get(f"/v1/runs/{run.json()['id']}", headers=auth).json())["status"] not in (
            "done", "failed") and time.time() < deadline:  # fmt: skip
            time.sleep(0.2)
        assert job["status"] == "done", job
        served = client.get(f"/v1/runs/{run.json()['id']}/report.json", headers=auth).text
    written = [p for root in (settings.data_dir, tmp_path / "reports") for p in root.rglob("*") if p.is_file()]
    assert any(p.name == "results.json" for p in written)
    for path in written:
        content = path.read_bytes()
        for name, secret in secrets.items():
            assert secret.encode() not in content, f"the {name} key is in {path}"
    assert not any(secret in served for secret in secrets.values())


@pytest.mark.parametrize(
    ("host", "keyed", "status"),
    [
        ("localhost:8000", False, 200),
        ("127.0.0.1:8000", False, 200),
        ("[::1]:8000", False, 200),
        ("attacker.example:8000", False, 400),  # a DNS-rebinding page's requests carry its own host name
        ("testserver", False, 400),
        ("attacker.example", True, 200),  # with keys the key is the guard: any host
    ],
)
def test_a_keyless_server_answers_loopback_host_names_only(with_api, corpus, host, keyed, status):
    settings = with_api(allowed_hosts=None, api_keys=[KEY] if keyed else [])
    client = TestClient(create_app(settings, corpus), headers={"Authorization": f"Bearer {KEY}"} if keyed else {})
    r = client.put("/v1/corpora/corpus/documents/new", json={"text": "The K9 costs $5."}, headers={"host": host})
    assert r.status_code == status, r.text
    listed = TestClient(create_app(with_api(allowed_hosts=["ragft.internal"]), corpus))
    assert listed.get("/v1/models", headers={"host": "ragft.internal:80"}).status_code == 200
    assert listed.get("/v1/models", headers={"host": "localhost"}).status_code == 400  # a set list replaces the default


def test_an_artifact_swap_killed_between_its_renames_is_finished_at_start_up(settings, corpus):
    """kill -9 after `lora` was renamed aside and before the new build took its place: the next start puts the
    new build in place, so the arm answers instead of 409 until someone retrains."""
    root = settings.artifact_dir / "adapters" / corpus.resolve().name
    for name, created in (("lora.old-1-aa", "old"), ("lora.tmp-1-aa", "new")):
        (root / name).mkdir(parents=True)
        (root / name / "manifest.json").write_text(created)
    (root / "rag_lora" / "questions.tmp-2-bb").mkdir(parents=True)  # a dead build that never finished
    create_app(settings, corpus)
    assert (root / "lora" / "manifest.json").read_text() == "new"
    assert sorted(p.name for p in root.iterdir() if not p.name.endswith(".lock")) == ["lora", "rag_lora"]
    assert list((root / "rag_lora").iterdir()) == [] or all(
        p.name.endswith(".lock") for p in (root / "rag_lora").iterdir()
    )


def test_cors_origins_without_keys_are_refused_unless_insecure(settings, with_api):
    """Binding an open server to the network was refused; allowing other origins' pages in was not."""
    cors = with_api(cors_origins=["https://dashboard.example.org"])
    with pytest.raises(ValueError, match="RAGFT_API__CORS_ORIGINS") as refused:
        check_binding("127.0.0.1", cors, insecure=False)
    assert "RAGFT_API__API_KEYS" in str(refused.value) and "--insecure" in str(refused.value)
    assert "INSECURE" in check_binding("127.0.0.1", cors, insecure=True)
    assert check_binding("127.0.0.1", with_api(api_keys=[KEY], cors_origins=["https://a.example"]), False) is None
