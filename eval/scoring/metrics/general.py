"""Forgetting: general-knowledge probes, asked of base and of every arm whose weights changed.

A trained arm that loses accuracy here has forgotten general skills; the report compares
each such arm with base on the same probes (paired). Scored like knowledge: the short
answer, values normalised ("twenty-four" is 24), no rival answer beside it.
"""

from __future__ import annotations

from ragft.eval.scoring.metrics.knowledge import answer_contained
from ragft.eval.scoring.metrics.registry import Metric, register


def general_accuracy(row, pred, ctx) -> float:
    return answer_contained(pred.text, list(row.answers), ctx.corpus_answers.get(row.family, ()))


register(Metric("general_accuracy", "general", ("general",), general_accuracy,
                "answers the general-knowledge probes correctly"))  # fmt: skip
