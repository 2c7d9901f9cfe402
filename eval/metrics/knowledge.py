"""String metrics for short factual answers (SQuAD-style normalisation).

Example:
    >>> answer_contained("It costs $463, I think.", ["$463"])
    1.0
    >>> round(token_f1("the price is 463 dollars", ["463 dollars"]), 2)
    0.67
"""

from __future__ import annotations

import re
import string
from collections import Counter

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans({c: " " for c in string.punctuation if c not in "$£%."})


def normalise_answer(text: str) -> str:
    """Lower-case, drop articles and most punctuation (keeping $ £ % and decimal points), squeeze spaces."""
    text = text.lower().translate(_PUNCT)
    text = re.sub(r"\.(?!\d)", " ", text)  # a full stop, but not the point in 4.12.3
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, answers: list[str]) -> float:
    pred = normalise_answer(prediction)
    return float(any(pred == normalise_answer(a) for a in answers))


def token_f1(prediction: str, answers: list[str]) -> float:
    """Best token-overlap F1 against any accepted answer."""
    pred = normalise_answer(prediction).split()
    best = 0.0
    for answer in answers:
        ref = normalise_answer(answer).split()
        common = sum((Counter(pred) & Counter(ref)).values())
        if common:
            precision, recall = common / len(pred), common / len(ref)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def answer_contained(prediction: str, answers: list[str]) -> float:
    """1.0 when an accepted answer appears in the prediction as whole words."""
    pred = f" {normalise_answer(prediction)} "
    return float(any(f" {normalise_answer(a)} " in pred for a in answers if normalise_answer(a)))


def _answers(row) -> list[str]:
    return list(row.answers)


def rouge_l(row, pred, ctx) -> float:
    from ragas.metrics.collections import RougeScore

    from eval.metrics import ragas_metric, ragas_value

    metric = ragas_metric(ctx, "rouge", lambda: RougeScore(rouge_type="rougeL", mode="fmeasure"))
    return max(ragas_value(metric.ascore(reference=a, response=pred.text or " ")) for a in _answers(row))


def string_similarity(row, pred, ctx) -> float:
    from ragas.metrics.collections import NonLLMStringSimilarity

    from eval.metrics import ragas_metric, ragas_value

    metric = ragas_metric(ctx, "string", NonLLMStringSimilarity)
    return max(ragas_value(metric.ascore(reference=a, response=pred.text or " ")) for a in _answers(row))


def semantic_similarity(row, pred, ctx) -> float | None:
    """ragas SemanticSimilarity with the local embedder wrapped as a ragas embedding."""
    if ctx.embed is None:
        return None
    from ragas.metrics.collections import SemanticSimilarity

    from eval.metrics import ragas_metric, ragas_value

    metric = ragas_metric(ctx, "semantic", lambda: SemanticSimilarity(embeddings=local_embeddings(ctx.embed)))
    return max(ragas_value(metric.ascore(reference=a, response=pred.text or " ")) for a in _answers(row))


def _first_gold_rank(row, pred) -> int | None:
    for rank, passage in enumerate(pred.passages, start=1):
        if passage.doc_id in row.source_docs:
            return rank
    return None


def recall_at_k(row, pred, ctx) -> float | None:
    """1.0 when any retrieved passage comes from a document that holds the answer."""
    if not row.source_docs:
        return None
    return float(_first_gold_rank(row, pred) is not None)


def mrr(row, pred, ctx) -> float | None:
    if not row.source_docs:
        return None
    rank = _first_gold_rank(row, pred)
    return 1.0 / rank if rank else 0.0


def context_recall(row, pred, ctx) -> float | None:
    """ragas NonLLMContextRecall: do the retrieved passages contain the sentences that hold the answer?"""
    gold = ctx.gold_contexts.get(row.id)
    if not gold:
        return None
    from ragas.dataset_schema import SingleTurnSample
    from ragas.metrics import NonLLMContextRecall

    from eval.metrics import ragas_metric

    metric = ragas_metric(ctx, "context_recall", NonLLMContextRecall)
    # sentence against sentence: ragas compares whole strings by edit distance, and a gold sentence inside a
    # 200-token passage scores far below its 0.5 threshold, so passages are split the way the gold side is
    retrieved = [sentence for p in pred.passages for sentence in split_sentences(p.text)] or [" "]
    sample = SingleTurnSample(retrieved_contexts=retrieved, reference_contexts=gold)
    import asyncio

    return float(asyncio.run(metric.single_turn_ascore(sample)))


def local_embeddings(embed):
    """The configured sentence-transformers model behind ragas' modern embedding interface."""
    from ragas.embeddings.base import BaseRagasEmbedding

    class LocalEmbeddings(BaseRagasEmbedding):
        def embed_text(self, text: str, **kwargs) -> list[float]:
            return embed([text])[0]

        async def aembed_text(self, text: str, **kwargs) -> list[float]:
            return embed([text])[0]

    return LocalEmbeddings()


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", text) if s.strip()]


def answer_sentences(document_text: str, answers: list[str]) -> list[str]:
    """Sentences of a source document that hold an accepted answer: the reference contexts for context recall."""
    wanted = [a.lower() for a in answers if a.strip()]
    return [s for s in split_sentences(document_text) if any(a in s.lower() for a in wanted)]


def _register() -> None:
    from eval.metrics import Metric, register

    k = ("knowledge",)

    def string(fn):
        return lambda row, pred, ctx: fn(pred.text, _answers(row))

    register(Metric("answer_contained", "knowledge", k, string(answer_contained),
                    "an accepted answer appears in the reply as whole words", headline=True))  # fmt: skip
    register(Metric("exact_match", "knowledge", k, string(exact_match), "the reply is an accepted answer, normalised"))
    register(Metric("token_f1", "knowledge", k, string(token_f1), "best token-overlap F1 with an accepted answer"))
    register(Metric("rouge_l", "knowledge", k, rouge_l, "ragas RougeScore (ROUGE-L F-measure)"))
    register(Metric("string_similarity", "knowledge", k, string_similarity,
                    "ragas NonLLMStringSimilarity (normalised Levenshtein)"))  # fmt: skip
    register(Metric("semantic_similarity", "knowledge", k, semantic_similarity,
                    "ragas SemanticSimilarity with the local embedder"))  # fmt: skip
    register(Metric("recall_at_k", "knowledge", k, recall_at_k,
                    "a retrieved passage comes from a source document", needs_contexts=True))  # fmt: skip
    register(Metric("mrr", "knowledge", k, mrr, "reciprocal rank of the first source passage", needs_contexts=True))
    register(Metric("context_recall", "knowledge", k, context_recall,
                    "ragas NonLLMContextRecall against the answer-bearing sentences", needs_contexts=True))  # fmt: skip


_register()
