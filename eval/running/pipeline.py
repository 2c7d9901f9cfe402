"""The use cases the CLI, the job worker and the runner share, wired once.

Open a runtime for a corpus (with its fewshot pools) and prepare a corpus for a set of arms
(index it, train or reuse the artifacts they need). Each entry point calls these instead of
assembling the steps itself, so a flag such as `force` reaches every path; publishing a
stored run is `ragft.eval.reporting.report.publish_run`.

Example:
    >>> # prepared = prepare_corpus(settings, Path("corpora/quillmark"), ["rag", "lora"])
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ragft.eval.families import FAMILIES, adapter_groups
from ragft.eval.tasks import TaskRow, corpus_examples, held_out_inputs, load_tasks, supervised_rows
from ragft.service.arms import parse_arms
from ragft.service.finetune import TrainProgress, TrainResult, train_artifact
from ragft.service.kinds import KINDS, Kind
from ragft.service.retrieval import IndexReport
from ragft.service.runtime import Runtime
from ragft.service.settings import Settings
from ragft.service.training_data import SupervisedRow

Stage = Callable[[str, int, int], None]  # (stage description, done, total)


@dataclass
class Prepared:
    """A corpus ready for the given arms: its runtime, what indexing did, and the artifacts trained or reused."""

    runtime: Runtime
    index: IndexReport | None
    artifacts: dict[str, list[TrainResult]] = field(default_factory=dict)  # kind -> one per adapter group


def open_runtime(settings: Settings, corpus: Path) -> Runtime:
    """A runtime for `corpus` with fewshot pools drawn from its train split (none when it has no tasks/)."""
    return Runtime(settings, corpus, corpus_examples(corpus, settings.generation))


def kinds_for(arm_names: list[str]) -> list[Kind]:
    """The artifact kinds the arms need, once each, in arm order."""
    return list(dict.fromkeys(KINDS[a.adapter] for a in parse_arms(arm_names) if a.adapter))


def demo_settings(settings: Settings) -> Settings:
    """The settings `ragft demo` trains with: `eval.demo_train_rows` per family (unless lora.max_rows_per_family
    is set) for `eval.demo_epochs` (per group: `eval.demo_epochs_by_group`, under any lora.epochs_by_group); the
    report declares them."""
    lora = settings.lora
    rows = lora.max_rows_per_family if lora.max_rows_per_family is not None else settings.eval.demo_train_rows
    by_group = settings.eval.demo_epochs_by_group | lora.epochs_by_group
    lora = lora.model_copy(update={"max_rows_per_family": rows, "epochs": settings.eval.demo_epochs,
                                   "epochs_by_group": by_group})  # fmt: skip
    return settings.model_copy(update={"lora": lora})


def capped_order(settings: Settings, rows: list[TaskRow]) -> dict[str, list[SupervisedRow]]:
    """Per trainable family, its supervised train rows in the order a row cap takes them: the rows test paraphrases
    restate first (so a subset still teaches the facts the paraphrase rows ask about), seeded within
    (generation.seed), so every larger subset holds the smaller (the curve's nested points read it too)."""
    sft = supervised_rows(rows, settings.generation.abstention_phrase)
    restated = {r.paraphrase_of for r in rows if r.split == "test" and r.paraphrase_of}
    out = {}
    for family in dict.fromkeys(r.family for r in sft):
        members = [r for r in sft if r.family == family]
        random.Random(f"{settings.generation.seed}:subset:{family}").shuffle(members)
        members.sort(key=lambda r: r.row_id not in restated)  # stable: restated rows first, seeded order within
        out[family] = members
    return out


def training_rows(settings: Settings, rows: list[TaskRow], kind: str | None = None) -> list[SupervisedRow]:
    """The train rows adapters learn from: every trainable family's, or the first `lora.max_rows_per_family` of
    each family's `capped_order` (one count for all, or one per family, where a "<kind>/<family>" entry overrides
    the family's for that kind); a cap at or above a family's rows keeps them in the order uncapped training has,
    so that adapter is the one `ragft train` makes. Test rows never enter."""
    sft = supervised_rows(rows, settings.generation.abstention_phrase)
    caps = settings.lora.max_rows_per_family
    if caps is None:
        return sft
    kept = []
    for family, members in capped_order(settings, rows).items():
        cap = caps.get(f"{kind}/{family}", caps.get(family)) if isinstance(caps, dict) else caps
        if cap is None or cap >= len(members):  # a family the allocation does not name, or names in full
            kept += [r for r in sft if r.family == family]
        else:
            kept += members[:cap]
    return kept


def train_artifacts(
    settings: Settings,
    runtime: Runtime,
    kinds: list[Kind],
    *,
    force: bool = False,
    stage: Stage | None = None,
    progress: Callable[[TrainProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    show_bars: bool = False,
    groups: set[str] | None = None,
    include_unreviewed: bool = False,
) -> dict[str, list[TrainResult]]:
    """Train (or reuse) each kind's artifacts from the corpus's train split: one per adapter group under
    lora.scope=per_family (for kinds trained per group; only `groups` when given), else one on every row. Test
    inputs never enter training."""
    if not kinds:
        return {}
    corpus = runtime.corpus
    rows = load_tasks(corpus, include_unreviewed)  # pending generated rows train only when a run counts them
    forbidden = held_out_inputs(rows)
    per_group = settings.lora.scope == "per_family"
    plan = []
    for kind in kinds:
        sft = training_rows(settings, rows, kind.name)
        if kind.scoped and per_group:
            for group, families in adapter_groups().items():
                if groups is not None and group not in groups:
                    continue
                members = [r for r in sft if r.family in families]
                if members:
                    plan.append((kind, group, members, any(FAMILIES[f].learns_documents for f in families)))
        else:
            plan.append((kind, None, sft, True))
    plan = [(*step, replicate) for replicate in range(settings.eval.training_seeds) for step in plan]
    results: dict[str, list[TrainResult]] = {}
    for i, (kind, group, members, documents, replicate) in enumerate(plan):
        label = (f"{kind.name}/{group}" if group else kind.name) + (f"@seed{replicate}" if replicate else "")
        if stage is not None:
            stage(f"train {label}", i, len(plan))
        if kind.needs_index and not runtime.index_ready:
            runtime.index()
        results.setdefault(kind.name, []).append(train_artifact(
            settings, corpus, kind, members, group=group, replicate=replicate,
            retriever=runtime.retriever() if kind.needs_index else None,
            with_documents=kind.with_documents and documents and (kind.full_model or settings.lora.document_epochs > 0),
            forbidden_inputs=forbidden, progress=progress, should_stop=should_stop, show_bar=show_bars, force=force,
        ))  # fmt: skip
    if stage is not None:
        stage("train", len(plan), len(plan))
    return results


def artifact_summary(artifacts: dict[str, list[TrainResult]]) -> dict[str, dict]:
    """Per kind, what a run records about the artifacts it used: totals over its adapter groups (training time,
    tokens, size) and each group's own figures."""
    out = {}
    for kind, results in artifacts.items():
        groups = {(r.group or "all") + (f"@seed{r.replicate}" if r.replicate else ""):
                  r.manifest.summary() | {"reused": r.reused} for r in results}  # fmt: skip
        total = {key: sum(g.get(key) or 0 for g in groups.values())
                 for key in ("wall_s", "cpu_s", "tokens_processed", "size_bytes")}  # fmt: skip
        out[kind] = total | {
            "fingerprint": "+".join(g["fingerprint"] for g in groups.values()),
            "trainable_params": max(g["trainable_params"] for g in groups.values()),
            "undertrained": any((g.get("training") or {}).get("undertrained") for g in groups.values()),
            "reused": all(g["reused"] for g in groups.values()),
            "groups": groups,
        }
    return out


def index_corpus(settings: Settings, corpus: Path, stage: Stage | None = None) -> tuple[Runtime, IndexReport]:
    """A runtime for `corpus` with its index built or updated (embedding only what changed)."""
    runtime = open_runtime(settings, corpus)
    if stage is not None:
        stage("index", 0, 1)
    report = runtime.index()
    if stage is not None:
        stage("index", 1, 1)
    return runtime, report


def groups_for(families: list[str] | None) -> set[str] | None:
    """The adapter groups whose rows `families` ask (None: every group)."""
    if families is None:
        return None
    return {FAMILIES[r].adapter_group for f in families for r in FAMILIES[f].row_families}


def prepare_corpus(
    settings: Settings,
    corpus: Path,
    arm_names: list[str],
    *,
    force: bool = False,
    stage: Stage | None = None,
    should_stop: Callable[[], bool] | None = None,
    show_bars: bool = False,
    families: list[str] | None = None,
) -> Prepared:
    """Index the corpus (embedding only what changed) and train or reuse what the arms need for `families`
    (default: every family)."""
    runtime, report = index_corpus(settings, corpus, stage)
    artifacts = train_artifacts(
        settings, runtime, kinds_for(arm_names), force=force, stage=stage, should_stop=should_stop, show_bars=show_bars,
        groups=groups_for(families),
    )  # fmt: skip
    return Prepared(runtime, report, artifacts)
