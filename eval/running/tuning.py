"""Hyperparameters chosen on validation rows carved from the train rows, never on test rows.

A setting picked because it scored best on the test rows makes the test rows part of training: the reported figure
is then the best of several draws, not an estimate (Cawley & Talbot 2010, "On over-fitting in model selection").
`ragft tune` therefore writes a tuning corpus of its own: one family's train rows split, by a seeded draw
stratified by row kind, into fit rows (still train) and validation rows (now its test rows); the corpus's test
rows are not in it at all. Each candidate setting then runs through the ordinary runner and scorer on that corpus,
and the candidate with the best headline on the validation rows is named, with its interval, so a reader can see
whether the grid's differences are larger than the rows can tell.

Example:
    >>> candidates(["lora.learning_rate=5e-4,1e-3", "lora.epochs=1,2"])[1]
    {'lora.learning_rate': '5e-4', 'lora.epochs': '2'}
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ragft.eval.families import FAMILIES, row_families
from ragft.eval.tasks import TaskRow, load_tasks
from ragft.service.settings import Settings, with_overrides

MIN_VALIDATION_ROWS = 5


@dataclass(frozen=True)
class Tried:
    """One candidate's outcome on the validation rows."""

    overrides: dict[str, str]
    run_id: str
    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: int


@dataclass
class Tuning:
    """What `ragft tune` found, as written to tuning.json."""

    corpus: str
    family: str
    arm: str
    metric: str
    seed: int
    fit_rows: int
    validation_rows: int
    higher_is_better: bool = True
    tried: list[Tried] = field(default_factory=list)

    @property
    def best(self) -> Tried | None:
        """The highest headline (lowest where lower is better); ties keep the first candidate of the grid."""
        scored = [t for t in self.tried if t.value is not None]
        if not scored:
            return None
        sign = 1 if self.higher_is_better else -1
        return max(scored, key=lambda t: sign * t.value)  # max keeps the first of equals

    @property
    def separated(self) -> bool:
        """Whether the best candidate's interval clears every other candidate's: otherwise the grid's differences
        are within what the validation rows can tell, and the summary says the choice follows point estimates."""
        best = self.best
        if best is None:
            return False
        others = [t for t in self.tried if t is not best and t.value is not None]
        higher = self.higher_is_better
        return bool(others) and all((best.ci_low > t.ci_high) if higher else (best.ci_high < t.ci_low) for t in others)

    def to_json(self) -> dict:
        best = self.best
        return asdict(self) | {"best": asdict(best) if best else None, "separated": self.separated}


def candidates(grid: list[str]) -> list[dict[str, str]]:
    """Every combination of the grid's values, in the order given: `key=v1,v2` per axis (a key may reach into a
    mapping setting, e.g. `lora.learning_rate_by_group.lora/behaviour=5e-4,1e-3`)."""
    axes = []
    for item in grid:
        key, sep, values = item.partition("=")
        options = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not key or not options:
            raise ValueError(f"'{item}' is not setting=value1,value2 (e.g. lora.learning_rate=5e-4,1e-3)")
        axes.append([(key.strip(), v) for v in options])
    if not axes:
        raise ValueError("give at least one --grid setting=value1,value2 to choose between")
    return [dict(combo) for combo in itertools.product(*axes)]


def split_for_validation(
    rows: list[TaskRow], family: str, share: float, seed: int
) -> tuple[list[TaskRow], list[TaskRow]]:
    """(fit rows, validation rows) from `family`'s train rows: `share` of each row kind, by a seeded draw. A
    validation row becomes a test row: its rephrasings (train-only wordings) are dropped, and a row whose text a fit
    row also has goes to the fit rows, so no validation question is trained on word for word."""
    train = [r for r in rows if r.family == family and r.split == "train"]
    by_kind: dict[str | None, list[TaskRow]] = {}
    for r in sorted(train, key=lambda r: r.id):
        by_kind.setdefault(r.kind, []).append(r)
    rng = random.Random(f"{seed}:validation-rows:{family}")
    fit, held = [], []
    for kind in sorted(by_kind, key=str):
        members = by_kind[kind]
        rng.shuffle(members)
        cut = round(len(members) * share)
        held += members[:cut]
        fit += members[cut:]
    fit_texts = {r.text.strip().lower() for r in fit}
    repeated = [r for r in held if r.text.strip().lower() in fit_texts]
    held = [r for r in held if r not in repeated]
    validation = [
        TaskRow.model_validate(r.model_dump(by_alias=True) | {"split": "test", "rephrasings": []}) for r in held
    ]
    return fit + repeated, validation


def tuning_corpus(corpus: Path, rows: list[TaskRow], family: str, share: float, seed: int, root: Path) -> Path:
    """A corpus folder holding the original documents (and updates) by link and only `family`'s fit and validation
    rows; named by what it holds, so the same split is written once and its index and answers are reused."""
    fit, validation = split_for_validation(rows, family, share, seed)
    if len(validation) < MIN_VALIDATION_ROWS or not fit:
        raise ValueError(
            f"family '{family}' has {len(fit) + len(validation)} train rows: a validation share of {share} leaves "
            f"{len(validation)} validation and {len(fit)} fit rows; tuning needs at least {MIN_VALIDATION_ROWS} "
            "validation rows and one fit row (add train rows or raise --validation-share)"
        )
    text = "".join(
        json.dumps(r.model_dump(by_alias=True, exclude_none=True, exclude_defaults=True), ensure_ascii=False) + "\n"
        for r in [*fit, *validation]
    )
    digest = hashlib.sha256(f"{Path(corpus).resolve()}\n{text}".encode()).hexdigest()[:10]
    folder = root / f"{Path(corpus).resolve().name}-{family}-validation-{digest}"
    (folder / "tasks").mkdir(parents=True, exist_ok=True)
    (folder / "tasks" / f"{family}.jsonl").write_text(text, encoding="utf-8")
    for part in ("documents", "updates"):
        source, link = (Path(corpus) / part).resolve(), folder / part
        if source.is_dir() and not link.exists():
            link.symlink_to(source, target_is_directory=True)
    return folder


def tune(
    settings: Settings,
    corpus: Path,
    *,
    family: str,
    arm: str,
    grid: list[str],
    share: float = 0.33,
    prepare: Callable[[Settings], Settings] = lambda s: s,
    say: Callable[[str], None] = lambda line: None,
) -> tuple[Tuning, Path]:
    """Run `arm` on the validation rows once per grid candidate and write tuning.json; (what was found, its path).
    `prepare` turns each candidate's settings into the ones the run trains with (the demo's subset rules)."""
    from ragft.eval.reporting.report import publish_run
    from ragft.eval.running.runner import run_eval
    from ragft.eval.spec import RunSpec

    if family not in row_families():
        raise ValueError(f"unknown family '{family}' to tune on; use one with rows: {', '.join(row_families())}")
    options = candidates(grid)
    for overrides in options:  # every candidate is a valid setting before the first one trains for minutes
        with_overrides(settings, [f"{k}={v}" for k, v in overrides.items()])
    seed = settings.generation.seed
    folder = tuning_corpus(corpus, load_tasks(corpus), family, share, seed, settings.data_dir / "tuning")
    rows = load_tasks(folder)
    tuning = Tuning(
        corpus=str(corpus), family=family, arm=arm, metric=FAMILIES[family].headline, seed=seed,
        fit_rows=sum(r.split == "train" for r in rows), validation_rows=sum(r.split == "test" for r in rows),
    )  # fmt: skip
    for i, overrides in enumerate(options, 1):
        trial = prepare(with_overrides(settings, [f"{k}={v}" for k, v in overrides.items()]))
        say(f"[{i}/{len(options)}] {_label(overrides)}")
        spec = RunSpec.resolve(trial, folder, arms=[arm], families=[family], limit=None, seed=seed)
        run_id = run_eval(trial, spec)
        results, _ = publish_run(trial, run_id)
        block = results["families"][family]
        tuning.higher_is_better = block["higher_is_better"]
        cell = block["arms"][arm][tuning.metric]
        tuning.tried.append(Tried(overrides, run_id, cell["value"], cell["ci_low"], cell["ci_high"], cell["n"]))
        say(f"      {tuning.metric} {_figure(tuning.tried[-1])} on {cell['n']} validation rows (run {run_id})")
    out = folder / "tuning.json"
    out.write_text(json.dumps(tuning.to_json(), indent=2) + "\n", encoding="utf-8")
    return tuning, out


def summary(tuning: Tuning) -> list[str]:
    """The lines `ragft tune` prints: each candidate's figure, the choice, and whether the rows can tell."""
    best = tuning.best
    lines = [f"{tuning.arm} on {tuning.family}: {tuning.validation_rows} validation rows carved from the train rows "
             f"({tuning.fit_rows} fit rows; no test row is read)"]  # fmt: skip
    for t in tuning.tried:
        mark = "  <- best" if t is best else ""
        lines.append(f"  {_label(t.overrides):60} {tuning.metric} {_figure(t)}{mark}")
    if best is None:
        return [*lines, "no candidate produced a score"]
    sets = " ".join(f"--set {k}={v}" for k, v in best.overrides.items())
    lines.append(f"choose: {sets}")
    if not tuning.separated:
        lines.append("the intervals overlap: the validation rows cannot tell these candidates apart, so the choice "
                     "follows the point estimates (equal ones: the grid's first); more rows or training seeds would "
                     "separate them")  # fmt: skip
    return lines


def _label(overrides: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in overrides.items())


def _figure(t: Tried) -> str:
    if t.value is None:
        return "n/a"
    return f"{t.value:.3f} [{t.ci_low:.3f}, {t.ci_high:.3f}]"
