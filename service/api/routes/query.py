"""POST /v1/query: one question, several arms, side by side."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field, field_validator
from starlette.concurrency import run_in_threadpool

from service.api.deps import CoalescerDep, SettingsDep, TelemetryDep
from service.arms import ARMS, Query, parse_arm


class QueryRequest(BaseModel):
    question: str = Field(min_length=1, description="The question every arm answers.")
    arms: list[str] = Field(default=["base", "rag"], min_length=1, description=f"Arms to run: {', '.join(ARMS)}.")
    top_k: int | None = Field(None, ge=1, description="Passages for retrieving arms (default from settings).")

    @field_validator("arms")
    @classmethod
    def _known_arms(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(parse_arm(name).name for name in value))  # ValueError -> 422 naming the arm


class PassageOut(BaseModel):
    doc_id: str
    chunk_id: str
    text: str
    score: float


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


router = APIRouter(prefix="/v1", tags=["query"])


@router.post("/query", response_model=QueryResponse)
async def query(
    body: QueryRequest, coalescer: CoalescerDep, settings: SettingsDep, telemetry: TelemetryDep
) -> QueryResponse:
    """Answer the question with each requested arm, with the passages the retrieving arms used."""
    limits = settings.api
    if len(body.question) > limits.max_question_chars:
        raise HTTPException(
            413, f"question is {len(body.question)} characters; the limit is {limits.max_question_chars}"
        )
    if body.top_k is not None and body.top_k > limits.max_top_k:
        raise HTTPException(422, f"top_k={body.top_k} exceeds the limit of {limits.max_top_k}")
    arms = [ARMS[name] for name in body.arms]
    query = Query(body.question)
    answers = await run_in_threadpool(lambda: [coalescer.answer(arm, query, body.top_k) for arm in arms])
    for a in answers:
        telemetry.observe_answer(a.arm, a.latency_ms / 1000)
    return QueryResponse(
        question=body.question,
        answers=[
            ArmAnswer(
                arm=a.arm,
                answer=a.text,
                passages=[
                    PassageOut(doc_id=p.doc_id, chunk_id=p.chunk_id, text=p.text, score=p.score) for p in a.passages
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
