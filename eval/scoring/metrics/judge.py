"""LLM-judge metrics from ragas, used only when a judge endpoint is configured.

`Faithfulness` (is the reply supported by the retrieved passages?), `AnswerCorrectness`
(against the reference answer) and `ContextPrecision` (are the useful passages ranked
first?). The judge is any OpenAI-compatible endpoint (`eval.judge_base_url`), wrapped with
ragas' `llm_factory`; without one these metrics are simply absent and the report says so.

Example:
    >>> # RAGFT_EVAL__JUDGE_BASE_URL=http://localhost:8001/v1 RAGFT_EVAL__JUDGE_MODEL=qwen2.5-7b ragft eval ...
"""

from __future__ import annotations

from ragft.eval.scoring.metrics.knowledge import local_embeddings
from ragft.eval.scoring.metrics.registry import Metric, ragas_metric, ragas_value, register


def judge_llm(base_url: str, model: str, api_key: str | None):
    """A ragas LLM on an OpenAI-compatible endpoint."""
    from openai import AsyncOpenAI
    from ragas.llms import llm_factory

    return llm_factory(model, client=AsyncOpenAI(base_url=base_url, api_key=api_key or "not-needed"))


def faithfulness(row, pred, ctx) -> float | None:
    if ctx.judge is None or not pred.passages:
        return None
    from ragas.metrics.collections import Faithfulness

    metric = ragas_metric(ctx, "judge_faithfulness", lambda: Faithfulness(llm=ctx.judge))
    contexts = [p.text for p in pred.passages]
    return ragas_value(metric.ascore(user_input=row.text, response=pred.text or " ", retrieved_contexts=contexts))


def answer_correctness(row, pred, ctx) -> float | None:
    if ctx.judge is None:
        return None
    from ragas.metrics.collections import AnswerCorrectness

    embeddings = local_embeddings(ctx.embed) if ctx.embed else None
    weights = [0.75, 0.25] if embeddings else [1.0, 0.0]
    metric = ragas_metric(
        ctx, "judge_correctness", lambda: AnswerCorrectness(llm=ctx.judge, embeddings=embeddings, weights=weights)
    )
    return ragas_value(metric.ascore(user_input=row.text, response=pred.text or " ", reference=row.answers[0]))


def context_precision(row, pred, ctx) -> float | None:
    if ctx.judge is None or not pred.passages:
        return None
    from ragas.metrics.collections import ContextPrecision

    metric = ragas_metric(ctx, "judge_context_precision", lambda: ContextPrecision(llm=ctx.judge))
    return ragas_value(
        metric.ascore(user_input=row.text, reference=row.answers[0], retrieved_contexts=[p.text for p in pred.passages])
    )


k = ("knowledge",)
register(Metric("judge_faithfulness", "knowledge", k, faithfulness, "ragas Faithfulness (LLM judge)",
                needs_contexts=True, judge=True))  # fmt: skip
register(Metric("judge_answer_correctness", "knowledge", k, answer_correctness, "ragas AnswerCorrectness (LLM judge)",
                judge=True))  # fmt: skip
register(Metric("judge_context_precision", "knowledge", k, context_precision, "ragas ContextPrecision (LLM judge)",
                needs_contexts=True, judge=True))  # fmt: skip

# The judge metric whose verdict on a row should agree with the string headline of the same family.
AGREES_WITH_HEADLINE = {"knowledge": "judge_answer_correctness"}
