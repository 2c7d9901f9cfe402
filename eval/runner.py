"""An evaluation run: index, train what the arms need, answer every test row with every arm, store it.

Stages: prepare the corpus (`eval.pipeline`: index it, train or reuse the adapters the arms
need); answer each family's test rows with each arm its entry scores, in batches, committing
each batch; apply `updates/` to a copy of the index (timed: the refresh cost of retrieval) and
answer the rows of families in the 'fresh' phase. A run's id is a hash of everything that
determines its answers, so running the same configuration again reuses every stored
prediction, and a run killed halfway continues where it stopped.

Example:
    >>> # spec = RunSpec.resolve(settings, Path("corpora/quillmark"), arms=["base", "rag"], families=["knowledge"])
    >>> # run_id = run_eval(settings, spec)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from eval.families import FAMILIES
from eval.pipeline import artifact_summary, prepare_corpus
from eval.spec import Progress, RunCancelled, RunSpec, replicate_name
from eval.store import Prediction, Store, StoredPassage
from eval.tasks import TaskRow, example_key, load_tasks
from service.arms import ARMS, Arm, Query, answer
from service.documents import load_documents
from service.retrieval import build_index, index_lock, read_index_manifest
from service.runtime import Runtime
from service.settings import Settings

log = logging.getLogger(__name__)


def select_rows(
    rows: list[TaskRow], families: list[str], limit: int | None, seed: int, family_limits: dict | None = None
) -> dict[str, list[TaskRow]]:
    """Test rows per row family the report families read: all of them, or a seeded sample of `limit` (or of the
    family's own entry in `family_limits`, None meaning every row), the same rows for every arm. Abstention also
    reads the answerable knowledge rows. Where registered families score only one kind of a row family's rows
    (knowledge: paraphrase, unseen), each such kind, and the rest, gets its own sample, whichever families this
    run reports."""
    needed = dict.fromkeys(f for name in families for f in FAMILIES[name].row_families)
    family_limits = family_limits or {}
    chosen = {}
    for family in needed:
        members = sorted((r for r in rows if r.split == "test" and r.family == family), key=lambda r: r.id)
        limit_here = family_limits.get(family, limit)  # an entry of None: every row
        if limit_here is not None:
            members = sorted(_stratified_sample(members, family, limit_here, seed), key=lambda r: r.id)
        chosen[family] = members
    return chosen


def _stratified_sample(members: list[TaskRow], family: str, limit: int, seed: int) -> list[TaskRow]:
    kinds = [f.row_kind for f in FAMILIES.values() if f.row_kind and family in f.row_families]
    strata = {k: [r for r in members if r.kind == k] for k in kinds}
    rest = [r for r in members if r.kind not in strata]
    picked = []
    for kind, group in [*strata.items(), (None, rest)]:
        key = f"{seed}:{family}" + (f":{kind}" if kind else "")  # unstratified families keep their old sample
        picked += random.Random(key).sample(group, limit) if len(group) > limit else group
    return picked


def prompt_arm(arm: Arm, row: TaskRow) -> Arm:
    """The arm as it answers this row: closed-book families (forgetting probes) get its weights, not its prompt."""
    if FAMILIES[row.family].closed_book and (arm.retrieve or arm.fewshot):
        return dataclasses.replace(arm, retrieve=False, fewshot=False)
    return arm


def _to_prediction(arm: str, row: TaskRow, phase: str, a) -> Prediction:
    passages = tuple(StoredPassage(p.chunk_id, p.doc_id, p.text, p.page) for p in a.passages)
    return Prediction(
        arm, row.id, phase, a.text, passages, a.prompt_tokens, a.generated_tokens, a.latency_ms, a.retrieval_ms,
        a.batch_size, a.machine_ms,
    )  # fmt: skip


def run_id_for(settings: Settings, spec: RunSpec, tasks_hash: str, adapters: dict) -> str:
    """A name that changes whenever anything that decides the answers changes."""
    decisive = {
        "arms": spec.arms,
        "families": spec.families,
        "limit": spec.limit,
        **({"family_limits": spec.family_limits} if spec.family_limits else {}),  # absent: older run ids hold
        "seed": spec.seed,
        # how long idle threads spin (omp_spin_count) changes the speed, never the answers
        "models": settings.models.model_dump(mode="json", exclude={"backend_api_key", "omp_spin_count"}),
        "retrieval": settings.retrieval.model_dump(exclude={"embed_batch_size"}),
        "generation": settings.generation.model_dump(exclude={"batch_size", "max_batch_tokens"}),
        "tasks": tasks_hash,
        "answer_tokens": {f: FAMILIES[f].max_new_tokens for f in spec.families},
        "adapters": {k: v.get("fingerprint") for k, v in adapters.items()},
    }
    digest = hashlib.sha256(json.dumps(decisive, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"{Path(spec.corpus).resolve().name}-{digest}"


def _tasks_hash(corpus: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted((Path(corpus) / "tasks").glob("*.jsonl")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def run_eval(
    settings: Settings,
    spec: RunSpec,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    show_bars: bool = False,
    named: Callable[[str], None] | None = None,
) -> str:
    """Run (or resume) an evaluation and return its id; predictions land in the store as they are made. `named`
    hears the run id as soon as it is known (after indexing and training, whose fingerprints it includes)."""
    say = progress or (lambda stage, done, total: None)
    arms = spec.arms
    corpus = Path(spec.corpus)
    rows = load_tasks(corpus)
    chosen = select_rows(rows, spec.families, spec.limit, spec.seed, spec.family_limits)
    if not any(chosen.values()):
        raise ValueError(
            f'corpus \'{corpus}\' has no test rows for families {spec.families}: add rows with "split": "test"'
        )
    prepared = prepare_corpus(settings, corpus, arms, stage=say, should_stop=should_stop, show_bars=show_bars,
                              families=spec.families)  # fmt: skip
    runtime, report = prepared.runtime, prepared.index
    index_manifest = read_index_manifest(runtime.index_dir)
    adapter_meta = artifact_summary(prepared.artifacts)

    tasks_hash = _tasks_hash(corpus)
    run_id = spec.run_id or run_id_for(settings, spec, tasks_hash, adapter_meta)
    if named is not None:
        named(run_id)
    store = Store(settings.database)
    try:
        config = {"spec": spec.model_dump(mode="json"), "settings": settings.recorded()}
        store.create_run(run_id, corpus.resolve().name, config)
        store.set_status(run_id, "evaluating")
        store.update_meta(
            run_id,
            tasks_hash=tasks_hash,
            rows={f: [r.id for r in rs] for f, rs in chosen.items()},
            index={
                "chunks": report.chunks_total,
                "full_build_s": index_manifest.full_build_s if index_manifest else None,
                "this_run_s": round(report.seconds, 3),
                "embedder": settings.models.embedder,
            },  # fmt: skip
            adapters=adapter_meta,
            engine={
                "engine": runtime.engine,
                "compute_type": settings.models.compute_type
                if runtime.engine == "ctranslate2"
                else settings.models.dtype,
            },  # fmt: skip
        )
        by_phase: dict[str, list[TaskRow]] = {}
        for family, members in chosen.items():
            by_phase.setdefault(FAMILIES[family].phase, []).extend(members)
        # adapter arms answer once per training seed: "lora" with the first, "lora@seed1" ... with the others
        answerers = [(a, 0) for a in arms] + [
            (a, i) for i in range(1, settings.eval.training_seeds) for a in arms if ARMS[a].adapter
        ]
        scored = {(a, i): [r for rs in by_phase.values() for r in rs if FAMILIES[r.family].scores(ARMS[a])]
                  for a, i in answerers}  # fmt: skip
        total = sum(len(rs) for rs in scored.values())
        done = [store.count(run_id)]
        # the artifact fingerprints whose weights answered, per stored arm (a retrain mid-run shows as two)
        stored = store.run(run_id).meta
        answered_by: dict[str, set[str]] = {a: set(f) for a, f in stored.get("answered_by", {}).items()}
        # wall-clock seconds each stored arm spent answering (summed over resumes): what its costs must add up to
        answer_wall_s: dict[str, float] = dict(stored.get("answer_wall_s", {}))

        def answer_all(base_rt: Runtime, phase: str, todo_rows: list[TaskRow]) -> None:
            by_id = {r.id: r for r in todo_rows}
            for arm, replicate in answerers:
                rt = base_rt.for_replicate(replicate) if replicate else base_rt
                stored_as = replicate_name(arm, replicate)
                mine = [r.id for r in todo_rows if FAMILIES[r.family].scores(ARMS[arm])]
                missing = store.missing(run_id, stored_as, phase, mine)
                step = settings.eval.rows_per_batch
                for start in range(0, len(missing), step):
                    if should_stop is not None and should_stop():
                        raise RunCancelled(f"run {run_id} stopped after {done[0]} of {total} answers; resume it")
                    batch = [by_id[i] for i in missing[start : start + step]]
                    t0 = time.perf_counter()
                    groups: dict[tuple[Arm, int | None], list[TaskRow]] = {}
                    for r in batch:  # rows asked with another prompt or answer length go in their own batch
                        cap = FAMILIES[r.family].max_new_tokens or settings.generation.max_new_tokens
                        tokens = min(cap, settings.generation.max_new_tokens)  # the setting caps every family
                        groups.setdefault((prompt_arm(ARMS[arm], r), tokens), []).append(r)
                    predictions = []
                    for (asked, max_new_tokens), members in groups.items():
                        queries = [Query(r.text, r.instruction, example_key(r), FAMILIES[r.family].adapter_group)
                                   for r in members]  # fmt: skip
                        answers = answer(asked, rt, queries, max_new_tokens=max_new_tokens)
                        answered_by.setdefault(stored_as, set()).update(a.fingerprint for a in answers if a.fingerprint)
                        predictions += [_to_prediction(stored_as, r, phase, a)
                                        for r, a in zip(members, answers, strict=True)]  # fmt: skip
                    answer_wall_s[stored_as] = round(answer_wall_s.get(stored_as, 0.0) + time.perf_counter() - t0, 3)
                    store.add_predictions(run_id, predictions)
                    store.update_meta(run_id, answered_by={a: sorted(f) for a, f in answered_by.items()},
                                      answer_wall_s=answer_wall_s)  # fmt: skip
                    done[0] += len(batch)
                    say(f"answer {stored_as} ({phase})", done[0], total)

        answer_all(runtime, "main", by_phase.get("main", []))
        if by_phase.get("fresh"):
            fresh_runtime, refresh = _apply_updates(settings, runtime, corpus)
            store.update_meta(run_id, refresh=refresh)
            answer_all(fresh_runtime, "fresh", by_phase["fresh"])
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
    with index_lock(runtime.index_dir):  # a document PUT meanwhile swaps the index whole, never mid-copy
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
