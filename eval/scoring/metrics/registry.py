"""The metric registry itself: `Metric`, `register` and the lookups, apart from the family modules that
register into it (so they import this module, never the package that imports them)."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ragft.eval.store import Prediction
from ragft.eval.tasks import TaskRow


@dataclass
class ScoringContext:
    """What metrics may need beyond a row and its prediction, built once per scoring pass."""

    abstention_phrase: str
    embed: Callable[[list[str]], list[list[float]]] | None = None  # the local embedder, for semantic similarity
    gold_contexts: dict[str, list[str]] = field(default_factory=dict)  # row id -> answer-bearing sentences
    judge: object | None = None  # a ragas LLM on the configured judge endpoint, else judge metrics are skipped
    # family -> every answer in the corpus (`knowledge.corpus_answers`): rivals a reply may not list beside its answer
    corpus_answers: dict[str, tuple[str, ...]] = field(default_factory=dict)
    cache: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Metric:
    """One score. `score` gives a number per row (None: not applicable); `aggregate` turns row values into
    the family figure (the mean unless given; macro-F1 needs the pairs)."""

    name: str
    family: str  # the report family it belongs to
    reads: tuple[str, ...]  # task-row families it scores
    score: Callable[[TaskRow, Prediction, ScoringContext], float | tuple | None]
    description: str
    higher_is_better: bool = True
    needs_contexts: bool = False  # only meaningful for retrieving arms
    phase: str = "main"  # freshness metrics read the answers given after the corpus update
    judge: bool = False  # needs the LLM judge: absent without one, and checked against the headline when present
    aggregate: Callable[[Sequence], float] | None = None
    balance: Callable[[TaskRow], str] | None = None  # row groups that weigh equally in the figure (see `balanced`)
    refusal: float | None = None  # a three-way score's value for declining to answer, neither right nor wrong (the
    # review marks such a row 'abstained', or 'correct' where declining is the expected reply); None: no such value
    note: str | None = None  # what a reader needs beside the figure (its scale, what it cannot show): the report
    # prints the headline's note under its family
    figure_range: tuple[float, float] = (0.0, 1.0)  # the lowest and highest value the figure can take: a chart's
    # axis, and the scale a margin is a share of (abstention's three-way score runs from -1 to 0.5)


os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")  # ragas sends usage analytics unless told not to

METRICS: dict[str, Metric] = {}


def ragas_metric(ctx: ScoringContext, name: str, factory):
    """One ragas metric object per scoring pass (they hold tokenizers, scorers or an LLM client)."""
    if name not in ctx.cache:
        ctx.cache[name] = factory()
    return ctx.cache[name]


def ragas_value(coro) -> float:
    """Run a ragas `ascore(...)` coroutine and return its value."""
    import asyncio

    return float(asyncio.run(coro).value)


def register(metric: Metric) -> Metric:
    if metric.name in METRICS:
        raise ValueError(f"metric '{metric.name}' is registered twice")
    METRICS[metric.name] = metric
    return metric


def balanced(metric: Metric, per_row: dict[str, float], rows: dict[str, TaskRow]) -> dict[str, float]:
    """Row values reweighted so each of the metric's `balance` groups counts equally: a row of group g, n_g of
    the n rows in k groups, is scaled by n / (k * n_g), so the mean of the values is the mean of the group means
    and paired tests on them test that. Unchanged for a metric without groups.

    Example: abstention's halves (unanswerable, answerable) weigh the same however many rows each has, so an arm
    that never abstains (-1 on every unanswerable row) scores at most 0 however many answerable rows it gets
    right."""
    if metric.balance is None or not per_row:
        return per_row
    group = {i: metric.balance(rows[i]) for i in per_row}
    sizes = Counter(group.values())
    scale = {g: len(per_row) / (len(sizes) * n) for g, n in sizes.items()}
    return {i: float(v) * scale[group[i]] for i, v in per_row.items()}


def family_metrics(family: str) -> list[Metric]:
    return [m for m in METRICS.values() if m.family == family]


def headline(family: str) -> Metric:
    """The metric that decides `family` (named by its entry in eval/families.py)."""
    from ragft.eval.families import FAMILIES

    return METRICS[FAMILIES[family].headline]


def report_families() -> list[str]:
    """Families that have metrics, in registry order (the order the report shows them)."""
    from ragft.eval.families import FAMILIES

    present = {m.family for m in METRICS.values()}
    return [f for f in FAMILIES if f in present]
