"""POST /v1/query: one question, several arms, side by side; /v1/query/batch: many questions at once; GET /v1/arms:
the arms there are, which can answer now, and which a query naming none runs."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field
from ragft.service.app.api.deps import CoalescerDep, RuntimeDep, SettingsDep, TelemetryDep, errors
from ragft.service.arms import ARMS, Answer, ArmNames, Query, asked_by_default, runnable
from ragft.service.prompts import PromptText


class ArmsRequest(BaseModel):
    arms: ArmNames = Field(default=asked_by_default(), min_length=1, description="Arms to run.")
    top_k: int | None = Field(None, ge=1, description="Passages for retrieving arms (default from settings).")
    max_new_tokens: int | None = Field(
        None, ge=1, description="Tokens each answer may generate (default generation.max_new_tokens; the eval cuts "
        "question answers at 32). At most api.max_tokens.",
    )  # fmt: skip


class QueryRequest(ArmsRequest):
    question: PromptText = Field(min_length=1, pattern=r"\S", description="The question every arm answers.")


class BatchQueryRequest(ArmsRequest):
    questions: list[Annotated[PromptText, Field(min_length=1, pattern=r"\S")]] = Field(
        min_length=1, description="Questions every arm answers, generated in batches."
    )


class PassageOut(BaseModel):
    doc_id: str
    chunk_id: str
    text: str
    score: float
    page: str | None = Field(None, description="Where the passage starts in a paged document: 'p. 4', 'slide 3'.")


class ArmAnswer(BaseModel):
    arm: str
    answer: str
    passages: list[PassageOut]
    latency_ms: float = Field(description="Generation wall time of the batch this answer was generated in.")
    retrieval_ms: float
    prompt_tokens: int
    generated_tokens: int
    batch_size: int = Field(description="Answers generated together with this one (concurrent queries share batches).")


class QueryResponse(BaseModel):
    question: str
    answers: list[ArmAnswer]


class BatchQueryResponse(BaseModel):
    results: list[QueryResponse] = Field(description="One entry per question, in the order given.")


class ArmOut(BaseModel):
    name: str = Field(description="The id requests name it by.")
    label: str
    summary: str
    retrieve: bool = Field(description="Passages from the index go into its prompt.")
    fewshot: bool = Field(description="Worked examples from the train split go into its prompt.")
    adapter: str | None = Field(description="The artifact kind it loads (None: the base weights).")
    ready: bool = Field(description="Its index and trained artifact exist, so it can answer now.")
    asked_by_default: bool = Field(description="A query naming no arms runs it.")


router = APIRouter(prefix="/v1", tags=["query"], responses=errors(409, 429, 503))


def check_limits(
    questions: list[str], top_k: int | None, limits, arms: int = 1, max_new_tokens: int | None = None
) -> None:
    """413/422 naming the limit and its setting, before any work starts."""
    if len(questions) > limits.max_batch_questions:
        raise HTTPException(
            413, f"{len(questions)} questions in one batch; the limit is {limits.max_batch_questions} "
            "(api.max_batch_questions)",
        )  # fmt: skip
    if len(questions) * arms > limits.max_queued_answers:
        raise HTTPException(
            413, f"{len(questions)} questions x {arms} arms = {len(questions) * arms} answers in one request; the "
            f"limit is {limits.max_queued_answers} (api.max_queued_answers): split it or ask fewer arms",
        )  # fmt: skip
    for i, question in enumerate(questions):
        if not question.strip():
            raise HTTPException(422, f"question {i} is empty")
        if len(question) > limits.max_question_chars:
            raise HTTPException(
                413, f"question {i} is {len(question)} characters; the limit is {limits.max_question_chars} "
                "(api.max_question_chars)",
            )  # fmt: skip
    if top_k is not None and top_k > limits.max_top_k:
        raise HTTPException(422, f"top_k={top_k} exceeds the limit of {limits.max_top_k} (api.max_top_k)")
    if max_new_tokens is not None and max_new_tokens > limits.max_tokens:
        raise HTTPException(
            422, f"max_new_tokens={max_new_tokens} exceeds the limit of {limits.max_tokens} (api.max_tokens)"
        )


def response(question: str, answers: list[Answer], telemetry) -> QueryResponse:
    for a in answers:
        telemetry.observe_answer(a.arm, a.latency_ms / 1000)
    return QueryResponse(
        question=question,
        answers=[
            ArmAnswer(
                arm=a.arm,
                answer=a.text,
                passages=[
                    PassageOut(doc_id=p.doc_id, chunk_id=p.chunk_id, text=p.text, score=p.score, page=p.page)
                    for p in a.passages
                ],
                latency_ms=a.latency_ms,
                retrieval_ms=a.retrieval_ms,
                prompt_tokens=a.prompt_tokens,
                generated_tokens=a.generated_tokens,
                batch_size=a.batch_size,
            )
            for a in answers
        ],
    )


@router.get("/arms")
def list_arms(runtime: RuntimeDep) -> list[ArmOut]:
    """Every arm ragft runs, in table order, with its facts: what the ask page offers and ticks."""
    return [
        ArmOut(name=a.name, label=a.label, summary=a.summary, retrieve=a.retrieve, fewshot=a.fewshot,
               adapter=a.adapter, ready=runtime.can_answer(a), asked_by_default=a.asked_by_default)
        for a in map(ARMS.__getitem__, runnable())
    ]  # fmt: skip


@router.post("/query", response_model=QueryResponse)
async def query(
    body: QueryRequest, coalescer: CoalescerDep, settings: SettingsDep, telemetry: TelemetryDep
) -> QueryResponse:
    """Answer the question with each requested arm, with the passages the retrieving arms used."""
    per_arm = await answer_all([body.question], body, coalescer, settings)
    return response(body.question, [arm_answers[0] for arm_answers in per_arm], telemetry)


async def answer_all(questions: list[str], body: ArmsRequest, coalescer, settings) -> list[list[Answer]]:
    """Every arm's answers to `questions`, all queued at once in the shared bounded queue (429 when it is full)."""
    arms, top_k, max_new_tokens = body.arms, body.top_k, body.max_new_tokens
    check_limits(questions, top_k, settings.api, len(arms), max_new_tokens)
    queries = [Query(q) for q in questions]
    with coalescer.admitted(len(questions) * len(arms)):  # held until every arm is done, failed or not
        results = await asyncio.gather(
            *(coalescer.answers(ARMS[name], queries, top_k, max_new_tokens) for name in arms), return_exceptions=True
        )
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return list(results)


@router.post("/query/batch", response_model=BatchQueryResponse)
async def query_batch(
    body: BatchQueryRequest, coalescer: CoalescerDep, settings: SettingsDep, telemetry: TelemetryDep
) -> BatchQueryResponse:
    """Several questions through each requested arm, in the same queue (and batches) as /v1/query."""
    per_arm = await answer_all(body.questions, body, coalescer, settings)
    return BatchQueryResponse(
        results=[
            response(q, [arm_answers[i] for arm_answers in per_arm], telemetry) for i, q in enumerate(body.questions)
        ]
    )
