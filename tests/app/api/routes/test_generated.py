"""/v1/corpora/{name}/generated: generated rows listed for review with their span, decided with the reviewer's name."""

import json

import pytest
from fastapi.testclient import TestClient
from ragft.eval.corpus.generation_rows import GENERATED_FILE, read_generated
from ragft.eval.tasks import load_tasks
from ragft.service.app.api.main import create_app

META = {"model": "scripted", "prompt_version": "knowledge-1"}
ROWS = [
    {"id": "gen-k-0000000001", "family": "knowledge", "split": "train", "question": "What is the K4's firmware version?",
     "answers": ["1.2.3"], "source_docs": ["kestrel-k4"],
     "generated": META | {"item": "gen-k-0000000001", "source_doc": "kestrel-k4", "span": "Its firmware version is 1.2.3."}},
    {"id": "gen-k-0000000001-p", "family": "knowledge", "split": "test", "kind": "paraphrase",
     "paraphrase_of": "gen-k-0000000001", "question": "Which firmware does the Kestrel K4 run?", "answers": ["1.2.3"],
     "source_docs": ["kestrel-k4"],
     "generated": META | {"item": "gen-k-0000000001", "source_doc": "kestrel-k4", "span": "Its firmware version is 1.2.3."}},
    {"id": "gen-n-0000000002", "family": "abstention", "split": "test", "kind": "near_miss",
     "question": "What does the Kestrel K7 weigh?",
     "generated": {"model": "none", "prompt_version": "near-miss-1", "item": "gen-n-0000000002", "span": "Kestrel K4"}},
]  # fmt: skip


@pytest.fixture
def client(settings, corpus):
    lines = [json.dumps(r | {"review": {"status": "pending"}}) for r in ROWS]
    (corpus / "tasks" / GENERATED_FILE).write_text("\n".join(lines) + "\n")
    return TestClient(create_app(settings, corpus))


def test_pending_rows_are_listed_per_family_with_their_span(client, corpus):
    out = client.get(f"/v1/corpora/{corpus.name}/generated").json()
    assert out["counts"] == {"knowledge": {"pending": 1, "accepted": 0, "edited": 0, "rejected": 0},
                             "abstention": {"pending": 1, "accepted": 0, "edited": 0, "rejected": 0}}  # fmt: skip
    item = out["items"][0]
    assert item["item"] == "gen-k-0000000001" and item["span"] == "Its firmware version is 1.2.3."
    assert item["paraphrase"] == "Which firmware does the Kestrel K4 run?" and item["splits"] == ["train", "test"]
    only = client.get(f"/v1/corpora/{corpus.name}/generated", params={"family": "abstention"}).json()
    assert [i["item"] for i in only["items"]] == ["gen-n-0000000002"]
    assert client.get("/v1/corpora/other/generated").status_code == 404


def test_decisions_are_stored_with_the_reviewer_and_change_what_a_run_counts(client, corpus):
    url = f"/v1/corpora/{corpus.name}/generated"
    assert "gen-k-0000000001-p" not in {r.id for r in load_tasks(corpus)}
    r = client.put(f"{url}/gen-k-0000000001", json={"decision": "edit", "reviewer": "Ada",
                                                     "edits": {"paraphrase": "Which firmware runs on a K4?"}})  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "edited" and r.json()["reviewer"] == "Ada"
    assert client.put(f"{url}/gen-n-0000000002", json={"decision": "reject", "reviewer": "Ada"}).status_code == 200
    counted = {r.id: r for r in load_tasks(corpus)}
    assert counted["gen-k-0000000001-p"].text == "Which firmware runs on a K4?" and "gen-n-0000000002" not in counted
    assert client.get(url).json()["items"] == []
    stored = {r.id: r for r in read_generated(corpus / "tasks" / GENERATED_FILE)}
    assert stored["gen-n-0000000002"].review.status == "rejected" and stored["gen-n-0000000002"].review.at


@pytest.mark.parametrize(
    ("item", "body", "status"),
    [
        ("gen-k-0000000001", {"decision": "edit", "reviewer": "Ada", "edits": {"answer": "9.9.9"}}, 422),
        ("gen-k-0000000001", {"decision": "edit", "reviewer": "Ada", "edits": {"label": "x"}}, 422),
        ("gen-k-0000000001", {"decision": "accept", "reviewer": ""}, 422),
        ("gen-k-0000000001", {"decision": "maybe", "reviewer": "Ada"}, 422),
        ("gen-k-9999999999", {"decision": "accept", "reviewer": "Ada"}, 404),
        ("..%2Ftasks", {"decision": "accept", "reviewer": "Ada"}, 404),
    ],
)
def test_bad_decisions_are_refused_and_change_nothing(client, corpus, item, body, status):
    before = (corpus / "tasks" / GENERATED_FILE).read_bytes()
    r = client.put(f"/v1/corpora/{corpus.name}/generated/{item}", json=body)
    assert r.status_code in (status, 422 if status == 404 else status), r.text
    assert (corpus / "tasks" / GENERATED_FILE).read_bytes() == before


def test_a_read_only_key_cannot_decide(settings, corpus):
    from pydantic import SecretStr

    keyed = settings.model_copy(update={"api": settings.api.model_copy(update={
        "api_keys": [SecretStr("admin-key-0123456789")], "read_only_keys": [SecretStr("reader-key-0123456789")]})})  # fmt: skip
    (corpus / "tasks" / GENERATED_FILE).write_text(json.dumps(ROWS[2] | {"review": {"status": "pending"}}) + "\n")
    client = TestClient(create_app(keyed, corpus))
    url = f"/v1/corpora/{corpus.name}/generated/gen-n-0000000002"
    body = {"decision": "accept", "reviewer": "Ada"}
    assert client.put(url, json=body).status_code == 401
    assert client.put(url, json=body, headers={"Authorization": "Bearer reader-key-0123456789"}).status_code == 403
    ok = client.put(url, json=body, headers={"Authorization": "Bearer admin-key-0123456789"})
    assert ok.status_code == 200 and ok.json()["status"] == "accepted"
