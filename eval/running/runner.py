"""An evaluation run: index, answer with the arms that need no training, train, answer with the rest, store it.

Stages: index the corpus (`ragft.eval.running.pipeline`); answer every test row the untrained arms (base, fewshot, rag) score,
the 'fresh' phase after `updates/` is applied to a copy of the index (timed: the refresh cost of retrieval); train
or reuse the adapters the other arms need; then those arms answer. Each arm's rows are cut into the batches they
always were (`plan_batches`), answered a row family at a time, so each family's figures are shown as soon as it is
answered (`ragft.eval.running.early_results`): provisional once the untrained arms have answered it, final once every arm has.
A run's id is a hash of everything that determines its answers, adapter fingerprints included, so it is known
after training: the answers made before are kept in memory (and in the answer cache) until then. Running the same
configuration again reuses every stored prediction, a run killed halfway continues where it stopped, and any
answer another run already made for the same prompt and weights comes from the answer cache
(`ragft.eval.running.prediction_cache`).

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
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ragft.eval.families import FAMILIES
from ragft.eval.running.early_results import FamilyAnswered, FamilyWatch, family_results
from ragft.eval.running.pipeline import artifact_summary, groups_for, index_corpus, kinds_for, train_artifacts
from ragft.eval.running.prediction_cache import AnswerCache, CachingRuntime, answering_settings
from ragft.eval.spec import Progress, RunCancelled, RunSpec, replicate_name
from ragft.eval.store import Prediction, Store, StoredPassage
from ragft.eval.tasks import TaskRow, example_key, hash_tasks, load_tasks
from ragft.service.arms import ARMS, Arm, Query, answer
from ragft.service.documents import load_documents
from ragft.service.retrieval import build_index, index_lock, read_index_manifest
from ragft.service.runtime import Runtime
from ragft.service.settings import Settings

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


def _to_prediction(arm: str, row: TaskRow, phase: str, a, reused: bool = False) -> Prediction:
    passages = tuple(StoredPassage(p.chunk_id, p.doc_id, p.text, p.page) for p in a.passages)
    return Prediction(
        arm, row.id, phase, a.text, passages, a.prompt_tokens, a.generated_tokens, a.latency_ms, a.retrieval_ms,
        a.batch_size, a.machine_ms, reused,
    )  # fmt: skip


def run_id_for(settings: Settings, spec: RunSpec, tasks_hash: str, adapters: dict) -> str:
    """A name that changes whenever anything that decides the answers changes."""
    decisive = {
        "arms": spec.arms,
        "families": spec.families,
        "limit": spec.limit,
        **({"family_limits": spec.family_limits} if spec.family_limits else {}),  # absent: older run ids hold
        **({"include_unreviewed": True} if spec.include_unreviewed else {}),
        "seed": spec.seed,
        **answering_settings(settings),  # models and generation
        "retrieval": settings.retrieval.model_dump(exclude={"embed_batch_size"}),
        "tasks": tasks_hash,
        "answer_tokens": {f: FAMILIES[f].max_new_tokens for f in spec.families},
        "adapters": {k: v.get("fingerprint") for k, v in adapters.items()},
    }
    digest = hashlib.sha256(json.dumps(decisive, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"{Path(spec.corpus).resolve().name}-{digest}"


@dataclass(frozen=True)
class Batch:
    """Rows one arm (at one training seed) answers and commits together."""

    phase: str
    arm: str
    replicate: int
    rows: tuple[TaskRow, ...]

    @property
    def stored_as(self) -> str:
        return replicate_name(self.arm, self.replicate)


def plan_batches(
    settings: Settings, answerers: list[tuple[str, int]], phase: str, rows: list[TaskRow], missing
) -> list[Batch]:
    """Each answerer's rows of `phase` that `missing(stored_as, phase, ids)` leaves, in row order, cut into
    eval.rows_per_batch, then ordered a row family at a time (every arm answers one family's rows before the next
    family starts), so a family's figures are ready as early as they can be. The order changes no answer: a
    batch keeps its rows, and an engine's answers depend on the prompts of one call, never on what ran before."""
    step = settings.eval.rows_per_batch
    batches = []
    for arm, replicate in answerers:
        mine = [r for r in rows if FAMILIES[r.family].scores(ARMS[arm])]
        by_id = {r.id: r for r in mine}
        todo = [by_id[i] for i in missing(replicate_name(arm, replicate), phase, [r.id for r in mine])]
        batches += [Batch(phase, arm, replicate, tuple(todo[s : s + step])) for s in range(0, len(todo), step)]
    position = {f: i for i, f in enumerate(dict.fromkeys(r.family for r in rows))}
    order = {id(b): i for i, b in enumerate(batches)}
    return sorted(batches, key=lambda b: (min(position[r.family] for r in b.rows), order[id(b)]))


class _Answering:
    """Answers batches through the answer cache and keeps the run's bookkeeping: which artifacts answered each
    arm, the wall clock each arm spent answering, and the count of answers so far."""

    def __init__(self, settings: Settings, cache: AnswerCache, say: Progress, total: int):
        self.settings, self.cache, self.say, self.total = settings, cache, say, total
        self.done = 0
        # the artifact fingerprints whose weights answered, per stored arm (a retrain mid-run shows as two)
        self.answered_by: dict[str, set[str]] = {}
        # wall-clock seconds each stored arm spent answering (summed over resumes): what its costs must add up to
        self.answer_wall_s: dict[str, float] = {}

    def resume(self, stored: dict) -> None:
        """Add what a run stored before (it is being resumed) to what was answered here."""
        for arm, fingerprints in stored.get("answered_by", {}).items():
            self.answered_by.setdefault(arm, set()).update(fingerprints)
        for arm, seconds in stored.get("answer_wall_s", {}).items():
            self.answer_wall_s[arm] = round(self.answer_wall_s.get(arm, 0.0) + seconds, 3)

    def meta(self) -> dict:
        return {"answered_by": {a: sorted(f) for a, f in self.answered_by.items()},
                "answer_wall_s": self.answer_wall_s}  # fmt: skip

    def answer(self, runtime: Runtime, batch: Batch) -> list[Prediction]:
        """`batch` answered: rows asked with another prompt, answer length or adapter go in their own call, in the
        order they always have."""
        settings = self.settings
        rt = runtime.for_replicate(batch.replicate) if batch.replicate else runtime
        cached = CachingRuntime(rt, self.cache)
        t0 = time.perf_counter()
        groups: dict[tuple[Arm, int], dict[str, list[TaskRow]]] = {}
        for r in batch.rows:
            cap = FAMILIES[r.family].max_new_tokens or settings.generation.max_new_tokens
            tokens = min(cap, settings.generation.max_new_tokens)  # the setting caps every family
            by_group = groups.setdefault((prompt_arm(ARMS[batch.arm], r), tokens), {})
            by_group.setdefault(FAMILIES[r.family].adapter_group, []).append(r)  # as `answer` splits them
        predictions = []
        for (asked, max_new_tokens), by_group in groups.items():
            for members in by_group.values():
                queries = [Query(r.text, r.instruction, example_key(r), FAMILIES[r.family].adapter_group)
                           for r in members]  # fmt: skip
                self.cache.last_reused = []
                answers = answer(asked, cached, queries, max_new_tokens=max_new_tokens)
                fingerprints = {a.fingerprint for a in answers if a.fingerprint}
                self.answered_by.setdefault(batch.stored_as, set()).update(fingerprints)
                predictions += [_to_prediction(batch.stored_as, r, batch.phase, a, reused)
                                for r, a, reused in zip(members, answers, self.cache.last_reused, strict=True)]  # fmt: skip
        spent = self.answer_wall_s.get(batch.stored_as, 0.0) + time.perf_counter() - t0
        self.answer_wall_s[batch.stored_as] = round(spent, 3)
        self.done += len(batch.rows)
        self.say(f"answer {batch.stored_as} ({batch.phase})", self.done, self.total)
        return predictions


def run_eval(
    settings: Settings,
    spec: RunSpec,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    show_bars: bool = False,
    named: Callable[[str], None] | None = None,
    on_family: Callable[[FamilyAnswered], None] | None = None,
    reuse: bool = True,
) -> str:
    """Run (or resume) an evaluation and return its id; predictions land in the store as they are made.

    Arms that need no training answer first, then the adapters train and their arms answer. `on_family` hears
    each report family's figures as soon as it is answered: provisional when the untrained arms have answered it
    (while adapters still have to train), final when every arm has. `named` hears the run id as soon as it is
    known (after training, whose fingerprints it includes). Answers come from the answer cache where it holds
    them (`ragft.eval.running.prediction_cache`); `reuse=False` reads nothing from it and names a new run."""
    say = progress or (lambda stage, done, total: None)
    corpus = Path(spec.corpus)
    rows = load_tasks(corpus, spec.include_unreviewed)
    chosen = select_rows(rows, spec.families, spec.limit, spec.seed, spec.family_limits)
    if not any(chosen.values()):
        raise ValueError(
            f'corpus \'{corpus}\' has no test rows for families {spec.families}: add rows with "split": "test"'
        )
    runtime, report = index_corpus(settings, corpus, stage=say)
    by_phase: dict[str, list[TaskRow]] = {}
    for family, members in chosen.items():
        by_phase.setdefault(FAMILIES[family].phase, []).extend(members)
    # adapter arms answer once per training seed: "lora" with the first, "lora@seed1" ... with the others
    answerers = [(a, 0) for a in spec.arms] + [
        (a, i) for i in range(1, settings.eval.training_seeds) for a in spec.arms if ARMS[a].adapter
    ]
    total = sum(1 for a, _ in answerers for rs in by_phase.values() for r in rs if FAMILIES[r.family].scores(ARMS[a]))
    untrained = [(a, i) for a, i in answerers if not ARMS[a].adapter]
    early = untrained if len(untrained) < len(answerers) else []  # with adapters to train: the others go first

    def tell(watch: FamilyWatch, done: set, answers: list[Prediction], final: bool) -> None:
        if on_family is None:
            return
        ready = watch.completed(done)
        if not ready:
            return
        arms = tuple(dict.fromkeys(a for a, _ in (answerers if final else early)))
        waiting = tuple(a for a in spec.arms if a not in arms)
        try:
            results = family_results(settings, spec, chosen, ready, answers)
        except Exception:  # figures shown early are a courtesy: the report at the end still has them all
            log.warning("could not score %s early; the report will show it", ", ".join(ready), exc_info=True)
            return
        for family in ready:
            on_family(FamilyAnswered(family, arms, waiting, final, results))

    store = Store(settings.database)
    answering = _Answering(settings, AnswerCache(store, settings, runtime.engine, read=reuse), say, total)
    run_id: str | None = None  # known after training
    runtimes: dict[str, Runtime] = {"main": runtime}
    refresh: dict = {}

    def answer_stage(who: list[tuple[str, int]], missing, keep, answers: list[Prediction], final: bool) -> None:
        """`who` answer what `missing` leaves of each phase's rows, batch by batch into `keep`; `on_family` hears
        each family as the answers it needs are all in `answers`."""
        watch = FamilyWatch(spec.families, chosen, who)
        done = {(p.arm, p.phase, p.row_id) for p in answers}
        tell(watch, done, answers, final)  # (resumed) families with nothing left to answer
        for phase in ("main", "fresh"):
            if not by_phase.get(phase):
                continue
            if phase not in runtimes:  # the fresh phase searches a copy of the index with updates/ applied
                runtimes[phase], figures = _apply_updates(settings, runtime, corpus)
                refresh.update(figures)
                if run_id is not None:
                    store.update_meta(run_id, refresh=refresh)
            for batch in plan_batches(settings, who, phase, by_phase[phase], missing):
                if should_stop is not None and should_stop():
                    raise RunCancelled(
                        f"run {run_id} stopped after {answering.done} of {total} answers; resume it" if run_id else
                        f"stopped after {answering.done} answers, before training (kept in the answer cache); start "
                        "the run again to resume"
                    )  # fmt: skip
                made = answering.answer(runtimes[phase], batch)
                keep(made)
                answers += made
                done.update((p.arm, p.phase, p.row_id) for p in made)
                tell(watch, done, answers, final)

    try:
        # 1. the arms that need no training, before any adapter trains: kept in memory (and in the answer cache)
        # until training names the run
        before: list[Prediction] = []
        if early:
            answer_stage(early, lambda arm, phase, ids: ids, lambda made: None, before, final=False)
        # 2. train (or reuse) the adapters the arms need
        artifacts = train_artifacts(
            settings, runtime, kinds_for(spec.arms), stage=say, should_stop=should_stop, show_bars=show_bars,
            groups=groups_for(spec.families), include_unreviewed=spec.include_unreviewed,
        )  # fmt: skip
        adapter_meta = artifact_summary(artifacts)
        index_manifest = read_index_manifest(runtime.index_dir)
        tasks_hash = hash_tasks(corpus)
        named_id = spec.run_id or run_id_for(settings, spec, tasks_hash, adapter_meta)
        if not reuse and not spec.run_id:  # a fresh run reuses nothing, its own earlier answers included
            named_id += "-fresh-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        if named is not None:
            named(named_id)
        config = {"spec": spec.model_dump(mode="json"), "settings": settings.recorded()}
        store.create_run(named_id, corpus.resolve().name, config)
        run_id = named_id
    except BaseException:
        store.close()
        raise
    try:
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
            **({"refresh": refresh} if refresh else {}),
        )
        # 3. the answers made before training join the run, then every arm answers what the run still lacks
        answering.resume(store.run(run_id).meta)
        store.add_predictions(run_id, before)
        store.update_meta(run_id, **answering.meta())
        answers = store.predictions(run_id)
        answering.done = len(answers)

        def keep(made: list[Prediction]) -> None:
            store.add_predictions(run_id, made)
            store.update_meta(run_id, **answering.meta())

        answer_stage(answerers, lambda arm, phase, ids: store.missing(run_id, arm, phase, ids), keep, answers, True)
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
