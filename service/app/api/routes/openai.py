"""An OpenAI-compatible surface: each ready arm is a "model" any OpenAI client can call.

`POST /v1/chat/completions` answers the last user message through the arm named in `model`
(retrieving arms search with it), with `usage` token counts, and streams server-sent events
ending in `data: [DONE]` when `stream` is true. Fields it does not use (`temperature`,
`top_p`, `response_format`, ...) are accepted and ignored, so existing clients and ragas'
judge calls work unchanged; decoding stays greedy so answers are reproducible.
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
import time
import uuid
import weakref
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag
from ragft.service.app.api.deps import CoalescerDep, RuntimeDep, SettingsDep, TelemetryDep, errors, hide_paths
from ragft.service.arms import ARMS, Query, UnknownArm, parse_arm, prompts_for
from ragft.service.prompts import PromptText

router = APIRouter(prefix="/v1", tags=["openai"], responses=errors(404, 409, 429, 503))


class TextPart(BaseModel):
    """A text content part: what the arm reads."""

    model_config = ConfigDict(extra="allow")
    type: Literal["text"]
    text: PromptText


class OtherPart(BaseModel):
    """A content part without text for the arm (an image, audio, a file): accepted and left out."""

    model_config = ConfigDict(extra="allow")
    type: str = Field(json_schema_extra={"not": {"const": "text"}})


def _part_kind(part: Any) -> str:
    kind = part.get("type") if isinstance(part, dict) else getattr(part, "type", None)
    return "text" if kind == "text" else "other"


# Validated by its `type`, so a text part is always checked as one (never passed as an OtherPart)
ContentPart = Annotated[
    Annotated[TextPart, Tag("text")] | Annotated[OtherPart, Tag("other")], Discriminator(_part_kind)
]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: PromptText | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):  # content parts: keep the text ones
            return " ".join(p.text for p in self.content if isinstance(p, TextPart))
        return self.content or ""


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # unused OpenAI fields are accepted and ignored
    model: PromptText = Field(description=f"An arm: {', '.join(ARMS)}.")
    messages: list[ChatMessage] = Field(
        min_length=1,
        description="The arm answers the last user message with text (earlier turns are not sent to the model).",
        # what the handler needs, in the schema, so clients and schemathesis know a request without it is invalid
        json_schema_extra={"contains": {"type": "object", "required": ["role", "content"], "properties": {
            "role": {"const": "user"}, "content": {"type": "string", "pattern": r"\S"}}}},
    )  # fmt: skip
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    n: int = Field(1, ge=1, le=1, description="Choices per request: decoding is greedy, so only one.")


@router.get("/models")
async def list_models(runtime: RuntimeDep) -> dict:
    """The arms that can answer now (index and trained artifacts present), as OpenAI models."""
    ready = [arm.name for arm in ARMS.values() if runtime.can_answer(arm)]
    return {
        "object": "list",
        "data": [{"id": name, "object": "model", "created": 0, "owned_by": "ragft"} for name in ready],
    }


def _question(body: ChatRequest, limit: int) -> str:
    users = [m for m in body.messages if m.role == "user" and m.text().strip()]
    if not users:
        raise HTTPException(422, "messages needs a user message with text; the arm answers the last one")
    question = users[-1].text()
    if len(question) > limit:
        raise HTTPException(
            413, f"the last user message is {len(question)} characters; the limit is {limit} (api.max_question_chars)"
        )
    return question


@router.post("/chat/completions")
async def chat_completions(
    body: ChatRequest,
    request: Request,
    runtime: RuntimeDep,
    coalescer: CoalescerDep,
    settings: SettingsDep,
    telemetry: TelemetryDep,
):
    try:
        arm = parse_arm(body.model)
    except UnknownArm as exc:
        raise HTTPException(404, f"model '{body.model}' does not exist: {exc}") from exc
    question = _question(body, settings.api.max_question_chars)
    max_tokens = body.max_completion_tokens or body.max_tokens or settings.generation.max_new_tokens
    if max_tokens > settings.api.max_tokens:
        raise HTTPException(
            422, f"max_tokens={max_tokens} exceeds the limit of {settings.api.max_tokens} (api.max_tokens)"
        )
    completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    if body.stream:
        release = coalescer.reserve(1)  # 429 now if the queue is full; given back when the stream ends
        hide = functools.partial(hide_paths, request=request)
        started = threading.Event()  # set once the worker thread runs: from then on it gives the place back
        events = _stream(arm, runtime, question, max_tokens, completion_id, created, release, hide, started)
        weakref.finalize(events, lambda: started.is_set() or release())  # the client left before the stream began
        return StreamingResponse(events, media_type="text/event-stream")
    with coalescer.admitted(1):
        [result] = await coalescer.answers(arm, [Query(question)], None, max_tokens)
    telemetry.observe_answer(arm.name, result.latency_ms / 1000)
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": arm.name,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.text},
                "finish_reason": "length" if result.generated_tokens >= max_tokens else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.generated_tokens,
            "total_tokens": result.prompt_tokens + result.generated_tokens,
        },
    }


_END = object()


async def _stream(
    arm, runtime, question: str, max_tokens: int, completion_id: str, created: int, release, hide, started
):
    """Server-sent events from a worker thread that holds the model for the whole answer.

    A client that goes away cancels this generator; `stop` then ends generation at its next token, so a
    dropped stream stops holding the model. The stream's place in the queue is given back when the worker
    thread ends, not when the client leaves: connect-and-drop loops cannot pile up generations past
    api.max_queued_answers. An error ends the stream with an error event (no finish_reason)."""
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue = asyncio.Queue()
    stop = threading.Event()
    done: dict = {}

    def put(item) -> None:
        if not loop.is_closed():
            loop.call_soon_threadsafe(pieces.put_nowait, item)

    def work() -> None:
        try:
            prompts, _, _ = prompts_for(arm, runtime, [Query(question)])
            if stop.is_set():
                return
            with runtime.generator_for(arm) as generator:
                if stop.is_set():  # the client left while this waited for the model
                    return
                for piece in generator.stream(prompts[0], max_tokens, on_done=lambda g: done.update(g=g), stop=stop):
                    put(piece)
        except Exception as exc:  # reported to the client as an error event
            put(exc)
        finally:
            release()  # the answer's place in the queue, held until no work is left for it
            put(_END)

    started.set()
    threading.Thread(target=work, name="ragft-stream", daemon=True).start()
    try:
        async for event in _events(pieces, arm, max_tokens, completion_id, created, done, hide):
            yield event
    finally:  # finished, failed, or cancelled by a disconnect: the worker stops at its next token
        stop.set()


async def _events(pieces: asyncio.Queue, arm, max_tokens: int, completion_id: str, created: int, done: dict, hide):
    """The chunks of one streamed completion, read from `pieces` until the worker's end marker."""

    def chunk(delta: dict, finish: str | None = None, usage: dict | None = None) -> str:
        payload = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": arm.name,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip
        if usage is not None:
            payload["usage"] = usage
        return f"data: {json.dumps(payload)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    while True:
        item = await pieces.get()
        if item is _END:
            break
        if isinstance(item, Exception):  # the last event: a failed answer has no finish_reason
            error = {"message": hide(str(item)), "type": type(item).__name__}
            yield f"data: {json.dumps({'error': error})}\n\n"
            return
        if item:
            yield chunk({"content": item})
    g = done.get("g")
    usage = None
    finish = "stop"
    if g is not None:
        usage = {"prompt_tokens": g.prompt_tokens, "completion_tokens": g.generated_tokens,
                 "total_tokens": g.prompt_tokens + g.generated_tokens}  # fmt: skip
        finish = "length" if g.generated_tokens >= max_tokens else "stop"
    yield chunk({}, finish, usage)
    yield "data: [DONE]\n\n"
