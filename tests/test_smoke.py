"""End to end on the real embedded defaults: SmolLM2-135M-Instruct (GGUF) and all-MiniLM-L6-v2."""

import pytest
from fastapi.testclient import TestClient
from ragft.service.app.api.main import create_app
from ragft.service.arms import compare, parse_arms
from ragft.service.runtime import Runtime
from ragft.service.settings import LOOPBACK_HOSTS, ApiSettings, Settings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke")
    docs = root / "corpus" / "documents"
    docs.mkdir(parents=True)
    (docs / "kestrel.md").write_text("The Kestrel K14 Wi-Fi router costs $463 and runs firmware 2.1.4.")
    (docs / "osprey.md").write_text("The Osprey O3 security camera has a battery life of 31 hours.")
    (docs / "returns.md").write_text("Unused products may be returned within 45 days of delivery.")
    settings = Settings(
        data_dir=root / "data",
        artifact_dir=root / "data" / "artifacts",
        api=ApiSettings(allowed_hosts=[*LOOPBACK_HOSTS, "testserver"]),  # TestClient's Host: 'testserver'
    )
    return settings, root / "corpus"


def test_index_query_and_http_with_the_embedded_defaults(real):
    settings, corpus = real
    runtime = Runtime(settings, corpus)
    assert runtime.index().chunks_total == 3
    assert not runtime.index().changed
    base, rag = compare(runtime, "How much does the Kestrel K14 cost?", parse_arms("base,rag"), top_k=1)
    assert rag.passages[0].doc_id == "kestrel"  # the real embedder finds the right document
    assert "463" in rag.text  # and the real generator reads it
    assert base.passages == () and base.text

    client = TestClient(create_app(settings, corpus))
    r = client.post("/v1/query", json={"question": "How long is the return window?", "arms": ["rag"], "top_k": 1})
    assert r.status_code == 200 and r.json()["answers"][0]["passages"][0]["doc_id"] == "returns"
