import pytest
from fastapi.testclient import TestClient
from ragft.service.app.api.main import create_app


@pytest.fixture
def client(settings, corpus):
    client = TestClient(create_app(settings, corpus))
    client.app.state.runtime.index()
    return client


def passages(client, question):
    body = client.post("/v1/query", json={"question": question, "arms": ["rag"], "top_k": 5}).json()
    return {p["doc_id"] for p in body["answers"][0]["passages"]}


def test_put_then_delete_a_document_updates_the_index_at_once(client, corpus):
    name = corpus.name
    listed = client.get("/v1/corpora").json()
    assert {"name": name, "served": True, "document_files": 3, "index_present": True} in listed
    r = client.put(f"/v1/corpora/{name}/documents/dock", json={"text": "The dock costs $249 and has a battery."})
    assert r.status_code == 200, r.text
    assert r.json()["added"] == ["dock"] and r.json()["chunks_embedded"] == 1  # only the new document embedded
    assert r.json()["unreadable"] == []
    assert "dock" in passages(client, "how much does the dock cost ?")
    replaced = client.put(f"/v1/corpora/{name}/documents/dock", json={"text": "The dock is discontinued."})
    assert replaced.json()["updated"] == ["dock"]
    gone = client.delete(f"/v1/corpora/{name}/documents/dock")
    assert gone.status_code == 200 and gone.json()["deleted"] == ["dock"]
    assert "dock" not in passages(client, "how much does the dock cost ?")
    assert not (corpus / "documents" / "dock.md").exists()


def test_an_empty_document_is_refused_and_nothing_stored_changes(client, corpus):
    before = (corpus / "documents" / "kestrel-k4.txt").read_bytes()
    r = client.put(f"/v1/corpora/{corpus.name}/documents/kestrel-k4", json={"text": "   "})
    assert r.status_code == 422 and "text" in r.text
    assert (corpus / "documents" / "kestrel-k4.txt").read_bytes() == before
    assert not (corpus / "documents" / "kestrel-k4.md").exists()
    assert "kestrel-k4" in passages(client, "how much is a kestrel k4 ?")


@pytest.mark.parametrize(
    ("method", "url", "status"),
    [
        ("put", "/v1/corpora/{name}/documents/..%2F..%2Fescape", (404, 422)),
        ("put", "/v1/corpora/{name}/documents/.hidden", (422,)),
        ("put", "/v1/corpora/other/documents/doc", (404,)),
        ("put", "/v1/corpora/..%2F..%2Fetc/documents/doc", (404, 422)),
        ("delete", "/v1/corpora/{name}/documents/missing", (404,)),
    ],
)
def test_ids_cannot_leave_the_corpus(client, corpus, tmp_path, method, url, status):
    r = client.request(method.upper(), url.format(name=corpus.name), json={"text": "x y z"})
    assert r.status_code in status, r.text
    assert not (tmp_path / "escape.md").exists() and not list(tmp_path.glob("*.md"))


def test_a_document_over_the_size_limit_is_413_and_nothing_changes(with_api, corpus):
    client = TestClient(create_app(with_api(max_document_bytes=100), corpus))
    r = client.put(f"/v1/corpora/{corpus.name}/documents/dock", json={"text": "The dock is big. " * 10})
    assert r.status_code == 413 and "api.max_document_bytes" in r.text
    assert not (corpus / "documents" / "dock.md").exists()


def test_a_document_put_does_not_wait_for_a_running_generation(client, corpus):
    """The re-index runs under the index lock only: a generation holding the model lock does not block it."""
    import threading

    runtime = client.app.state.runtime
    holding, release = threading.Event(), threading.Event()

    def generate() -> None:
        with runtime.lock:  # what a long batch of answers does
            holding.set()
            release.wait(30)

    worker = threading.Thread(target=generate)
    worker.start()
    try:
        holding.wait(5)
        r = client.put(f"/v1/corpora/{corpus.name}/documents/dock", json={"text": "The dock costs $249."})
        assert r.status_code == 200 and r.json()["added"] == ["dock"]  # done while the model lock was held
        assert worker.is_alive()
    finally:
        release.set()
        worker.join()
    assert "dock" in passages(client, "how much does the dock cost ?")


def test_delete_and_put_match_document_ids_and_refuse_multi_document_files(client, corpus):
    """`faq` names faq.jsonl, which holds faq-1 and faq-2: deleting it would remove both, so it is a 409; a row of
    that file cannot be replaced alone either. Nothing changes."""
    rows = '{"id": "faq-1", "text": "The dock ships in May."}\n{"id": "faq-2", "text": "The K2 has two antennas."}\n'
    (corpus / "documents" / "faq.jsonl").write_text(rows)
    client.app.state.runtime.index()
    for method, doc_id in (("DELETE", "faq"), ("PUT", "faq"), ("DELETE", "faq-1"), ("PUT", "faq-1")):
        r = client.request(method, f"/v1/corpora/{corpus.name}/documents/{doc_id}", json={"text": "new text"})
        assert r.status_code == 409, (method, doc_id, r.text)
        assert "faq.jsonl" in r.json()["detail"] and "2" in r.json()["detail"]
    assert (corpus / "documents" / "faq.jsonl").read_text() == rows
    assert not (corpus / "documents" / "faq.md").exists() and not (corpus / "documents" / "faq-1.md").exists()


def test_document_changes_past_the_limit_get_429_without_taking_a_thread(with_api, corpus):
    """api.max_document_changes: a PUT past the changes already waiting for the index lock is refused at once."""
    import threading
    import time

    from ragft.service.retrieval import index_lock

    client = TestClient(create_app(with_api(max_document_changes=1), corpus))
    runtime = client.app.state.runtime
    runtime.index()
    results: list[int] = []
    with index_lock(runtime.index_dir):  # a long re-index holds the index
        first = threading.Thread(
            target=lambda: results.append(
                client.put(f"/v1/corpora/{corpus.name}/documents/a", json={"text": "The dock is red."}).status_code
            )
        )
        first.start()
        deadline = time.monotonic() + 10
        while client.app.state.document_changes._value and time.monotonic() < deadline:
            time.sleep(0.02)  # until the first PUT holds the one slot
        r = client.put(f"/v1/corpora/{corpus.name}/documents/b", json={"text": "The dock is blue."})
        assert r.status_code == 429 and "api.max_document_changes" in r.text and r.headers["Retry-After"]
    first.join(30)
    assert results == [200]
    assert not (corpus / "documents" / "b.md").exists()


TEAM_FILES = __import__("pathlib").Path(__file__).parents[3] / "data" / "team_files"


def _file(name: str, data: bytes) -> dict:
    import base64

    return {"name": name, "content_base64": base64.b64encode(data).decode()}


def test_post_corpora_makes_a_corpus_from_uploaded_files(client, corpus, settings):
    questions = b"question,answer\nWho patented the typewriter?,Christopher Latham Sholes\nWhat does the K9 cost?,\n"
    body = {"name": "team", "questions": _file("faq.csv", questions),
            "documents": [_file("multi_page.pdf", (TEAM_FILES / "multi_page.pdf").read_bytes()),
                          _file("scan.pdf", (TEAM_FILES / "ocr_test.pdf").read_bytes())]}  # fmt: skip
    r = client.post("/v1/corpora", json=body)
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["rows"] == 2 and [u["file"] for u in made["unreadable"]] == ["scan.pdf"]
    assert "answers located in the documents: 1 of 1 (100%)" in made["summary"]
    team = corpus.parent / "team"
    assert (team / "tasks" / "questions.jsonl").is_file() and (team / "documents" / "multi_page.pdf").is_file()
    assert not any((settings.data_dir / "uploads").iterdir())  # the upload is cleaned away
    assert client.post("/v1/corpora", json=body).status_code == 409  # nothing stored is overwritten
    listed = {c["name"]: c for c in client.get("/v1/corpora").json()}
    assert listed["team"]["served"] is False and listed["team"]["document_files"] == 2


@pytest.mark.parametrize(
    ("change", "status", "message"),
    [
        ({"name": "../escape"}, 422, "name"),
        ({"documents": [_file("../x.pdf", b"x")]}, 422, "name"),
        ({"documents": [_file("a.txt", b"x")], "questions": {"name": "q.csv", "content_base64": "%%%"}}, 422, "base64"),
        (
            {"documents": [_file("a.txt", b"text")], "questions": _file("q.csv", b"frage\nWhat?\n")},
            422,
            "no question column",
        ),
    ],
)
def test_post_corpora_refuses_bad_uploads_and_writes_nothing(client, corpus, change, status, message):
    body = {"name": "bad", "documents": [_file("a.txt", b"The K2 costs $249.")],
            "questions": _file("q.csv", b"question,answer\nWhat does the K2 cost?,$249\n")} | change  # fmt: skip
    r = client.post("/v1/corpora", json=body)
    assert r.status_code == status and message in r.text
    assert not (corpus.parent / "bad").exists()


def test_a_document_change_lists_the_files_the_index_could_not_read(client, corpus):
    (corpus / "documents" / "scan.pdf").write_bytes((TEAM_FILES / "ocr_test.pdf").read_bytes())
    r = client.put(f"/v1/corpora/{corpus.name}/documents/dock", json={"text": "The dock costs $249."})
    assert r.status_code == 200, r.text
    [unread] = r.json()["unreadable"]
    assert unread["file"] == "scan.pdf" and "text layer" in unread["reason"] and "OCR" in unread["fix"]
