"""Abstention: saying the fixed phrase on unanswerable rows, and not on answerable ones.

The headline scores the decision on both kinds of row together, so an arm that always
abstains (or never does) cannot win the family.

Example:
    >>> abstained("I don't know based on the provided documents.", "I don't know based on the provided documents.")
    True
"""

from __future__ import annotations

from eval.metrics import Metric, register
from eval.metrics.knowledge import normalise_answer

# Replies that refuse without the exact phrase still count as abstaining.
REFUSALS = ("i don t know", "i do not know", "not in the provided", "no information", "cannot find", "not mentioned")


def abstained(text: str, phrase: str) -> bool:
    norm = normalise_answer(text.replace("'", " "))
    return normalise_answer(phrase.replace("'", " ")) in norm or any(r in norm for r in REFUSALS)


def abstention_accuracy(row, pred, ctx) -> float:
    return float(abstained(pred.text, ctx.abstention_phrase) == (row.family == "abstention"))


def abstention_rate(row, pred, ctx) -> float | None:
    return float(abstained(pred.text, ctx.abstention_phrase)) if row.family == "abstention" else None


def false_abstention_rate(row, pred, ctx) -> float | None:
    return float(abstained(pred.text, ctx.abstention_phrase)) if row.family == "knowledge" else None


reads = ("abstention", "knowledge")
register(Metric("abstention_accuracy", "abstention", reads, abstention_accuracy,
                "abstains exactly when the row is unanswerable", headline=True))  # fmt: skip
register(Metric("abstention_rate", "abstention", reads, abstention_rate, "abstains on unanswerable rows"))
register(Metric("false_abstention_rate", "abstention", reads, false_abstention_rate,
                "abstains on answerable knowledge rows", higher_is_better=False))  # fmt: skip
