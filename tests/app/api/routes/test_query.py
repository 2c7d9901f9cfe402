import json

import pytest
from fastapi.testclient import TestClient
from ragft.service.app.api.main import create_app


@pytest.fixture
def client(settings, corpus):
    return TestClient(create_app(settings, corpus))


def test_healthz(client):
    assert client.get("/healthz").json() == {"status": "ok"}


def test_query_returns_every_arm_with_passages(client):
    client.app.state.runtime.index()
    r = client.post("/v1/query", json={"question": "what is the price ?", "arms": ["base", "rag", "RAG"], "top_k": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [a["arm"] for a in body["answers"]] == ["base", "rag"]
    base, rag = body["answers"]
    assert base["passages"] == [] and len(rag["passages"]) == 2
    assert {"doc_id", "chunk_id", "text", "score"} <= set(rag["passages"][0])
    assert rag["prompt_tokens"] > base["prompt_tokens"] > 0 and rag["latency_ms"] > 0


def test_arms_lists_every_arm_whether_it_can_answer_and_what_a_query_runs_by_default(client):
    before = {a["name"]: a for a in client.get("/v1/arms").json()}
    assert list(before) == ["base", "fewshot", "rag", "lora", "rag_lora", "scratch"]
    assert [n for n, a in before.items() if a["asked_by_default"]] == ["base", "rag"]
    assert [n for n, a in before.items() if a["ready"]] == ["base", "fewshot"]  # no index, no adapters yet
    assert before["rag_lora"]["label"] == "RAG + LoRA" and before["rag_lora"]["adapter"] == "rag_lora"
    client.app.state.runtime.index()
    ready = [a["name"] for a in client.get("/v1/arms").json() if a["ready"]]
    assert ready == ["base", "fewshot", "rag"] == [m["id"] for m in client.get("/v1/models").json()["data"]]
    # a query naming no arms runs those
    r = client.post("/v1/query", json={"question": "what is the price ?", "max_new_tokens": 2})
    assert r.status_code == 200 and [a["arm"] for a in r.json()["answers"]] == ["base", "rag"]


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"question": "q", "arms": ["ragg"]}, 422, "unknown arm 'ragg'"),
        ({"question": "", "arms": ["base"]}, 422, "question"),
        ({"arms": ["base"]}, 422, "question"),
        ({"question": "q", "arms": []}, 422, "arms"),
        ({"question": "q", "top_k": 0}, 422, "top_k"),
        ({"question": "q", "top_k": 21}, 422, "top_k=21 exceeds the limit of 20"),
        ({"question": "x" * 2001}, 413, "the limit is 2000 (api.max_question_chars)"),
        ({"questions": ["q"] * 65}, 413, "65 questions in one batch; the limit is 64 (api.max_batch_questions)"),
        ({"questions": []}, 422, "questions"),
        ({"questions": ["q", " "]}, 422, '"questions",1]'),
        ({"questions": ["q", "x" * 2001]}, 413, "question 1 is 2001 characters"),
        ({"questions": ["q"], "top_k": 21}, 422, "(api.max_top_k)"),
        ({"question": "q", "max_new_tokens": 0}, 422, "max_new_tokens"),
        ({"question": "q", "max_new_tokens": 513}, 422, "max_new_tokens=513 exceeds the limit of 512 (api.max_tokens)"),
        ({"questions": ["q"], "max_new_tokens": 513}, 422, "(api.max_tokens)"),
    ],
)
def test_bad_requests_are_4xx_naming_the_field(client, body, status, fragment):
    r = client.post("/v1/query/batch" if "questions" in body else "/v1/query", json=body)
    assert r.status_code == status
    assert fragment in r.text


def test_max_new_tokens_caps_each_answer(client):
    r = client.post("/v1/query", json={"question": "what is the price ?", "arms": ["base"], "max_new_tokens": 3})
    assert r.status_code == 200, r.text
    assert 0 < r.json()["answers"][0]["generated_tokens"] <= 3
    r = client.post("/v1/query/batch", json={"questions": ["a ?", "b ?"], "arms": ["base"], "max_new_tokens": 2})
    assert all(res["answers"][0]["generated_tokens"] <= 2 for res in r.json()["results"])


def test_rag_without_index_and_untrained_adapter_are_409(client):
    r = client.post("/v1/query", json={"question": "what is the price ?", "arms": ["rag"]})
    assert r.status_code == 409 and "ragft index" in r.json()["detail"]
    r = client.post("/v1/query", json={"question": "what is the price ?", "arms": ["lora"]})
    assert r.status_code == 409 and "ragft train" in r.json()["detail"]
    r = client.post("/v1/query", json={"question": "what is the price ?", "arms": ["base"]})
    assert r.status_code == 200  # the base arm needs neither


def test_batch_answers_each_question_with_each_arm_in_order(client):
    client.app.state.runtime.index()
    questions = ["what is the price ?", "how long does the camera battery last ?", "k4 firmware ?"]
    r = client.post("/v1/query/batch", json={"questions": questions, "arms": ["base", "rag"], "top_k": 1})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["question"] for x in results] == questions
    assert all([a["arm"] for a in x["answers"]] == ["base", "rag"] for x in results)
    assert {a["batch_size"] for x in results for a in x["answers"]} == {3}  # generated together
    single = client.post("/v1/query", json={"question": questions[1], "arms": ["rag"], "top_k": 1}).json()
    assert results[1]["answers"][1]["passages"][0]["chunk_id"] == single["answers"][0]["passages"][0]["chunk_id"]
    assert results[1]["answers"][1]["prompt_tokens"] == single["answers"][0]["prompt_tokens"]


def hold_the_model(client, body, path="/v1/query"):
    """Start `body` in a thread while the model lock is held here; wait until its batch is taken (and blocked)."""
    import threading
    import time

    coalescer = client.app.state.coalescer
    result = {}
    thread = threading.Thread(target=lambda: result.update(r=client.post(path, json=body)))
    thread.start()
    while (coalescer._admitted == 0 or coalescer.queued) and thread.is_alive():
        time.sleep(0.01)
    return thread, result


def test_batch_and_single_queries_share_one_bounded_queue(with_api, corpus):
    client = TestClient(create_app(with_api(max_queued_answers=3), corpus))
    runtime = client.app.state.runtime
    with runtime.lock:  # the model is busy
        thread, first = hold_the_model(client, {"questions": ["k2 ?", "k4 ?"], "arms": ["base"]}, "/v1/query/batch")
        full = client.post("/v1/query", json={"question": "camera ?", "arms": ["base", "fewshot"]})
        assert full.status_code == 429 and "api.max_queued_answers" in full.text
        assert int(full.headers["retry-after"]) >= 1
        too_big = client.post("/v1/query/batch", json={"questions": ["a", "b"], "arms": ["base", "fewshot"]})
        assert too_big.status_code == 413 and "api.max_queued_answers" in too_big.text  # retrying cannot help
    thread.join(timeout=60)
    assert first["r"].status_code == 200 and len(first["r"].json()["results"]) == 2
    assert client.post("/v1/query", json={"question": "camera ?", "arms": ["base", "fewshot"]}).status_code == 200


def test_a_query_still_queued_at_its_deadline_is_503_with_retry_after(with_api, corpus):
    client = TestClient(create_app(with_api(query_timeout_s=0.3), corpus))
    runtime = client.app.state.runtime
    with runtime.lock:
        thread, _ = hold_the_model(client, {"question": "k2 ?", "arms": ["base"]})  # taken, waits for the lock
        late = client.post("/v1/query", json={"question": "k4 ?", "arms": ["base"]})  # waits in the queue
    thread.join(timeout=60)
    assert late.status_code == 503 and "api.query_timeout_s" in late.text and "retry-after" in late.headers


@pytest.mark.parametrize("value", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_are_422_not_500(client, value):
    r = client.post("/v1/query", content=b'{"question": "q", "top_k": ' + value + b"}",
                    headers={"content-type": "application/json"})  # fmt: skip
    assert r.status_code == 422 and "JSON does not allow" in r.text


def test_errors_name_the_fix_without_server_paths(client, settings, corpus):
    r = client.post("/v1/query", json={"question": "q", "arms": ["rag"]})
    assert r.status_code == 409 and "ragft index" in r.text
    assert str(settings.data_dir) not in r.text and str(corpus) not in r.text
    ready = client.get("/readyz").json()
    assert str(corpus) not in json.dumps(ready) and "ragft index" in ready["fix"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/query", {"question": "k2 \ud800 ?", "arms": ["base"]}),
        ("/v1/query/batch", {"questions": ["what is the price ?", "\udfff"], "arms": ["base"]}),
        ("/v1/query", {"question": "q", "arms": ["\ud800"]}),
    ],
)
def test_text_that_is_not_unicode_is_a_422_not_a_500(client, path, body):
    r = client.post(path, content=json.dumps(body), headers={"content-type": "application/json"})
    assert r.status_code == 422 and "unpaired UTF-16 surrogate" in r.text
    assert client.post("/v1/query", json={"question": "k2 \U0001f600 ?", "arms": ["base"]}).status_code == 200
