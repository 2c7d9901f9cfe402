"""A family's figures as soon as its arms have answered it, before the run ends.

The runner answers the arms that need no training first (base, fewshot, rag), trains, then answers the adapter
arms, a family at a time. `FamilyWatch` tells it when a report family has every answer of a stage: with the
untrained arms only, its figures are provisional (headlines with intervals; no verdict, since it could not name an
arm that has not answered); with every arm, final. `family_results` scores those answers exactly as the report
will (`ragft.eval.scoring.results.build_results` on a run holding only them, judge-free), so a final verdict printed early is
the one the report prints at the end.

`shown_figures` reduces one such family to what a person reads while the run goes on (the CLI's lines, the
job's `progress.figures` that the runs page shows): headline cells with intervals, and the verdict once final.

Example:
    >>> # watch = FamilyWatch(spec.families, chosen, [("base", 0), ("rag", 0)])
    >>> # ready = watch.completed(done); results = family_results(settings, spec, chosen, ready, answers)
    >>> # shown_figures(FamilyAnswered("knowledge", ("base", "rag"), ("lora",), False, results))["status"]
    >>> # 'provisional'
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from ragft.eval.families import FAMILIES
from ragft.eval.reporting.report import verdict_rows
from ragft.eval.scoring.results import build_results
from ragft.eval.spec import RunSpec, replicate_name, replicated_arm
from ragft.eval.store import Prediction, Store
from ragft.eval.tasks import TaskRow
from ragft.service.arms import ARMS
from ragft.service.settings import Settings

Answered = tuple[str, str, str]  # (stored arm, phase, row id)


@dataclass(frozen=True)
class FamilyAnswered:
    """A report family every arm of a stage has answered: `final` when that is every arm of the run, else the
    untrained arms only (provisional figures). `results` is results.json's shape with this family (and any that
    completed with it)."""

    family: str
    arms: tuple[str, ...]  # the arms whose answers the figures read
    waiting: tuple[str, ...]  # the run's arms that have not answered it yet (none when final)
    final: bool
    results: dict


def shown_figures(event: FamilyAnswered) -> dict:
    """`event`'s family as a person reads it mid-run (JSON): status 'provisional' (the arms so far, no verdict,
    the arms still to answer) or 'final' (every arm, and the verdict row `ragft.eval.reporting.report.verdict_rows` gives, the one
    the report will print); the headline metric; each arm's cell (value, 95% interval); the chance baseline; and
    `rows`, the test rows the cells read."""
    block = event.results["families"][event.family]
    metric = block["headline_metric"]
    labels = event.results["arms"]
    cells = [{"arm": a, "label": labels[a]["label"], **{k: cell.get(k) for k in ("value", "ci_low", "ci_high")}}
             for a, figures in block["arms"].items() if (cell := figures.get(metric))]  # fmt: skip
    chance = block.get("chance_baseline") or {}
    verdict = next((v for v in verdict_rows(event.results) if v["family"] == event.family), None)
    return {
        "family": event.family,
        "status": "final" if event.final else "provisional",
        "metric": metric,
        "rows": max((figures[metric].get("n") or 0 for figures in block["arms"].values() if metric in figures),
                    default=0),
        "arms": cells,
        "chance": {k: chance.get(k) for k in ("value", "ci_low", "ci_high")},
        "waiting": [ARMS[a].label for a in event.waiting],
        "verdict": verdict if event.final else None,
    }  # fmt: skip


def family_rows(family: str, chosen: dict[str, list[TaskRow]]) -> list[TaskRow]:
    """The selected test rows a report family reads (a view such as knowledge_unseen: its kind only)."""
    fam = FAMILIES[family]
    return [r for rf in fam.row_families for r in chosen.get(rf, []) if not fam.row_kind or r.kind == fam.row_kind]


class FamilyWatch:
    """Which report families have every answer of the given answerers ((arm, training seed) pairs)."""

    def __init__(self, families: list[str], chosen: dict[str, list[TaskRow]], answerers: list[tuple[str, int]]):
        self.needs: dict[str, set[Answered]] = {}
        for family in families:
            needed = {(replicate_name(arm, i), FAMILIES[r.family].phase, r.id)
                      for r in family_rows(family, chosen) for arm, i in answerers
                      if FAMILIES[r.family].scores(ARMS[arm])}  # fmt: skip
            if needed:  # a family without rows (or without an arm that answers them) has nothing to show
                self.needs[family] = needed
        self.shown: set[str] = set()

    def completed(self, done: set[Answered]) -> list[str]:
        """The families that have every answer in `done` and were not reported complete before."""
        ready = [f for f, needed in self.needs.items() if f not in self.shown and needed <= done]
        self.shown.update(ready)
        return ready


def family_results(
    settings: Settings, spec: RunSpec, chosen: dict[str, list[TaskRow]], families: list[str], answers: list[Prediction]
) -> dict:
    """results.json for `families` alone from `answers` (any arms), scored as `build_results` scores a stored run:
    intervals, pairwise tests, the chance baseline and the verdict among the arms that answered. Judge-free and
    without the embedder (no headline reads either). Families that complete together are scored in one call."""
    rows = [r for f in families for r in family_rows(f, chosen)]
    ids = {r.id for r in rows}
    mine = [p for p in answers if p.row_id in ids]
    answered = {replicated_arm(p.arm) for p in mine}
    arms = [a for a in spec.arms if a in answered]
    sub = spec.model_copy(update={"arms": arms, "families": families, "run_id": None})
    # no judge (a request per answer) and no strata breakdown: what the printed verdict reads is the same
    quiet = settings.model_copy(update={"eval": settings.eval.model_copy(update={"judge_base_url": None,
                                                                                 "strata_field": None})})  # fmt: skip
    row_families = dict.fromkeys(rf for f in families for rf in FAMILIES[f].row_families)
    with tempfile.TemporaryDirectory(prefix="ragft-family-") as tmp:
        store = Store(Path(tmp) / "family.sqlite3")
        try:
            store.create_run("family", Path(spec.corpus).resolve().name, {"spec": sub.model_dump(mode="json"),
                                                                          "settings": {}})  # fmt: skip
            store.update_meta("family", rows={rf: [r.id for r in chosen.get(rf, []) if r.id in ids]
                                              for rf in row_families})  # fmt: skip
            store.add_predictions("family", mine)
            return build_results(store, "family", quiet)
        finally:
            store.close()
