"""Forgetting: general-knowledge probes the base model answers, asked again of every arm.

A trained arm that loses accuracy here has forgotten general skills; the report compares
each arm with base on the same probes (paired).
"""

from __future__ import annotations

from eval.metrics import Metric, register
from eval.metrics.knowledge import answer_contained


def general_accuracy(row, pred, ctx) -> float:
    return answer_contained(pred.text, list(row.answers))


register(Metric("general_accuracy", "general", ("general",), general_accuracy,
                "answers the general probes the base model answered", headline=True))  # fmt: skip
