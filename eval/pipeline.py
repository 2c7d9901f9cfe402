"""The use cases the CLI, the job worker and the runner share, wired once.

Open a runtime for a corpus (with its fewshot pools), prepare a corpus for a set of arms
(index it, train or reuse the artifacts they need), and publish a stored run (score it with
the local embedder and write its report files). Each entry point calls these instead of
assembling the steps itself, so a flag such as `force` reaches every path.

Example:
    >>> # prepared = prepare_corpus(settings, Path("corpora/quillmark"), ["rag", "lora"])
    >>> # results, folder = publish_run(settings, run_id)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from eval.tasks import corpus_examples, held_out_inputs, load_tasks, supervised_rows
from service.arms import parse_arms
from service.finetune import TrainProgress, TrainResult, train_artifact
from service.kinds import KINDS, Kind
from service.retrieval import IndexReport
from service.runtime import Runtime
from service.settings import Settings

Stage = Callable[[str, int, int], None]  # (stage description, done, total)


@dataclass
class Prepared:
    """A corpus ready for the given arms: its runtime, what indexing did, and the artifacts trained or reused."""

    runtime: Runtime
    index: IndexReport | None
    artifacts: dict[str, TrainResult] = field(default_factory=dict)


def open_runtime(settings: Settings, corpus: Path) -> Runtime:
    """A runtime for `corpus` with fewshot pools drawn from its train split (none when it has no tasks/)."""
    return Runtime(settings, corpus, corpus_examples(corpus, settings.generation))


def kinds_for(arm_names: list[str]) -> list[Kind]:
    """The artifact kinds the arms need, once each, in arm order."""
    return list(dict.fromkeys(KINDS[a.adapter] for a in parse_arms(arm_names) if a.adapter))


def train_artifacts(
    settings: Settings,
    runtime: Runtime,
    kinds: list[Kind],
    *,
    force: bool = False,
    stage: Stage | None = None,
    progress: Callable[[TrainProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    show_bar: bool = False,
) -> dict[str, TrainResult]:
    """Train (or reuse) each kind's artifact from the corpus's train split; test inputs never enter training."""
    if not kinds:
        return {}
    corpus = runtime.corpus
    rows = load_tasks(corpus)
    sft = supervised_rows(rows, settings.generation.abstention_phrase)
    forbidden = held_out_inputs(rows)
    results = {}
    for i, kind in enumerate(kinds):
        if stage is not None:
            stage(f"train {kind.name}", i, len(kinds))
        if kind.needs_index and not runtime.index_ready:
            runtime.index()
        results[kind.name] = train_artifact(
            settings, corpus, kind, sft, retriever=runtime.retriever() if kind.needs_index else None,
            forbidden_inputs=forbidden, progress=progress, should_stop=should_stop, show_bar=show_bar, force=force,
        )  # fmt: skip
    if stage is not None:
        stage("train", len(kinds), len(kinds))
    return results


def prepare_corpus(
    settings: Settings,
    corpus: Path,
    arm_names: list[str],
    *,
    force: bool = False,
    stage: Stage | None = None,
    should_stop: Callable[[], bool] | None = None,
    show_bars: bool = False,
) -> Prepared:
    """Index the corpus (embedding only what changed) and train or reuse what the arms need."""
    runtime = open_runtime(settings, corpus)
    if stage is not None:
        stage("index", 0, 1)
    report = runtime.index()
    if stage is not None:
        stage("index", 1, 1)
    artifacts = train_artifacts(
        settings, runtime, kinds_for(arm_names), force=force, stage=stage, should_stop=should_stop, show_bar=show_bars
    )
    return Prepared(runtime, report, artifacts)


def publish_run(settings: Settings, run_id: str) -> tuple[dict, Path]:
    """Score a stored run with the local embedder and write results.json, report.md and report.html."""
    from eval.results import publish
    from service import models

    embedder = models.load_embedder(settings.models)
    return publish(settings, run_id, embed=lambda texts: embedder.encode(texts).tolist())
