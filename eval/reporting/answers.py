"""Every answer of a stored run, row by row: each arm's reply with its per-metric scores and its mark (correct,
wrong, abstained), filtered as the web UI's row browser asks, and the rows whose outcome changed between runs.

Scores are recomputed from the database (`ragft.eval.scoring.results.score_predictions`, judge-free, without the embedder:
semantic similarity is the one metric left out), so a row here reads exactly as the report counted it.
A reviewer's mark (`ragft.eval.reporting.review`) is shown beside the measured one; it never replaces it here.

Example:
    >>> # scored = score_run(store, "quillmark-1a2b3c4d5e", settings)
    >>> # shown = filter_rows(row_views(scored), RowFilter(disagree=True))
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

from ragft.eval.families import FAMILIES
from ragft.eval.scoring.metrics import METRICS, headline, report_families
from ragft.eval.scoring.metrics.abstention import abstained
from ragft.eval.scoring.results import score_predictions, scoring_context
from ragft.eval.spec import RunSpec, register_external_arms, replicated_arm
from ragft.eval.store import Prediction, RunRecord, Store, StoredPassage
from ragft.eval.tasks import TaskRow, hash_tasks, load_tasks, reference_output
from ragft.service.arms import ARMS
from ragft.service.settings import Settings


@dataclass(frozen=True)
class ScoredRun:
    """A stored run with its task rows and every measured (arm, metric) -> {row_id: value}, per stored arm
    (extra training seeds, "lora@seed1", kept apart)."""

    run: RunRecord
    spec: RunSpec
    rows: dict[str, TaskRow]
    predictions: list[Prediction]
    values: dict[tuple[str, str], dict[str, object]]
    abstention_phrase: str
    tasks_changed: bool = False  # the corpus's task files differ from those the run answered (its tasks_hash)

    @property
    def tasks_note(self) -> str | None:
        """What a reader must know when the tasks changed since the run: marks here use today's expected answers."""
        if not self.tasks_changed:
            return None
        return (f"The task files of corpus {self.run.corpus} changed after this run answered them: rows are marked "
                "against today's expected answers, so a row whose answer changed may read differently here than in "
                "the run's report (results.json holds the scores as measured). Rerun the eval to score the new "
                "tasks.")  # fmt: skip

    @property
    def arms(self) -> list[str]:
        """Stored arm names in the registry's order, replicates after their arm."""
        stored = {p.arm for p in self.predictions}
        order = list(ARMS)
        return sorted(stored, key=lambda a: (order.index(replicated_arm(a)) if replicated_arm(a) in order else 99, a))


def score_run(store: Store, run_id: str, settings: Settings) -> ScoredRun:
    """Score every stored answer of `run_id` (RunNotFound when there is no such run) against the corpus's task files,
    noting when they are not those the run answered (`ScoredRun.tasks_note`)."""
    run = store.run(run_id)
    register_external_arms(run.config)
    spec = RunSpec.model_validate(run.config["spec"])
    corpus = Path(spec.corpus)
    has_tasks = (corpus / "tasks").is_dir()
    all_rows = load_tasks(corpus, spec.include_unreviewed) if has_tasks else []
    answered = run.meta.get("tasks_hash")  # None: a run stored by `ragft score` or before the hash was kept
    changed = bool(answered) and (not has_tasks or hash_tasks(corpus) != answered)
    wanted = {i for ids in run.meta.get("rows", {}).values() for i in ids}
    rows = {r.id: r for r in all_rows if r.id in wanted}
    predictions = store.predictions(run_id)
    ctx = scoring_context(settings, corpus, list(rows.values()), embed=None, judge=False, all_rows=all_rows)
    ctx.judge = None  # the judge is never called for browsing: it costs a request per answer
    values = score_predictions(predictions, rows, ctx)
    return ScoredRun(run, spec, rows, predictions, dict(values), settings.generation.abstention_phrase, changed)


@dataclass(frozen=True)
class ArmAnswer:
    """One arm's reply to one row, as the report scored it."""

    arm: str
    text: str
    scores: dict[str, float]  # every numeric metric that applies, by name
    headline: float | None  # the row family's headline value (None: not scored)
    outcome: str  # "correct", "wrong", "abstained" (a refusal, neither) or "unscored" (measured; a review beside it)
    abstained: bool
    passages: tuple[StoredPassage, ...]
    cost_ms: float  # its share of the batch wall time, plus retrieval
    retrieve: bool


@dataclass(frozen=True)
class RowView:
    """A test row with every arm's answer."""

    id: str
    family: str  # the task row's family
    kind: str | None
    families: tuple[str, ...]  # the report families that score it (knowledge rows: knowledge, _unseen, abstention)
    input: str
    expected: str
    accepted: tuple[str, ...]  # accepted answers, highlighted in passages
    answers: dict[str, ArmAnswer] = field(default_factory=dict)

    def scored(self) -> list[ArmAnswer]:
        return [a for a in self.answers.values() if a.outcome != "unscored"]

    @property
    def disagree(self) -> bool:
        return len({a.outcome for a in self.scored()}) > 1

    @property
    def all_wrong(self) -> bool:
        return bool(self.scored()) and all(a.outcome == "wrong" for a in self.scored())


def _outcome(
    value, higher_is_better: bool = True, refusal: float | None = None, declining_expected: bool = False
) -> str:
    """The mark a headline value gives a row: correct on at least half credit (or, for a metric where lower is
    better, under half); a three-way score's refusal value is 'abstained', or 'correct' where declining is the
    expected reply."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return "unscored"
    if refusal is not None and float(value) == refusal:
        return "correct" if declining_expected else "abstained"
    return "correct" if (float(value) >= 0.5) == higher_is_better else "wrong"


def row_views(scored: ScoredRun) -> list[RowView]:
    """Every scored test row with every arm's answer, in row-id order."""
    shown = set(report_families())
    by_row: dict[str, list[Prediction]] = defaultdict(list)
    for p in scored.predictions:
        by_row[p.row_id].append(p)
    per_row: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)  # (arm, row) -> metric -> value
    families_of: dict[str, set[str]] = defaultdict(set)
    for (arm, name), values in scored.values.items():
        for row_id, value in values.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                per_row[(arm, row_id)][name] = round(float(value), 4)
            if METRICS[name].family in shown:
                families_of[row_id].add(METRICS[name].family)
    order = scored.arms
    views = []
    for row_id in sorted(by_row):
        row = scored.rows.get(row_id)
        if row is None:
            continue
        top = headline(row.family) if row.family in shown else None
        answers = {}
        for p in sorted(by_row[row_id], key=lambda p: order.index(p.arm)):
            if top is not None and p.phase != top.phase:
                continue  # the other phase's answer (none today: a row is answered in its family's phase)
            value = scored.values.get((p.arm, top.name), {}).get(row_id) if top else None
            arm = ARMS.get(replicated_arm(p.arm))
            answers[p.arm] = ArmAnswer(
                p.arm, p.text, per_row.get((p.arm, row_id), {}), None if value is None else float(value),
                _outcome(value, top.higher_is_better if top else True, top and top.refusal, FAMILIES[row.family].abstains),
                abstained(p.text, scored.abstention_phrase), p.passages, round(p.cost_ms, 1),
                bool(arm and arm.retrieve),
            )  # fmt: skip
        shown_in = [f for f in report_families() if f in families_of[row_id]]
        views.append(RowView(row.id, row.family, row.kind, tuple(shown_in), row.text,
                             reference_output(row, scored.abstention_phrase), tuple(row.answers or ()), answers))  # fmt: skip
    return views


@dataclass(frozen=True)
class RowFilter:
    """What the row browser shows: each field narrows the rows (None / False: no narrowing). "disagree" and
    "all_wrong" read every arm of the row; `arm` then keeps only that arm's answer on show, and `abstained` and
    `q` read the answers on show."""

    family: str | None = None  # a report family that scores the row
    arm: str | None = None  # show this arm's answer only (and rows it answered)
    disagree: bool = False  # the arms' marks differ
    wrong: str | None = None  # rows this arm got wrong
    all_wrong: bool = False  # every arm wrong
    abstained: bool = False  # a shown arm abstained
    q: str | None = None  # text in the row id, input, expected answer or a shown answer (case-insensitive)


def filter_rows(views: list[RowView], f: RowFilter) -> list[RowView]:
    """The rows `f` selects, each with only the arms it shows."""
    out = []
    needle = (f.q or "").strip().lower()
    for v in views:
        if f.family and f.family not in v.families and f.family != v.family:
            continue
        if f.wrong and (f.wrong not in v.answers or v.answers[f.wrong].outcome != "wrong"):
            continue
        if (f.disagree and not v.disagree) or (f.all_wrong and not v.all_wrong):
            continue
        if f.arm:
            if f.arm not in v.answers:
                continue
            v = replace(v, answers={f.arm: v.answers[f.arm]})
        if f.abstained and not any(a.abstained for a in v.answers.values()):
            continue
        text = " ".join([v.id, v.input, v.expected, *(a.text for a in v.answers.values())])
        if needle and needle not in text.lower():
            continue
        out.append(v)
    return out


def highlight(text: str, needles: tuple[str, ...]) -> list[tuple[str, bool]]:
    """`text` cut into (piece, is_match) where any accepted answer occurs (case-insensitive), for <mark>."""
    wanted = sorted({n for n in needles if n and n.strip()}, key=len, reverse=True)
    if not wanted:
        return [(text, False)]
    pattern = re.compile("|".join(re.escape(n) for n in wanted), re.IGNORECASE)
    pieces, at = [], 0
    for m in pattern.finditer(text):
        if m.start() > at:
            pieces.append((text[at : m.start()], False))
        pieces.append((m.group(0), True))
        at = m.end()
    if at < len(text):
        pieces.append((text[at:], False))
    return pieces or [(text, False)]


@dataclass(frozen=True)
class OutcomeChange:
    """A row one arm answered in both runs whose mark changed: "fixed" (wrong -> correct) or "broke"."""

    arm: str
    change: str
    row: RowView  # the later run's row
    before: ArmAnswer
    after: ArmAnswer


def outcome_changes(earlier: list[RowView], later: list[RowView]) -> dict[str, list[OutcomeChange]]:
    """Per arm, the rows whose mark went from wrong to correct ("fixed") or back ("broke"), broken first."""
    before = {v.id: v for v in earlier}
    out: dict[str, list[OutcomeChange]] = defaultdict(list)
    for v in later:
        old = before.get(v.id)
        if old is None:
            continue
        for arm, now in v.answers.items():
            was = old.answers.get(arm)
            if was is None or {was.outcome, now.outcome} != {"correct", "wrong"}:
                continue
            out[arm].append(OutcomeChange(arm, "fixed" if now.outcome == "correct" else "broke", v, was, now))
    return {arm: sorted(items, key=lambda c: (c.change != "broke", c.row.id)) for arm, items in out.items()}
