"""Freshness: after `updates/` is applied and the index refreshed, who gives the new answer?

Scored on the answers given in the 'fresh' phase (after the update). Adapters are trained
before the update and never retrained on it (`ADAPTERS_RETRAINED`), so a closed-book adapter
cannot know the change, and only arms that retrieve from the refreshed index can give the new
answer: "use RAG" here is true by construction unless an arm retrained on `updates/` is
offered. What the family measures is whether the retrieving arms *read* the refreshed index
(and whether a trained adapter's memory of the old fact overrides the new passage), not whether
RAG beats retraining. The headline's `note` says so for the report.

Example:
    >>> from ragft.eval.scoring.metrics import headline
    >>> ADAPTERS_RETRAINED, "not retrained" in headline("freshness").note
    (False, True)
"""

from __future__ import annotations

from ragft.eval.scoring.metrics.knowledge import answer_contained
from ragft.eval.scoring.metrics.registry import Metric, register


def new_answer_rate(row, pred, ctx) -> float:
    """The updated answer, and no rival beside it ("$179, was $199" names two prices and scores 0)."""
    return answer_contained(pred.text, list(row.answers), ctx.corpus_answers.get(row.family, ()))


def stale_answer_rate(row, pred, ctx) -> float:
    """The superseded answer alone: the arm still believes the old fact."""
    return answer_contained(pred.text, list(row.old_answers), ctx.corpus_answers.get(row.family, ()))


ADAPTERS_RETRAINED = False  # the runner answers the fresh phase with the adapters trained before the update
NOT_RETRAINED = (
    "Adapters were trained before the corpus update and not retrained on it: only arms that retrieve from the "
    "refreshed index can give the new answer, so an arm that retrieves winning here is expected by construction; it "
    "shows the index was read (and whether a trained adapter's old fact overrides the new passage), not that "
    "retrieval beats retraining."
)

f = ("freshness",)
register(Metric("new_answer_rate", "freshness", f, new_answer_rate, "gives the updated answer",
                phase="fresh", note=NOT_RETRAINED))  # fmt: skip
register(Metric("stale_answer_rate", "freshness", f, stale_answer_rate, "gives the superseded answer",
                higher_is_better=False, phase="fresh"))  # fmt: skip
