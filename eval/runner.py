"""An evaluation run: index, train what the arms need, answer every test row with every arm, store it.

Stages: index the corpus; train (or reuse) the adapters the chosen arms need; answer each
family's test rows with each arm in batches, committing each batch; apply `updates/` to a
copy of the index (timed: the refresh cost of retrieval) and answer the freshness rows.
A run's id is a hash of everything that determines its answers, so running the same
configuration again reuses every stored prediction, and a run killed halfway continues
where it stopped.

Example:
    >>> # run_id = run_eval(settings, RunSpec(Path("corpora/quillmark"), ["base", "rag"], ["knowledge"], 20, 0))
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from eval.metrics import METRICS
from eval.store import Prediction, Store, StoredPassage
from eval.tasks import TaskRow, corpus_examples, example_key, held_out_inputs, load_tasks, supervised_rows
from service.arms import ARMS, Query, answer, parse_arms
from service.documents import load_documents
from service.retrieval import build_index
from service.runtime import Runtime
from service.settings import Settings

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (stage description, done, total)


class RunCancelled(RuntimeError):
    """The caller asked the run to stop; what was answered so far is stored and the run can be resumed."""


@dataclass(frozen=True)
class RunSpec:
    corpus: Path
    arms: list[str]
    families: list[str]
    limit: int | None = None
    seed: int = 0
    run_id: str | None = None
    extra: dict = field(default_factory=dict)  # recorded in the config, e.g. {"demo": true}


def rows_for(families: list[str]) -> list[str]:
    """The task-row families the report families read (abstention also reads the answerable knowledge rows)."""
    needed = [f for m in METRICS.values() if m.family in families for f in m.reads]
    return list(dict.fromkeys(needed))


def select_rows(rows: list[TaskRow], families: list[str], limit: int | None, seed: int) -> dict[str, list[TaskRow]]:
    """Test rows per task family: all of them, or a seeded sample of `limit` (the same rows for every arm)."""
    chosen = {}
    for family in rows_for(families):
        members = sorted((r for r in rows if r.split == "test" and r.family == family), key=lambda r: r.id)
        if limit is not None and len(members) > limit:
            members = sorted(random.Random(f"{seed}:{family}").sample(members, limit), key=lambda r: r.id)
        chosen[family] = members
    return chosen


def _to_prediction(arm: str, row: TaskRow, phase: str, a) -> Prediction:
    passages = tuple(StoredPassage(p.chunk_id, p.doc_id, p.text) for p in a.passages)
    return Prediction(
        arm, row.id, phase, a.text, passages, a.prompt_tokens, a.generated_tokens, a.latency_ms, a.retrieval_ms,
        a.batch_size,
    )  # fmt: skip


def run_id_for(settings: Settings, spec: RunSpec, tasks_hash: str, adapters: dict) -> str:
    """A name that changes whenever anything that decides the answers changes."""
    decisive = {
        "arms": spec.arms,
        "families": spec.families,
        "limit": spec.limit,
        "seed": spec.seed,
        "models": settings.models.model_dump(),
        "retrieval": settings.retrieval.model_dump(exclude={"embed_batch_size"}),
        "generation": settings.generation.model_dump(exclude={"batch_size", "max_batch_tokens"}),
        "tasks": tasks_hash,
        "adapters": {k: v.get("fingerprint") for k, v in adapters.items()},
    }
    digest = hashlib.sha256(json.dumps(decisive, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"{Path(spec.corpus).resolve().name}-{digest}"


def _tasks_hash(corpus: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted((Path(corpus) / "tasks").glob("*.jsonl")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def _adapter_summary(manifest: dict) -> dict:
    keys = ("fingerprint", "base_model", "base_model_hash", "data_hash", "wall_s", "cpu_s", "tokens_processed",
            "tokens_per_s", "train_loss_final", "val_loss", "trainable_params", "size_bytes", "peak_rss_mib",
            "stopped_early", "examples", "token_budget")  # fmt: skip
    return {k: manifest.get(k) for k in keys}


def run_eval(
    settings: Settings,
    spec: RunSpec,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    show_bars: bool = False,
) -> str:
    """Run (or resume) an evaluation and return its id; predictions land in the store as they are made."""
    from service.finetune import train_arm

    say = progress or (lambda stage, done, total: None)
    arms = [a.name for a in parse_arms(spec.arms)]
    unknown = [f for f in spec.families if f not in {m.family for m in METRICS.values()}]
    if unknown:
        raise ValueError(f"unknown famil(ies) {unknown}; choose from {sorted({m.family for m in METRICS.values()})}")
    corpus = Path(spec.corpus)
    rows = load_tasks(corpus)
    chosen = select_rows(rows, spec.families, spec.limit, spec.seed)
    if not any(chosen.values()):
        raise ValueError(
            f'corpus \'{corpus}\' has no test rows for families {spec.families}: add rows with "split": "test"'
        )

    runtime = Runtime(settings, corpus, corpus_examples(corpus, settings.generation))
    say("index", 0, 1)
    report = runtime.index()
    index_manifest = json.loads((runtime.index_dir / "manifest.json").read_text())
    say("index", 1, 1)

    adapter_meta = {}
    kinds = [ARMS[a].adapter for a in arms if ARMS[a].adapter]
    if kinds:
        sft = supervised_rows(rows, settings.generation.abstention_phrase)
        for i, kind in enumerate(kinds):
            say(f"train {kind}", i, len(kinds))
            result = train_arm(
                settings, corpus, kind, sft, forbidden_inputs=held_out_inputs(rows), should_stop=should_stop,
                show_bar=show_bars,
            )  # fmt: skip
            adapter_meta[kind] = _adapter_summary(result.manifest) | {"reused": result.reused}
        say("train", len(kinds), len(kinds))

    run_id = spec.run_id or run_id_for(settings, spec, _tasks_hash(corpus), adapter_meta)
    store = Store(settings.database)
    try:
        config = {"spec": asdict(spec) | {"arms": arms, "corpus": str(corpus)}, "settings": settings.model_dump()}
        store.create_run(run_id, corpus.resolve().name, config)
        store.set_status(run_id, "evaluating")
        store.update_meta(
            run_id,
            tasks_hash=_tasks_hash(corpus),
            rows={f: [r.id for r in rs] for f, rs in chosen.items()},
            index={
                "chunks": report.chunks_total,
                "full_build_s": index_manifest.get("full_build_s"),
                "this_run_s": round(report.seconds, 3),
                "embedder": settings.models.embedder,
            },  # fmt: skip
            adapters=adapter_meta,
        )
        main_rows = [r for f, rs in chosen.items() if f != "freshness" for r in rs]
        fresh_rows = chosen.get("freshness", [])
        total = len(arms) * (len(main_rows) + len(fresh_rows))
        done = [store.count(run_id)]

        def answer_all(rt: Runtime, phase: str, todo_rows: list[TaskRow]) -> None:
            by_id = {r.id: r for r in todo_rows}
            for arm in arms:
                missing = store.missing(run_id, arm, phase, [r.id for r in todo_rows])
                step = settings.eval.rows_per_batch
                for start in range(0, len(missing), step):
                    if should_stop is not None and should_stop():
                        raise RunCancelled(f"run {run_id} stopped after {done[0]} of {total} answers; resume it")
                    batch = [by_id[i] for i in missing[start : start + step]]
                    queries = [Query(r.text, r.instruction, example_key(r)) for r in batch]
                    answers = answer(ARMS[arm], rt, queries)
                    store.add_predictions(
                        run_id, [_to_prediction(arm, r, phase, a) for r, a in zip(batch, answers, strict=True)]
                    )
                    done[0] += len(batch)
                    say(f"answer {arm} ({phase})", done[0], total)

        answer_all(runtime, "main", main_rows)
        if fresh_rows:
            fresh_runtime, refresh = _apply_updates(settings, runtime, corpus)
            store.update_meta(run_id, refresh=refresh)
            answer_all(fresh_runtime, "fresh", fresh_rows)
        store.set_status(run_id, "done")
    except RunCancelled:
        store.set_status(run_id, "cancelled")
        raise
    except Exception as exc:
        store.set_status(run_id, "failed", error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        store.close()
    return run_id


def _apply_updates(settings: Settings, runtime: Runtime, corpus: Path) -> tuple[Runtime, dict]:
    """Copy the index, apply `updates/` incrementally (timed) and return a runtime that searches the result."""
    updates = corpus / "updates"
    if not updates.is_dir():
        raise ValueError(f"freshness rows need the corpus's updates/ folder, and {updates} does not exist")
    documents = {d.doc_id: d for d in load_documents(corpus / "documents")}
    changed = load_documents(updates)
    documents.update({d.doc_id: d for d in changed})
    folder = settings.data_dir / "indexes" / f"{corpus.resolve().name}+updates"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(runtime.index_dir, folder)
    runtime.load_generation()  # load once so both runtimes share it
    t0 = time.perf_counter()
    report = build_index(
        sorted(documents.values(), key=lambda d: d.doc_id), runtime.embedder(), settings.models.embedder,
        settings.retrieval, folder,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    refresh = {
        "documents_changed": len(changed),
        "chunks_embedded": report.chunks_embedded,
        "reindex_s": round(seconds, 3),
    }
    return runtime.with_index(folder), refresh
