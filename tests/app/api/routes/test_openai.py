import json

import pytest
from fastapi.testclient import TestClient
from openai import OpenAI
from ragft.service.app.api.main import create_app

from tests.live import serving


@pytest.fixture
def client(settings, corpus):
    client = TestClient(create_app(settings, corpus))
    client.app.state.runtime.index()
    return client


@pytest.fixture
def openai_client(client):
    """The official client against a real uvicorn server on 127.0.0.1 serving the same app."""
    with serving(client.app) as url:
        yield OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def test_models_lists_the_ready_arms(client):
    ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert ids == ["base", "fewshot", "rag"]  # no adapters trained yet


def test_official_client_gets_a_completion_from_the_rag_arm(openai_client, client):
    reply = openai_client.chat.completions.create(
        model="rag",
        messages=[{"role": "system", "content": "ignored"}, {"role": "user", "content": "how much is a kestrel k4 ?"}],
        temperature=0.7,  # accepted and ignored: decoding stays greedy
        top_p=0.5,
        response_format={"type": "text"},
        max_tokens=5,
    )
    text = reply.choices[0].message.content
    assert reply.model == "rag" and isinstance(text, str)
    assert reply.usage.prompt_tokens > 20 and 0 < reply.usage.completion_tokens <= 5
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    same = client.post("/v1/query", json={"question": "how much is a kestrel k4 ?", "arms": ["rag"]}).json()
    assert same["answers"][0]["prompt_tokens"] == reply.usage.prompt_tokens  # the same prompt as the arm's


def test_official_client_streams_and_matches_the_unstreamed_answer(openai_client):
    kwargs = {"model": "rag", "messages": [{"role": "user", "content": "how much is a kestrel k4 ?"}], "max_tokens": 6}
    whole = openai_client.chat.completions.create(**kwargs).choices[0].message.content
    chunks = list(openai_client.chat.completions.create(stream=True, **kwargs))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed.strip() == whole
    assert chunks[-1].choices[0].finish_reason in ("stop", "length") and chunks[-1].usage.completion_tokens > 0


def test_raw_stream_ends_with_done(client):
    body = {"model": "base", "messages": [{"role": "user", "content": "yes"}], "stream": True, "max_tokens": 3}
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        lines = [line for line in r.iter_lines() if line]
    assert r.headers["content-type"].startswith("text/event-stream")
    assert lines[-1] == "data: [DONE]" and json.loads(lines[0][6:])["object"] == "chat.completion.chunk"


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"model": "gpt-4", "messages": [{"role": "user", "content": "q"}]}, 404, "does not exist"),
        ({"model": "base", "messages": [{"role": "system", "content": "q"}]}, 422, "user message"),
        ({"model": "base", "messages": [{"role": "user", "content": " "}]}, 422, "user message with text"),
        ({"model": "base", "messages": [{"role": "user", "content": "q"}], "max_tokens": 100000}, 422, "limit of 512"),
        ({"model": "base", "messages": [{"role": "user", "content": "q" * 3000}]}, 413, "limit is 2000"),
        ({"model": "lora", "messages": [{"role": "user", "content": "q"}]}, 409, "ragft train"),
        ({"model": "base", "messages": [{"role": "user", "content": "q"}], "n": 3}, 422, "less than or equal to 1"),
    ],
)
def test_bad_requests_name_the_problem(client, body, status, fragment):
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == status and fragment in r.text


def test_the_last_user_message_with_text_is_answered(client):
    messages = [{"role": "user", "content": "what is the price ?"}, {"role": "user", "content": ""}]
    r = client.post("/v1/chat/completions", json={"model": "base", "messages": messages, "max_tokens": 2})
    assert r.status_code == 200, r.text
    schema = client.get("/openapi.json").json()["components"]["schemas"]["ChatRequest"]
    assert schema["properties"]["messages"]["contains"]["properties"]["role"] == {"const": "user"}


def test_a_failed_stream_ends_with_an_error_event_not_a_stop(settings, corpus):
    client = TestClient(create_app(settings, corpus))  # no index: the rag arm fails once the stream has begun
    body = {"model": "rag", "messages": [{"role": "user", "content": "k2 ?"}], "stream": True}
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    assert "ragft index" in events[-1]["error"]["message"]
    assert str(corpus) not in events[-1]["error"]["message"]  # no server paths
    assert all(choice["finish_reason"] is None for e in events[:-1] for choice in e["choices"])


LONE = "\ud800"  # half of a surrogate pair: JSON can carry it, no tokenizer encodes it


@pytest.mark.parametrize(
    "body",
    [
        {"model": "base", "messages": [{"role": "user", "content": [{"type": "text", "text": f"k2 {LONE} ?"}]}]},
        {"model": "base", "messages": [{"role": "user", "content": LONE}]},
        {"model": LONE, "messages": [{"role": "user", "content": "q"}]},
    ],
    ids=["content-part", "content", "model"],
)
def test_text_that_is_not_unicode_is_a_422_not_a_500(client, body):
    r = client.post("/v1/chat/completions", content=json.dumps(body), headers={"content-type": "application/json"})
    assert r.status_code == 422 and "unpaired UTF-16 surrogate (U+D800)" in r.text


def test_content_parts_are_typed_and_only_text_parts_are_read(client):
    parts = [{"type": "image_url", "image_url": {"url": "data:,"}}, {"type": "text", "text": "what is the price ?"}]
    r = client.post("/v1/chat/completions", json={"model": "base", "messages": [{"role": "user", "content": parts}],
                                                  "max_tokens": 2})  # fmt: skip
    assert r.status_code == 200, r.text
    untyped = [{"type": "text", "text": 7}]  # a text part is checked as one, never passed as another kind of part
    r = client.post("/v1/chat/completions", json={"model": "base", "messages": [{"role": "user", "content": untyped}]})
    assert r.status_code == 422


class _HeldModel:
    """A runtime whose generator streams one piece, then waits for `go` (a long answer still generating)."""

    def __init__(self, enter_after=None):
        import threading

        self.go, self.streams, self.enter_after = threading.Event(), [], enter_after

    def generator_for(self, arm):
        from contextlib import contextmanager

        runtime = self

        @contextmanager
        def held():
            if runtime.enter_after is not None:
                runtime.enter_after.wait(10)  # another request holds the runtime lock until then

            class Gen:
                def stream(self, messages, max_tokens, on_done=None, stop=None):
                    runtime.streams.append(stop)
                    yield "first"
                    runtime.go.wait(10)
                    yield "rest"

            yield Gen()

        return held()


def _run_dropped_stream(runtime, monkeypatch, pieces_read: int):
    """Start the route's stream, read `pieces_read` events, then drop it as a disconnect does; returns what the
    release function saw: (calls at the drop, the started flag)."""
    import asyncio
    import threading

    from ragft.service.app.api.routes import openai as route
    from ragft.service.arms import ARMS

    monkeypatch.setattr(route, "prompts_for", lambda arm, rt, queries: ([[{"role": "user", "content": "q"}]], 0, 0))
    released, started = [], threading.Event()

    async def drop() -> int:
        events = route._stream(ARMS["base"], runtime, "q", 4, "id", 0, lambda: released.append(1), str, started)
        for _ in range(pieces_read):
            await events.__anext__()
        await events.aclose()
        return len(released)

    return asyncio.run(drop()), released, started


def test_a_dropped_stream_keeps_its_queue_place_until_its_worker_ends(monkeypatch):
    import time

    runtime = _HeldModel()
    at_drop, released, _ = _run_dropped_stream(runtime, monkeypatch, pieces_read=2)  # the role chunk and "first"
    assert at_drop == 0  # the worker still generates: the place is not given back yet
    assert runtime.streams[0].is_set()  # ...but it was told to stop at its next token
    runtime.go.set()
    deadline = time.monotonic() + 10
    while not released and time.monotonic() < deadline:
        time.sleep(0.01)
    assert released == [1]


def test_a_stream_dropped_while_waiting_for_the_model_never_generates(monkeypatch):
    import threading
    import time

    lock_free = threading.Event()
    runtime = _HeldModel(enter_after=lock_free)
    at_drop, released, _ = _run_dropped_stream(runtime, monkeypatch, pieces_read=1)  # only the role chunk
    lock_free.set()  # the client is gone by the time the worker gets the model
    deadline = time.monotonic() + 10
    while not released and time.monotonic() < deadline:
        time.sleep(0.01)
    assert released == [1] and runtime.streams == []
