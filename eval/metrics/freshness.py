"""Freshness: after `updates/` is applied and the index refreshed, who gives the new answer?

Scored on the answers given in the 'fresh' phase (after the update). Adapters were trained
before the update, so only a re-index or a retraining can teach an arm the change.
"""

from __future__ import annotations

from eval.metrics.knowledge import answer_contained
from eval.metrics.registry import Metric, register


def new_answer_rate(row, pred, ctx) -> float:
    """The updated answer, and no rival beside it ("$179, was $199" names two prices and scores 0)."""
    return answer_contained(pred.text, list(row.answers), ctx.corpus_answers.get(row.family, ()))


def stale_answer_rate(row, pred, ctx) -> float:
    """The superseded answer alone: the arm still believes the old fact."""
    return answer_contained(pred.text, list(row.old_answers), ctx.corpus_answers.get(row.family, ()))


f = ("freshness",)
register(Metric("new_answer_rate", "freshness", f, new_answer_rate, "gives the updated answer",
                phase="fresh"))  # fmt: skip
register(Metric("stale_answer_rate", "freshness", f, stale_answer_rate, "gives the superseded answer",
                higher_is_better=False, phase="fresh"))  # fmt: skip
