"""Crossover curves: how many labelled rows until a fine-tuned arm beats prompting or RAG, and how much label
noise it survives (`ragft curve`, `POST /v1/curves`).

A curve trains the adapter arms on nested, seeded subsets of the train rows (`--rows 10,25,50,100,all`, per
trainable family; every larger subset holds the smaller) and answers the same test rows at every point. Each
point is a *corpus view*: a folder under `<data_dir>/curves/` whose tasks hold every test row, the subset's train
rows (each with a wrong target by its own seeded draw under `--noise`) and every other row, its documents/ and
updates/ linked to the corpus's own. A point is then an ordinary run (`eval.runner.run_eval`) with ordinary
adapters: the same inputs give the same run id and adapter fingerprint, so a point trained before is reused and
an interrupted curve resumes where it stopped. The full clean point is the corpus itself, so it shares its
adapters and answers with `ragft eval`. Arms that learn from train rows without training (fewshot's worked
examples) draw from the same subset; arms that read no train rows (base, rag) run once, on the corpus, and are
drawn as reference lines.

At each point a fine-tuned arm is compared, on the same test rows, with the best arm that does not train
(base, rag, or fewshot at that point), paired. The crossover is tested sequentially from the largest size down
(`crossover`: each size at 5% while every larger one passed), and estimated (`crossover_estimate`: where the gap
fitted against log(train rows) crosses 0, with a bootstrap interval over the test rows); otherwise "not reached
within the rows available", worse (the largest size shows it behind) or undecided, with the trend of the gap per
doubling of rows. Subsets are a seeded random order of the train rows; noise is decided per row, so noisy
subsets are nested as clean ones are.

Example:
    >>> parse_sizes("10,25,all"), parse_noise("0,0.3")
    ([10, 25, 'all'], [0.0, 0.3])
    >>> # spec = CurveSpec.resolve(settings, Path("corpora/quillmark"), arms=["base", "fewshot", "lora"],
    >>> #                          families=["behaviour"], rows=[10, 25, 50, 100, "all"], noise=[0.0, 0.3])
    >>> # results, folder = run_curve(settings, spec)
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

import jinja2
import jsonschema
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from eval import stats
from eval.baseline import question_type
from eval.families import FAMILIES, FamilyNames
from eval.metrics import METRICS, headline, report_families
from eval.pipeline import capped_order
from eval.report import figure, png_data_uri
from eval.results import balance_values, document_clusters, fold_replicates, score_predictions, scoring_context
from eval.runner import run_eval
from eval.spec import Progress, RunCancelled, RunSpec, check_seed
from eval.store import Store
from eval.tasks import TaskRow, load_tasks
from service import engine_ct2, folders
from service.arms import ARMS, Arm, ArmNames, by_cost, curve_defaults, runnable
from service.models import library_versions
from service.retrieval import index_exists, index_lock
from service.settings import Settings, without_folders

ALL = "all"
REUSED_POINT_S = 5.0  # a point faster than this trained and answered nothing (its run was stored): not a measure
Size = Annotated[int, Field(ge=1)] | Literal["all"]
Executor = Literal["local", "ray"]  # where the points run (eval.executor): run_curve, ray_runs
SCHEMA = "curve/1"
VIEW_MANIFEST = "curve.json"


def learns(arm: Arm) -> bool:
    """The arm reads train rows: its adapter is trained on them, or its prompt shows them (fewshot)."""
    return arm.adapter is not None or arm.fewshot


def parse_sizes(text: str) -> list[int | str]:
    """`--rows`: comma-separated positive row counts and `all`, ascending, `all` last."""
    sizes: set[int] = set()
    full = False
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        if item.lower() == ALL:
            full = True
        elif item.isdigit() and int(item) > 0:
            sizes.add(int(item))
        else:
            raise ValueError(f"--rows: '{item}' is neither a positive number of rows nor 'all' (e.g. 10,25,50,all)")
    if not sizes and not full:
        raise ValueError("--rows: give at least one size, e.g. 10,25,50,100,all")
    return [*sorted(sizes), *([ALL] if full else [])]


def parse_noise(text: str) -> list[float]:
    """`--noise`: comma-separated shares of train rows given a wrong target, each in [0, 1), ascending."""
    shares = set()
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        try:
            share = float(item)
        except ValueError:
            raise ValueError(f"--noise: '{item}' is not a number; give shares in [0, 1), e.g. 0,0.1,0.3") from None
        if not 0 <= share < 1:
            raise ValueError(f"--noise: {item} is outside [0, 1): the share of train rows given a wrong target")
        shares.add(share)
    return sorted(shares) or [0.0]


class CurveSpec(BaseModel):
    """What a curve measures: one model from the CLI options or the HTTP request through the jobs table to the
    curve's results. Build it with `CurveSpec.resolve`, which fills the defaults from settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    corpus: Path
    arms: ArmNames = Field(min_length=1, description="Arms; at least one must learn from train rows.")
    families: FamilyNames = Field(min_length=1, description="Report families (eval/families.py).")
    rows: list[Size] = Field(min_length=1, description="Train rows per family at each point; 'all': every row.")
    noise: list[float] = Field([0.0], min_length=1, description="Shares of train rows given a wrong target.")
    limit: int | None = Field(None, ge=1, description="Test rows per family (a seeded sample); None: all.")
    seed: int = Field(0, description="Seeds the subsets, the noise, the test-row sample and the statistics.")

    @field_validator("rows")
    @classmethod
    def _sizes(cls, rows: list) -> list:
        return parse_sizes(",".join(str(r) for r in rows))

    @field_validator("noise")
    @classmethod
    def _shares(cls, noise: list[float]) -> list[float]:
        return parse_noise(",".join(str(x) for x in noise))

    @field_validator("arms")
    @classmethod
    def _one_learner(cls, arms: list[str]) -> list[str]:
        if not any(learns(ARMS[a]) for a in arms):
            learners = ", ".join(name for name in runnable() if learns(ARMS[name]))
            raise ValueError(f"arms {arms} learn nothing from train rows: add one of {learners}")
        return arms

    @classmethod
    def resolve(
        cls,
        settings: Settings,
        corpus: Path,
        *,
        arms: list[str] | None = None,
        families: list[str] | None = None,
        rows: list | None = None,
        noise: list[float] | None = None,
        limit: int | None = None,
        seed: int | None = None,
    ) -> CurveSpec:
        """Defaults: the arms marked `in_default_curve` (base, fewshot, rag and lora); eval.families (else every
        family); 10,25,50,100,all rows; no noise; eval.limit; generation.seed."""
        return cls(
            corpus=Path(corpus),
            arms=arms or curve_defaults(),
            families=families or settings.eval.families or list(FAMILIES),
            rows=rows or [10, 25, 50, 100, ALL],
            noise=noise or [0.0],
            limit=limit if limit is not None else settings.eval.limit,
            seed=check_seed(seed if seed is not None else settings.generation.seed),
        )


# --- nested subsets -----------------------------------------------------------------------------------------


def subset_order(rows: list[TaskRow], settings: Settings, seed: int) -> dict[str, list[str]]:
    """Per trainable family, its train row ids (those `eval.pipeline.capped_order` trains on) in a seeded random
    order: a subset of n is the first n, so every larger subset holds the smaller. Random, not the training
    order: that order puts the rows test paraphrases restate first, which flattered small knowledge subsets."""
    generation = settings.generation.model_copy(update={"seed": seed})
    ordered = capped_order(settings.model_copy(update={"generation": generation}), rows)
    out = {}
    for family, members in ordered.items():
        ids = sorted(r.row_id for r in members)
        random.Random(f"{seed}:subset:{family}").shuffle(ids)
        out[family] = ids
    return out


def subset(order: dict[str, list[str]], size: int | str) -> dict[str, list[str]]:
    """The first `size` rows of each family's order (every row for 'all')."""
    return {f: list(ids) if size == ALL else ids[:size] for f, ids in order.items()}


def curve_families(families: list[str], order: dict[str, list[str]]) -> list[str]:
    """The trainable families whose rows the report families' adapter groups and fewshot pools learn from."""
    groups = {FAMILIES[rf].adapter_group for f in families for rf in FAMILIES[f].row_families}
    return [f for f in order if FAMILIES[f].adapter_group in groups]


def plan_sizes(sizes: list, order: dict[str, list[str]], relevant: list[str]) -> tuple[list, list[str]]:
    """The sizes that give distinct subsets of the relevant families (a size past every family's rows is 'all'),
    and a note for each size dropped."""
    counts = {s: tuple(len(subset(order, s)[f]) for f in relevant) for s in sizes}
    kept, notes = [], []
    for i, s in enumerate(sizes):
        later = [t for t in sizes[i + 1 :] if counts[t] == counts[s]]
        if later:
            held = ", ".join(f"{f} {len(order[f])}" for f in relevant)
            notes.append(f"{s} rows: the same subset as {later[-1]} (the train split holds {held})")
        else:
            kept.append(s)
    return kept, notes


# --- label noise --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Corruption:
    """One train row given a wrong target: which field, what it was, what it became (JSON values as JSON)."""

    row_id: str
    family: str
    field: str
    was: str
    now: str
    same_type: bool = True  # knowledge: another answer of the question's answer type (else: of any type)


def _distinct(values) -> list:
    seen, out = set(), []
    for v in values:
        key = json.dumps(v, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(v)
    return out


def wrong_target(row: TaskRow, train: list[TaskRow], seed: int) -> tuple[dict, Corruption] | None:
    """A wrong target of the same type for a train row (another label; one JSON field changed to a value the
    schema allows; another answer of the same answer type for factual questions; another row's reply for style
    rows), seeded by the row id so a row gets the same one at every point; None when it has none (abstention
    rows: the abstention phrase is their only target)."""
    facts = FAMILIES[row.family]
    rng = random.Random(f"{seed}:noise:{row.id}")
    if facts.abstains:
        return None
    if row.label is not None and row.labels:
        now = rng.choice([x for x in row.labels if x != row.label])
        return {"label": now}, Corruption(row.id, row.family, "label", row.label, now)
    if row.expected is not None:
        peers = [r.expected for r in train if r.family == row.family and r.kind == row.kind and r.expected]
        keys = sorted(row.expected)
        rng.shuffle(keys)
        for key in keys:
            enum = ((row.json_schema or {}).get("properties", {}).get(key) or {}).get("enum") or []
            choices = [v for v in _distinct([*(p[key] for p in peers if key in p), *enum]) if v != row.expected[key]]
            rng.shuffle(choices)
            for value in choices:
                changed = {**row.expected, key: value}
                if row.json_schema is None or jsonschema.Draft202012Validator(row.json_schema).is_valid(changed):
                    was, now = json.dumps(row.expected[key]), json.dumps(value)
                    return {"expected": changed}, Corruption(row.id, row.family, f"expected.{key}", was, now)
        return None
    if not row.answers:
        return None
    mine = {a.strip().lower() for a in row.answers}
    peers = [r for r in train if r.family == row.family and r.answers and r.id != row.id]
    same_type = True
    if facts.factual:
        kind = question_type(row.text)
        typed = [r for r in peers if question_type(r.text) == kind]
        same_type = any(r.answers[0].strip().lower() not in mine for r in typed)
        peers = typed if same_type else peers
    else:
        peers = [r for r in peers if r.kind == row.kind]
    pool = sorted({r.answers[0] for r in peers if r.answers[0].strip().lower() not in mine})
    if not pool:
        return None
    now = rng.choice(pool)
    return {"answers": [now]}, Corruption(row.id, row.family, "answers", row.answers[0], now, same_type)


def noisy(row_id: str, share: float, seed: int) -> bool:
    """Whether a train row gets a wrong target under noise `share`: its own seeded draw, so the decision is the
    row's at every size and noisy subsets are nested (a row noisy at 25 rows is noisy at 50)."""
    return share > 0 and random.Random(f"{seed}:noisy:{row_id}").random() < share


def noisy_rows(chosen: list[TaskRow], train: list[TaskRow], share: float, seed: int):
    """`chosen` with each row whose draw falls under `share` (`noisy`) given a wrong target where it has one: the
    share holds in expectation, and the view lists every corrupted row. Returns (rows, corruptions)."""
    if share <= 0:
        return list(chosen), []
    out, corruptions = [], []
    for row in chosen:
        wrong = wrong_target(row, train, seed) if noisy(row.id, share, seed) else None
        if wrong is not None:
            row = row.model_copy(update=wrong[0])
            corruptions.append(wrong[1])
        out.append(row)
    return out, corruptions


# --- corpus views (one per point) ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CurvePoint:
    """One point of a curve: its size and noise, the corpus (view) it ran on, the run, and what it trained on."""

    size: int | str
    noise: float
    corpus: str  # folder
    run_id: str
    train_rows: dict[str, int]  # per trainable family
    corrupted: tuple[Corruption, ...] = ()


def view_name(corpus: Path, size: int | str, share: float, seed: int) -> str:
    """The view's folder name (also its index, adapters and run ids): letters, digits, '-' and '_' only."""
    noise = f"{share:g}".replace(".", "p")
    return f"{Path(corpus).resolve().name}_rows{size}_noise{noise}_seed{seed}"


def _link(target: Path, link: Path) -> None:
    if link.is_symlink() and link.resolve() == target.resolve():
        return
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.is_dir():
        shutil.rmtree(link)
    link.symlink_to(target.resolve(), target_is_directory=True)


def write_view(
    settings: Settings, corpus: Path, rows: list[TaskRow], order: dict[str, list[str]], size, share: float, seed: int
) -> tuple[Path, dict[str, int], list[Corruption]]:
    """Write (or keep, when unchanged) the corpus view of one point: every test row, the subset's train rows
    (noised), every other row, documents/ and updates/ linked to the corpus's, the corpus's index copied so
    nothing is embedded again, and `curve.json` saying what it holds. Test rows are copied as they are, except
    that a `paraphrase_of` naming a train row the subset left out is dropped (validation asks for the train row;
    scoring never reads it)."""
    corpus = Path(corpus)
    folder = settings.data_dir / "curves" / view_name(corpus, size, share, seed)
    kept = {i for ids in subset(order, size).values() for i in ids}
    train = [r for r in rows if r.split == "train"]
    chosen = [r for r in train if r.id in kept]
    noisy, corrupted = noisy_rows(chosen, train, share, seed)
    replaced = {r.id: r for r in noisy}
    in_view = [r for r in rows if not (r.split == "train" and r.family in order and r.id not in kept)]
    present = {r.id for r in in_view if r.split == "train"}
    out = []
    for r in in_view:
        r = replaced.get(r.id, r)
        if r.split == "test" and r.paraphrase_of is not None and r.paraphrase_of not in present:
            r = r.model_copy(update={"paraphrase_of": None})
        out.append(r)
    text = "".join(json.dumps(r.model_dump(mode="json", by_alias=True, exclude_defaults=True), ensure_ascii=False)
                   + "\n" for r in out)  # fmt: skip
    (folder / "tasks").mkdir(parents=True, exist_ok=True)
    tasks = folder / "tasks" / "tasks.jsonl"
    if not tasks.is_file() or tasks.read_text() != text:
        folders.replace_file(tasks, text.encode("utf-8"))
    for name in ("documents", "updates"):
        if (corpus / name).is_dir():
            _link(corpus / name, folder / name)
    counts = {f: len(ids) for f, ids in subset(order, size).items()}
    manifest = {"corpus": corpus.resolve().name, "source": str(corpus.resolve()), "size": size, "noise": share,
                "seed": seed, "train_rows": counts, "train_row_ids": subset(order, size),
                "corrupted": [asdict(c) for c in corrupted]}  # fmt: skip
    folders.replace_file(folder / VIEW_MANIFEST, json.dumps(manifest, indent=2).encode("utf-8"))
    source, copy = settings.index_dir(corpus), settings.index_dir(folder)
    if index_exists(source) and not same_index(copy, source):
        with index_lock(source):  # the documents are the corpus's, so its index serves the view as it is
            folders.recover(copy, index_exists, "index")  # a copy a kill cut short is removed, never used
            tmp = folders.new_build(copy)  # copied aside and swapped in whole: a kill leaves no half index at `copy`
            try:
                shutil.copytree(source, tmp, dirs_exist_ok=True)
                folders.swap_in(tmp, copy)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
    return folder, counts, corrupted


def same_index(copy: Path, source: Path) -> bool:
    """Whether `copy` holds every file of the index at `source`, each of the same size: a copy cut short by a kill
    (before copies were swapped in whole) or made before the corpus's index was rebuilt is copied again."""
    return index_exists(copy) and all(
        (copy / f.name).is_file() and (copy / f.name).stat().st_size == f.stat().st_size
        for f in Path(source).iterdir() if f.is_file()
    )  # fmt: skip


# --- running a curve ----------------------------------------------------------------------------------------


def curve_settings(settings: Settings) -> Settings:
    """The curve chooses the train rows itself, so `lora.max_rows_per_family` does not cap them again."""
    return settings.model_copy(update={"lora": settings.lora.model_copy(update={"max_rows_per_family": None})})


def run_curve(
    settings: Settings,
    spec: CurveSpec,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    show_bars: bool = False,
    on_eta: Callable[[float | None], None] | None = None,
    executor: Executor | None = None,
) -> tuple[dict, Path]:
    """Run (or resume) every point of the curve and the reference arms once, then write results.json, report.md
    and report.html under `<reports_dir>/<curve id>/`; returns (results, folder). `on_eta` hears, after each point,
    the seconds the rest should take (`remaining_s`; None until a point has been measured; the local executor
    only). `executor` (default eval.executor): 'local' runs the points one after another in this process, 'ray'
    runs each as a Ray task (`ray_runs`); the results are the same, as every run id is a hash of its inputs."""
    say = progress or (lambda stage, done, total: None)
    executor = executor or settings.eval.executor
    if executor == "ray" and importlib.util.find_spec("ray") is None:  # before any view is written
        raise RuntimeError(RAY_MISSING)
    settings = curve_settings(settings)
    corpus = Path(spec.corpus)
    rows = load_tasks(corpus)
    order = subset_order(rows, settings, spec.seed)
    relevant = curve_families(spec.families, order)
    sizes, notes = plan_sizes(spec.rows, order, relevant)
    reference_arms = [a for a in spec.arms if not learns(ARMS[a])]
    learners = [a for a in spec.arms if learns(ARMS[a])]
    plan = [(share, size) for share in spec.noise for size in sizes]
    steps = len(plan) + bool(reference_arms)

    def run(folder: Path, arms: list[str], label: str, extra: dict) -> str:
        run_spec = RunSpec.resolve(settings, folder, arms=arms, families=spec.families, limit=spec.limit,
                                   seed=spec.seed, extra=extra)  # fmt: skip
        return run_eval(settings, run_spec, progress=lambda stage, d, t: say(f"{stage} [{label}]", d, t),
                        should_stop=should_stop, show_bars=show_bars)  # fmt: skip

    views = []  # every point's train-row view, written before any point runs
    for share, size in plan:
        if size == ALL and share == 0:
            folder, counts, corrupted = corpus, {f: len(ids) for f, ids in order.items()}, []
        else:
            folder, counts, corrupted = write_view(settings, corpus, rows, order, size, share, spec.seed)
        extra = {"curve": {"size": size, "noise": share, "train_rows": counts,
                           "corrupted": [c.row_id for c in corrupted]}}  # fmt: skip
        views.append((share, size, folder, counts, corrupted, extra))
    labels = [f"rows {size}, noise {share:g}" for share, size, *_ in views]
    if executor == "ray":
        asked = [(corpus, reference_arms, {})] if reference_arms else []
        asked += [(folder, learners, extra) for _, _, folder, _, _, extra in views]
        run_ids = ray_runs(settings, [RunSpec.resolve(settings, folder, arms=arms, families=spec.families,
                                                      limit=spec.limit, seed=spec.seed, extra=extra)
                                      for folder, arms, extra in asked],
                           ["reference"] * bool(reference_arms) + labels, say, should_stop)  # fmt: skip
        reference = run_ids.pop(0) if reference_arms else None
    else:
        reference = None
        if reference_arms:
            reference = run(corpus, reference_arms, f"curve 1/{steps}: reference {','.join(reference_arms)}", {})
        kept = engine_ct2.loaded_artifacts()  # what the process served before the curve (a server's adapters) stays
        run_ids, measured = [], []
        planned_rows = [sum(len(ids) for f, ids in subset(order, size).items() if f in relevant) for _, size in plan]
        for i, (_, _, folder, _, _, extra) in enumerate(views, start=1 + bool(reference_arms)):
            started = time.perf_counter()
            run_ids.append(run(folder, learners, f"curve {i}/{steps}: {labels[i - 1 - bool(reference_arms)]}", extra))
            took = time.perf_counter() - started
            if took >= REUSED_POINT_S:  # a point reused whole says nothing about what the next one costs
                measured.append((planned_rows[len(run_ids) - 1], took))
            if on_eta is not None:
                on_eta(remaining_s(measured, planned_rows[len(run_ids) :]))
            engine_ct2.release(engine_ct2.loaded_artifacts() - kept)  # no later point answers with them
    points = [CurvePoint(size, share, str(folder), run_id, counts, tuple(corrupted))
              for (share, size, folder, counts, corrupted, _), run_id in zip(views, run_ids, strict=True)]  # fmt: skip
    store = Store(settings.database)
    try:
        results = build_curve(store, settings, spec, reference, points, notes)
    finally:
        store.close()
    return results, write_curve_report(results, settings.eval.reports_dir)


RAY_MISSING = (
    "the ray executor needs Ray, which is not part of the default install: `make ray` (or "
    "`.venv/bin/pip install --require-hashes --no-deps -r requirements-ray.lock`), or use --executor local"
)


def ray_runs(settings: Settings, specs: list, labels: list[str], say: Progress,
             should_stop: Callable[[], bool] | None = None, point: Callable | None = None) -> list:  # fmt: skip
    """Each run (a curve point: its adapters trained, its rows answered) as a Ray task, on the cluster at
    RAY_ADDRESS or else a local head with eval.ray_num_cpus CPUs (started here and stopped after); the run ids in
    order. A task declares eval.ray_point_cpus CPUs (default: a whole node's, so a node trains one point at a
    time) and a GPU where the models run on CUDA; a task whose worker died runs again (`max_retries`) and resumes
    from the answers its run stored. Every worker must see the same data_dir and corpus folders (one machine, or a
    shared file system); a worker starts in this process's working folder where it has one. `point(cwd, settings,
    spec)` is what a task runs (default: `run_eval` in that folder)."""
    try:
        import ray
    except ImportError:
        raise RuntimeError(RAY_MISSING) from None
    started = not ray.is_initialized()
    if started:
        address = os.environ.get("RAY_ADDRESS") or None
        local = {} if address else {"num_cpus": settings.eval.ray_num_cpus or os.cpu_count() or 1,
                                    "object_store_memory": 256 * 2**20}  # fmt: skip  # run ids travel, not data
        ray.init(address=address, include_dashboard=False, log_to_driver=False, **local)
    try:
        node_cpus = max(n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"])
        cpus = settings.eval.ray_point_cpus or node_cpus
        if cpus > node_cpus:
            raise ValueError(f"eval.ray_point_cpus is {cpus:g} but the largest Ray node has {node_cpus:g} CPUs: "
                             "no point could ever be scheduled; set it to at most that")  # fmt: skip
        gpus = 1 if settings.models.device.startswith("cuda") else 0
        task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=2)(point or _ray_point)
        refs = [task.remote(os.getcwd(), settings, spec) for spec in specs]
        pending, finished = list(refs), 0
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=1.0)
            for ref in ready:
                try:
                    ray.get(ref)
                except ray.exceptions.RayTaskError as exc:  # the point's own error, not Ray's wrapper
                    for other in pending:
                        ray.cancel(other)
                    raise exc.as_instanceof_cause() from None
                finished += 1
                say(f"curve: {labels[refs.index(ref)]} done", finished, len(refs))
            if pending and should_stop is not None and should_stop():
                for other in pending:
                    ray.cancel(other)  # a running point stops at its next batch; what it stored stays
                raise RunCancelled(f"the curve was cancelled with {len(pending)} of {len(refs)} runs unfinished")
        return ray.get(refs)
    finally:
        if started:
            ray.shutdown()


def _ray_point(cwd: str, settings: Settings, spec: RunSpec) -> str:
    """One curve run inside a Ray worker, in the driver's working folder where this node has it (relative corpus
    and data paths then mean what they meant to the driver)."""
    if Path(cwd).is_dir():
        os.chdir(cwd)
    return run_eval(settings, spec)


def remaining_s(done: list[tuple[int, float]], remaining_rows: list[int]) -> float | None:
    """Seconds the points still to run should take, from those measured so far ((train rows, wall seconds) per point
    that trained or answered anything): a point's time is fitted as a + b x its train rows (training grows with the
    rows, answering the same test rows does not), by least squares once two sizes are measured, else their mean."""
    if not remaining_rows:
        return 0.0
    if not done:
        return None
    xs, ys = np.array([r for r, _ in done], float), np.array([t for _, t in done], float)
    if len(set(xs)) >= 2:
        b, a = np.polyfit(xs, ys, 1)
        b = max(b, 0.0)
        a = max(float(np.mean(ys - b * xs)), 0.0) if a < 0 else a
        return float(sum(a + b * r for r in remaining_rows))
    return float(np.mean(ys)) * len(remaining_rows)


def curve_id_for(spec: CurveSpec, reference: str | None, points: list[CurvePoint]) -> str:
    """A name that changes whenever a run of the curve or what it asks changes (its runs are content hashes)."""
    key = [spec.model_dump(mode="json", exclude={"corpus"}), reference, [p.run_id for p in points]]
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
    return f"{Path(spec.corpus).resolve().name}-curve-{digest}"


# --- results ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunValues:
    """One run's headline row values as the report reads them (seeds folded, balanced metrics reweighted)."""

    rows: dict[str, TaskRow]
    values: dict
    replicates: dict
    meta: dict


def run_values(store: Store, run_id: str, settings: Settings) -> RunValues:
    """Score a stored run judge-free and without the embedder (no headline needs either), seeds folded and balanced
    metrics reweighted as results does."""
    run = store.run(run_id)
    corpus = Path(RunSpec.model_validate(run.config["spec"]).corpus)
    all_rows = load_tasks(corpus)
    wanted = {i for ids in run.meta.get("rows", {}).values() for i in ids}
    rows = {r.id: r for r in all_rows if r.id in wanted}
    ctx = scoring_context(settings, corpus, list(rows.values()), embed=None, judge=False, all_rows=all_rows)
    ctx.judge = None  # a curve scores many runs; the judge is for reports that ask for it
    folded, replicates = fold_replicates(score_predictions(store.predictions(run_id), rows, ctx))
    return RunValues(rows, balance_values(folded, replicates, rows), replicates, run.meta)


def _num(x) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 4)


def headline_cell(run: RunValues, arm: str, metric: str, seed: int) -> dict | None:
    """{value, ci_low, ci_high, n, method, seeds}: the arm's headline with its 95% interval (resampling training
    seeds too when there are several) and each seed's mean; None when the arm did not answer the family."""
    per_row = run.values.get((arm, metric))
    if not per_row:
        return None
    ids = sorted(per_row)
    by_seed = run.replicates.get((arm, metric))
    if by_seed and METRICS[metric].aggregate is None:
        ci = stats.replicated_interval(by_seed, seed)
    else:
        ci = stats.interval(
            [per_row[i] for i in ids], seed, METRICS[metric].aggregate, clusters=document_clusters(run.rows, ids)
        )
    seeds = [_num(np.mean(s)) for s in by_seed] if by_seed else [_num(ci.value)]
    return {"value": _num(ci.value), "ci_low": _num(ci.ci_low), "ci_high": _num(ci.ci_high), "n": ci.n,
            "method": ci.method, "seeds": seeds}  # fmt: skip


def _per_seed(values: dict, by_seed: list | None, ids: list[str]) -> list[list[float]]:
    """Row values on `ids` per training seed (`by_seed` in the sorted-row order fold_replicates keeps), or the one
    row of folded values when the arm was trained once (or trains nothing)."""
    if not by_seed:
        return [[float(values[i]) for i in ids]]
    at = {row: k for k, row in enumerate(sorted(values))}
    return [[float(run[at[i]]) for i in ids] for run in by_seed]


def paired(a: str, run_a: RunValues, b: str, run_b: RunValues, metric: str, seed: int) -> dict:
    """Arm `a` (of run_a) minus arm `b` (of run_b) on the test rows both answered: the report's paired test, and
    with several training seeds the test that resamples seeds and clusters (`stats.replicated_compare`)."""
    va, vb = run_a.values.get((a, metric), {}), run_b.values.get((b, metric), {})
    ids = sorted(set(va) & set(vb))
    clusters = document_clusters(run_a.rows, ids)
    seeds_a, seeds_b = run_a.replicates.get((a, metric)), run_b.replicates.get((b, metric))
    if ids and (seeds_a or seeds_b) and METRICS[metric].aggregate is None:
        c, _ = stats.replicated_compare(
            a, b, _per_seed(va, seeds_a, ids), _per_seed(vb, seeds_b, ids), seed, clusters=clusters
        )
    else:
        c = stats.compare(a, b, [va[i] for i in ids], [vb[i] for i in ids], seed, clusters=clusters)
    return {"a": a, "b": b, "n": c.n, "difference": _num(c.difference), "ci_low": _num(c.ci_low),
            "ci_high": _num(c.ci_high), "p_value": _num(c.p_value), "test": c.test}  # fmt: skip


def adjust(comparisons: list[dict], alpha: float = stats.ALPHA) -> None:
    """Holm over every comparison of the curve (in place): p_holm, significant and holm_tests, kept in results.json
    beside the sequential rule `crossover` decides by (which needs no adjustment over the points)."""
    for c, p in zip(comparisons, stats.holm([c["p_value"] for c in comparisons]), strict=True):
        c["p_holm"], c["significant"], c["holm_tests"] = _num(p), p < alpha, len(comparisons)


def _fit(log_rows: np.ndarray, gaps: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    """Weighted least squares of gap on log(rows): (intercept, slope)."""
    w = weights / weights.sum()
    mx, my = (w * log_rows).sum(), (w * gaps).sum()
    sxx = (w * (log_rows - mx) ** 2).sum()
    slope = (w * (log_rows - mx) * (gaps - my)).sum() / sxx if sxx > 0 else 0.0
    return my - slope * mx, slope


REACH = math.log(1000)  # a crossover past 1,000 times the largest size measured is reported as out of reach


def _root(intercept: float, slope: float, last_log_rows: float) -> float:
    """Rows where the fitted gap crosses 0 (winning direction positive): inf when it never does ahead (or only past
    REACH, 1,000 times the largest size), 0 when the arm is ahead throughout and the gap shrinks."""
    if slope > 0:
        root = -intercept / slope
        return math.exp(root) if root < last_log_rows + REACH else math.inf
    return 0.0 if intercept + slope * last_log_rows > 0 else math.inf


def crossover_estimate(rows: list[int], gaps: np.ndarray, clusters: list | None = None, *, seed: int = 0,
                       resamples: int = 1000) -> dict:  # fmt: skip
    """Where the gap (fine-tuned arm minus its rival, winning direction positive) crosses 0, from a weighted fit of
    the gap against log(train rows) (weights: 1 / the variance of each point's mean gap), with a 95% percentile
    interval from resampling the test rows (whole clusters where they share documents) jointly at every point:
    the same rows answer every point (Efron & Tibshirani 1993, ch. 13, for a ratio of fitted coefficients).
    `gaps[p][i]`: the signed difference on test row i at point p. An interval end at 'inf' means the gap did not
    turn positive within 1,000 times the largest size in that share of resamples: the data cannot bound the
    crossover from above."""
    x = np.log(np.asarray(rows, dtype=float))
    d = np.asarray(gaps, dtype=float)
    if len(rows) < 2 or len(set(rows)) < 2 or d.shape[1] < 2:
        return {"rows": None, "ci_low": None, "ci_high": None, "per_doubling": None, "method": "too few points"}
    var = d.var(axis=1, ddof=1) / d.shape[1]
    weights = 1 / np.maximum(var, max(1e-6, float(var[var > 0].min()) if (var > 0).any() else 1e-6))
    intercept, slope = _fit(x, d.mean(axis=1), weights)
    estimate = _root(intercept, slope, x[-1])
    _, g = np.unique(np.asarray([str(c) for c in (clusters or range(d.shape[1]))]), return_inverse=True)
    sums = np.stack([np.bincount(g, weights=row) for row in d])  # per point, per cluster: summed gap
    sizes = np.bincount(g).astype(float)
    rng = np.random.default_rng(seed)
    roots = np.empty(resamples)
    for r in range(resamples):
        pick = np.bincount(rng.integers(0, len(sizes), len(sizes)), minlength=len(sizes))  # times each is drawn
        roots[r] = _root(*_fit(x, sums @ pick / (sizes @ pick), weights), x[-1])
    low, high = np.percentile(roots, 2.5, method="lower"), np.percentile(roots, 97.5, method="higher")

    def shown(v: float) -> float | str | None:
        return "inf" if math.isinf(v) else round(float(v))

    return {"rows": shown(estimate), "ci_low": shown(low), "ci_high": shown(high),
            "per_doubling": _num(float(slope) * math.log(2)),
            "method": "weighted fit of the gap on log(train rows), cluster bootstrap of the test rows"}  # fmt: skip


def trend(points: list[dict], higher_is_better: bool) -> dict:
    """How the gap (fine-tuned arm minus the best non-training arm, in the winning direction) moves per doubling of
    training rows, and where it would close: the weighted fit of `crossover_estimate` on the points' differences
    (weights from their intervals), without the resampled interval that needs the row values."""
    sign = 1 if higher_is_better else -1
    kept = [p for p in points if p.get("comparison") and p["comparison"]["difference"] is not None and p["rows"]]
    if len(kept) < 2 or len({p["rows"] for p in kept}) < 2:
        return {"per_doubling": None, "rows_to_close": None}
    x = np.log([float(p["rows"]) for p in kept])
    gaps = np.array([sign * p["comparison"]["difference"] for p in kept])
    widths = np.array([max((p["comparison"]["ci_high"] or 0) - (p["comparison"]["ci_low"] or 0), 1e-3) for p in kept])
    intercept, slope = _fit(x, gaps, 1 / widths**2)
    closes = None
    if gaps[-1] < 0 < slope:
        closes = round(math.exp(-intercept / slope))
    return {"per_doubling": _num(float(slope) * math.log(2)), "rows_to_close": closes}


def crossover(points: list[dict], *, higher_is_better: bool, label: str = "the fine-tuned arm",
              alpha: float = stats.ALPHA) -> dict:  # fmt: skip
    """The crossover by the sequential test from the largest size down (fixed-sequence testing, Maurer, Hothorn &
    Lehmacher 1995: each test at `alpha` while every larger size passed, so the family-wise error stays at alpha
    however many points the curve has): "reached" at the smallest size of the unbroken run of sizes, from the
    largest, where the paired test shows `label` better than the best non-training arm; else "not reached within
    the rows available", "worse" when the largest size shows it significantly behind, "undecided" when that test
    cannot tell; with the trend. `points`: ascending by `rows`, each {"rows", "against", "comparison":
    {difference, ci_low, ci_high, p_value}} (comparison None where nothing was compared)."""
    sign = 1 if higher_is_better else -1
    compared = [p for p in points if p.get("comparison")]
    found = {"trend": trend(compared, higher_is_better), "rule": "sequential from the largest size, each at 5%"}
    if not compared:
        return found | {"status": "undecided", "rows": None, "against": None, "statement": "nothing was compared"}
    held = []
    for p in reversed(compared):
        c = p["comparison"]
        if (c["p_value"] if c["p_value"] is not None else 1.0) < alpha and sign * c["difference"] > 0:
            held.append(p)
        else:
            break
    if held:
        first, top = held[-1], compared[-1]
        also = (f", and holds at every larger size tested up to {top['rows']} ({len(held)} tests in sequence)"
                if len(held) > 1 else "")  # fmt: skip
        return found | {"status": "reached", "rows": first["rows"], "against": first["against"], "statement":
                        f"reached at {first['rows']} train rows: {label} beats {first['against']} by "
                        f"{_gap(first['comparison'])}{also}"}  # fmt: skip
    last = compared[-1]
    c = last["comparison"]
    move = found["trend"]["per_doubling"]
    said = f"; the gap moves {move:+.3f} per doubling of rows" if move is not None else ""
    if found["trend"]["rows_to_close"]:
        said += f" (extrapolated, it would close near {found['trend']['rows_to_close']:,} rows)"
    if (c["p_value"] if c["p_value"] is not None else 1.0) < alpha:
        status, how = "worse", f"significantly behind {last['against']}"
    else:
        status, how = "undecided", f"undecided against {last['against']}"
    return found | {"status": status, "rows": None, "against": last["against"], "statement":
                    f"not reached within the {last['rows']} train rows available: at {last['rows']} rows {label} is "
                    f"{how} ({_gap(c)}){said}"}  # fmt: skip


def _gap(c: dict) -> str:
    low = f"{c['ci_low']:+.3f}" if c.get("ci_low") is not None else "-"
    high = f"{c['ci_high']:+.3f}" if c.get("ci_high") is not None else "-"
    p = f"{c['p_value']:.3g}" if c.get("p_value") is not None else "-"
    return f"{c['difference']:+.3f} [{low}, {high}] (95% CI), p = {p}"


def clean_rows_matching(clean: list[tuple[int, float]], plateau: float, higher_is_better: bool) -> dict:
    """The clean-row count whose headline matches a noisy curve's plateau, read off the clean curve (ascending
    (rows, value) points), interpolated linearly in log(rows) where it first reaches the plateau."""
    sign = 1 if higher_is_better else -1
    if not clean:
        return {"rows": None, "bound": None}
    if sign * clean[0][1] >= sign * plateau:
        return {"rows": clean[0][0], "bound": "at most"}  # the smallest clean size already matches it
    for (x0, y0), (x1, y1) in zip(clean, clean[1:], strict=False):
        if sign * y1 >= sign * plateau:
            t = (plateau - y0) / (y1 - y0) if y1 != y0 else 1.0
            return {"rows": round(math.exp(math.log(x0) + t * (math.log(x1) - math.log(x0)))), "bound": "about"}
    return {"rows": clean[-1][0], "bound": "more than"}  # the clean curve never reaches it


def _training_cost(meta: dict, arm: str, group: str) -> dict:
    """What training the arm's artifact for this adapter group cost at a point (every seed), from the run's meta;
    a reused artifact reports what it cost when it was trained."""
    kind = ARMS[arm].adapter
    if kind is None:
        return {"wall_s": 0.0, "tokens": 0, "reused": None}
    summary = (meta.get("adapters") or {}).get(kind) or {}
    groups = summary.get("groups") or {}
    mine = [g for name, g in groups.items() if name.split("@")[0] in (group, "all")]
    return {"wall_s": _num(sum(g.get("wall_s") or 0 for g in mine)),
            "tokens": int(sum(g.get("tokens_processed") or 0 for g in mine)),
            "reused": all(g.get("reused") for g in mine) if mine else None}  # fmt: skip


def _estimate(points: list[dict], at: dict, seed: int) -> dict | None:
    """`crossover_estimate` on the test rows every compared point of a line shares."""
    kept = [p for p in points if p.get("_gaps") and p["rows"]]
    if len(kept) < 2:
        return None
    common = sorted(set.intersection(*(set(p["_gaps"]) for p in kept)))
    if len(common) < 2:
        return None
    gaps = np.array([[p["_gaps"][i] for i in common] for p in kept])
    clusters = document_clusters(at[kept[0]["run_id"]].rows, common)
    return crossover_estimate([p["rows"] for p in kept], gaps, clusters, seed=seed)


def build_curve(
    store: Store, settings: Settings, spec: CurveSpec, reference: str | None, points: list[CurvePoint], notes=()
) -> dict:
    """Every figure of a curve, recomputed from the stored runs of its points and its reference run."""
    seed = spec.seed
    ref = run_values(store, reference, settings) if reference else None
    at = {p.run_id: run_values(store, p.run_id, settings) for p in points}
    reference_arms = [a for a in spec.arms if not learns(ARMS[a])]
    learners = [a for a in spec.arms if learns(ARMS[a])]
    tests: list[dict] = []
    families = {}
    for family in [f for f in report_families() if f in spec.families]:
        top = headline(family)
        facts = FAMILIES[family]
        row_families = [rf for rf in facts.row_families if FAMILIES[rf].trains]
        block = {"label": facts.label, "headline_metric": top.name, "higher_is_better": top.higher_is_better,
                 "reference": {}, "lines": [], "crossover": [], "noise_matching": []}  # fmt: skip
        if ref is not None:
            block["reference"] = {a: c for a in reference_arms if (c := headline_cell(ref, a, top.name, seed))}
        sign = 1 if top.higher_is_better else -1
        for share in spec.noise:
            mine = sorted((p for p in points if p.noise == share), key=lambda p: sum(p.train_rows.get(f, 0)
                          for f in row_families))  # fmt: skip
            for arm in [a for a in learners if facts.scores(ARMS[a])]:
                line = {"arm": arm, "label": ARMS[arm].label, "noise": share, "trains": ARMS[arm].adapter is not None,
                        "points": []}  # fmt: skip
                previous = None
                for p in mine:
                    run = at[p.run_id]
                    cell = headline_cell(run, arm, top.name, seed)
                    if cell is None:
                        continue
                    x = sum(p.train_rows.get(f, 0) for f in row_families)
                    entry = {"rows": x, "size": p.size, "run_id": p.run_id, **cell,
                             "training": _training_cost(run.meta, arm, facts.adapter_group),
                             "corrupted": sum(c.family in row_families for c in p.corrupted)}  # fmt: skip
                    if previous is not None and x > previous["rows"]:
                        entry["gain_per_row"] = _num((cell["value"] - previous["value"]) / (x - previous["rows"]))
                    if line["trains"]:
                        rivals = {a: (ref, c) for a, c in block["reference"].items()}
                        for other in [a for a in learners if not ARMS[a].adapter and facts.scores(ARMS[a])]:
                            if c := headline_cell(run, other, top.name, seed):
                                rivals[other] = (run, c)
                        if rivals:
                            cheap = by_cost(list(rivals))
                            best = max(rivals, key=lambda a: (sign * rivals[a][1]["value"], -cheap.index(a)))
                            entry["against"] = best
                            entry["against_value"] = rivals[best][1]["value"]
                            entry["comparison"] = paired(arm, run, best, rivals[best][0], top.name, seed)
                            tests.append(entry["comparison"])
                            va = run.values.get((arm, top.name), {})
                            vb = rivals[best][0].values.get((best, top.name), {})
                            entry["_gaps"] = {i: sign * (float(va[i]) - float(vb[i])) for i in set(va) & set(vb)}
                    line["points"].append(entry)
                    previous = entry
                block["lines"].append(line)
        families[family] = block
    adjust(tests)
    for block in families.values():
        hib = block["higher_is_better"]
        for line in [ln for ln in block["lines"] if ln["trains"] and ln["points"]]:
            found = crossover(line["points"], higher_is_better=hib, label=line["label"])
            found["estimate"] = _estimate(line["points"], at, seed)
            block["crossover"].append({"arm": line["arm"], "noise": line["noise"]} | found)
        for line in block["lines"]:
            for p in line["points"]:
                p.pop("_gaps", None)
        clean = {ln["arm"]: [(p["rows"], p["value"]) for p in ln["points"] if p["rows"]]
                 for ln in block["lines"] if ln["noise"] == 0}  # fmt: skip
        for line in [ln for ln in block["lines"] if ln["noise"] > 0 and ln["points"]]:
            last = line["points"][-1]
            match = clean_rows_matching(clean.get(line["arm"], []), last["value"], hib)
            block["noise_matching"].append({"arm": line["arm"], "noise": line["noise"], "plateau": last["value"],
                                            "plateau_rows": last["rows"], "clean_rows": match["rows"],
                                            "bound": match["bound"] if line["arm"] in clean else None})  # fmt: skip
    run_rows = store.run(points[0].run_id).meta.get("rows", {}) if points else {}
    results = {
        "schema": SCHEMA,
        "curve_id": curve_id_for(spec, reference, points),
        "corpus": Path(spec.corpus).resolve().name,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": without_folders({"spec": spec.model_dump(mode="json"), "settings": settings.recorded()}),
        "test_rows": {f: len(ids) for f, ids in run_rows.items()},
        "training_seeds": settings.eval.training_seeds,
        "reference_run": reference,
        "reference_arms": reference_arms,
        "notes": list(notes),
        "points": [
            {
                "size": p.size,
                "noise": p.noise,
                "run_id": p.run_id,
                "corpus": Path(p.corpus).name,
                "train_rows": p.train_rows,
                "corrupted": [asdict(c) for c in p.corrupted],
            }
            for p in points
        ],  # fmt: skip
        "families": families,
        "versions": library_versions(),
    }
    return results


# --- report -------------------------------------------------------------------------------------------------


def _cell_text(c: dict | None) -> str:
    if not c or c.get("value") is None:
        return "-"
    return f"{c['value']:.3f} [{c['ci_low']:.3f}, {c['ci_high']:.3f}]"


def estimate_text(e: dict | None) -> str:
    """The crossover estimate in words: where the fitted gap crosses 0, with its bootstrap interval."""
    if not e or e.get("rows") is None:
        return ""

    def rows(v) -> str:
        return "never within reach" if v == "inf" else f"{v:,}"

    return (
        f". Estimated crossover (gap fitted on log train rows): {rows(e['rows'])} rows, 95% interval "
        f"[{rows(e['ci_low'])}, {rows(e['ci_high'])}]; the gap moves {e['per_doubling']:+.3f} per doubling"
    )


def summary_lines(results: dict) -> list[str]:
    """Per family: the reference lines, each crossover and each noise match, in words (markdown bold)."""
    lines = []
    for family, block in results["families"].items():
        refs = ", ".join(f"{a} {_cell_text(c)} (n={c['n']})" for a, c in block["reference"].items())
        lines.append(f"**{family}** ({block['headline_metric']})" + (f"; reference lines: {refs}" if refs else ""))
        for x in block["crossover"]:
            lines.append(f"- {x['arm']}, noise {x['noise']:g}: **{x['status']}**: {x['statement']}"
                         + estimate_text(x.get("estimate")))  # fmt: skip
        for m in block["noise_matching"]:
            if m["bound"] is None:
                lines.append(f"- {m['arm']} at noise {m['noise']:g} plateaus at {m['plateau']:.3f} ({m['plateau_rows']} "
                             "rows); add noise 0 to --noise to read the clean rows that match it")  # fmt: skip
            else:
                lines.append(f"- {m['arm']} at noise {m['noise']:g} plateaus at {m['plateau']:.3f} with "
                             f"{m['plateau_rows']} rows: {m['bound']} {m['clean_rows']} clean rows match it")  # fmt: skip
    return lines


def _table(block: dict) -> list[list[str]]:
    out = []
    for line in block["lines"]:
        for p in line["points"]:
            c = p.get("comparison")
            seeds = ", ".join(f"{s:.3f}" for s in p["seeds"]) if len(p["seeds"]) > 1 else "-"
            t = p["training"]
            out.append([str(p["rows"]), str(p["size"]), f"{line['noise']:g}", line["arm"], _cell_text(p), str(p["n"]),
                        seeds, p.get("against", "-"), _gap(c) if c else "-",
                        "-" if t["wall_s"] is None else f"{t['wall_s']:.1f}", f"{t['tokens']:,}",
                        "reused" if t["reused"] else ("trained" if t["reused"] is False else "-"),
                        "-" if p.get("gain_per_row") is None else f"{p['gain_per_row']:+.4f}", str(p["corrupted"])])  # fmt: skip
    return out


HEADER = ["train rows", "size", "noise", "arm", "headline [95% CI]", "n", "per seed", "best non-training arm",
          "difference [95% CI], p", "training s", "training tokens", "artifact", "gain per extra row",
          "corrupted rows"]  # fmt: skip

HOW_TO_READ = (
    "Each point trains the adapter arms on the first n train rows of a seeded random order per family (every larger "
    "subset holds the smaller) and answers the same test rows. The fine-tuned arm is compared at each point with the "
    "best arm that does not train there (the reference arms, which read no train rows and ran once, and fewshot on "
    "the same subset), paired on the test rows (exact McNemar, or the cluster sign-flip test where rows share a "
    "document). The crossover is decided by a sequential test from the largest size down: each size is tested at 5% "
    "only while every larger size showed the fine-tuned arm better, so the verdict neither depends on how many "
    "points the curve has nor names a size whose lead larger sizes lose; 'reached at n' is the smallest size of "
    "that unbroken run. Beside it, an estimate: the gap fitted against log(train rows) (weighted by each point's "
    "precision) crosses 0 at the estimated row count, with a 95% interval from resampling the test rows. Under "
    "noise each train row is given a wrong target of the same type by its own seeded draw, so a row noisy at one "
    "size is noisy at every larger size (results.json lists them); test rows are never touched. Training cost is "
    "the artifact's own training (a reused artifact: what it cost when it was trained)."
)


def render_curve_markdown(results: dict) -> str:
    spec = results["config"]["spec"]
    out = [f"# ragft curve: {results['curve_id']}", "",
           f"Corpus **{results['corpus']}**; arms {', '.join(spec['arms'])}; sizes {', '.join(map(str, spec['rows']))}; "
           f"noise {', '.join(f'{x:g}' for x in spec['noise'])}; training seeds {results['training_seeds']}; test rows "
           + ", ".join(f"{f} {n}" for f, n in results["test_rows"].items()) + ".", "", HOW_TO_READ, ""]  # fmt: skip
    out += [f"Note: {n}" for n in results["notes"]] + ([""] if results["notes"] else [])
    for family, block in results["families"].items():
        out += [f"## {family}", ""]
        out += [line for line in summary_lines({"families": {family: block}})[1:]] + [""]
        refs = ", ".join(f"{a} {_cell_text(c)} (n={c['n']})" for a, c in block["reference"].items())
        if refs:
            out += [f"Reference lines (run {results['reference_run']}): {refs}", ""]
        out += ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        out += ["| " + " | ".join(r) + " |" for r in _table(block)] + [""]
    out += ["## Points", "", "| size | noise | run | train rows | corrupted |", "|---|---|---|---|---|"]
    for p in results["points"]:
        rows = ", ".join(f"{f} {n}" for f, n in p["train_rows"].items())
        out.append(f"| {p['size']} | {p['noise']:g} | {p['run_id']} | {rows} | {len(p['corrupted'])} |")
    return "\n".join(out) + "\n"


def curve_charts(results: dict) -> dict[str, str]:
    """One chart per family: headline against train rows (log scale) per arm and noise, interval bands, reference
    lines with their bands, each crossover marked; inline PNGs."""
    import matplotlib

    colours = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = ["-", "--", ":", "-."]
    noise = results["config"]["spec"]["noise"]
    out = {}
    for family, block in results["families"].items():
        lines = [ln for ln in block["lines"] if any(p["rows"] for p in ln["points"])]
        if not lines:
            continue
        fig, ax = figure(7, 4)
        arms = list(dict.fromkeys([*block["reference"], *(ln["arm"] for ln in lines)]))
        colour = {a: colours[i % len(colours)] for i, a in enumerate(arms)}
        for arm, c in block["reference"].items():
            ax.axhline(c["value"], color=colour[arm], lw=1, label=f"{arm} (reference)")
            ax.axhspan(c["ci_low"], c["ci_high"], color=colour[arm], alpha=0.08)
        for ln in lines:
            pts = [p for p in ln["points"] if p["rows"]]
            xs = [p["rows"] for p in pts]
            style = styles[noise.index(ln["noise"]) % len(styles)] if ln["noise"] in noise else "-"
            ax.plot(xs, [p["value"] for p in pts], style, marker="o", color=colour[ln["arm"]],
                    label=f"{ln['arm']}" + (f", noise {ln['noise']:g}" if len(noise) > 1 else ""))  # fmt: skip
            ax.fill_between(xs, [p["ci_low"] for p in pts], [p["ci_high"] for p in pts], color=colour[ln["arm"]],
                            alpha=0.15)  # fmt: skip
            for p in pts:
                if len(p["seeds"]) > 1:
                    ax.scatter([p["rows"]] * len(p["seeds"]), p["seeds"], s=8, color=colour[ln["arm"]], alpha=0.6)
        for x in block["crossover"]:
            if x["status"] == "reached":
                ax.axvline(x["rows"], color=colour[x["arm"]], ls="--", lw=1)
                ax.annotate(f"crossover {x['arm']} @ {x['rows']}", (x["rows"], ax.get_ylim()[1]), fontsize=8,
                            ha="left", va="top", rotation=90)  # fmt: skip
        ax.set_xscale("log")
        ticks = sorted({p["rows"] for ln in lines for p in ln["points"] if p["rows"]})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("train rows (log scale)")
        ax.set_ylabel(block["headline_metric"])
        ax.set_title(f"{family}: when does fine-tuning win?")
        ax.legend(fontsize=7, loc="best")
        out[family] = png_data_uri(fig)
    return out


TEMPLATE = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ragft curve {{ r.curve_id }}</title>
<style>
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#212529}
table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #dee2e6;padding:4px 8px;vertical-align:top}
th{background:#f1f3f5}.small{font-size:12px;color:#495057}
</style></head><body>
<h1>ragft curve: {{ r.curve_id }}</h1>
<p class="small">Corpus <b>{{ r.corpus }}</b> &middot; arms {{ r.config.spec.arms | join(", ") }} &middot; sizes
{{ r.config.spec.rows | join(", ") }} &middot; noise {{ r.config.spec.noise | join(", ") }} &middot; training seeds
{{ r.training_seeds }} &middot; test rows: {% for f, n in r.test_rows.items() %}{{ f }} {{ n }}{% if not loop.last %}, {% endif %}{% endfor %}</p>
<p class="small">{{ how_to_read }}</p>
{% for n in r.notes %}<p class="small">Note: {{ n }}</p>{% endfor %}
{% for family, block in r.families.items() %}
<h2>{{ family }}</h2>
{% if family in charts %}<img alt="{{ family }} curve" src="{{ charts[family] }}">{% endif %}
<ul>{% for line in summaries[family] %}<li>{{ line }}</li>{% endfor %}</ul>
<table><tr>{% for h in header %}<th>{{ h }}</th>{% endfor %}</tr>
{% for row in tables[family] %}<tr>{% for v in row %}<td>{{ v }}</td>{% endfor %}</tr>{% endfor %}</table>
{% endfor %}
<h2>Points</h2>
<table><tr><th>size</th><th>noise</th><th>run</th><th>train rows</th><th>corrupted rows</th></tr>
{% for p in r.points %}<tr><td>{{ p.size }}</td><td>{{ p.noise }}</td><td>{{ p.run_id }}</td>
<td>{% for f, n in p.train_rows.items() %}{{ f }} {{ n }}{% if not loop.last %}, {% endif %}{% endfor %}</td>
<td>{% for c in p.corrupted %}{{ c.row_id }} ({{ c.field }}: {{ c.was }} &rarr; {{ c.now }}){% if not loop.last %}; {% endif %}{% endfor %}</td></tr>{% endfor %}</table>
<p class="small">Library versions: {% for k, v in r.versions.items() %}{{ k }} {{ v }}{% if not loop.last %}, {% endif %}{% endfor %}. Schema {{ r.schema }}.</p>
</body></html>
""")


def render_curve_html(results: dict) -> str:
    return TEMPLATE.render(
        r=results,
        charts=curve_charts(results),
        how_to_read=HOW_TO_READ,
        header=HEADER,
        tables={f: _table(b) for f, b in results["families"].items()},
        summaries={
            f: [s.replace("**", "") for s in summary_lines({"families": {f: b}})[1:]]
            for f, b in results["families"].items()
        },  # fmt: skip
    )


def write_curve_report(results: dict, reports_dir: Path) -> Path:
    """Write results.json, report.md and report.html under `<reports_dir>/<curve id>/` (each replaced whole)."""
    folder = Path(reports_dir) / results["curve_id"]
    folder.mkdir(parents=True, exist_ok=True)
    files = {"results.json": json.dumps(results, indent=2, default=str), "report.md": render_curve_markdown(results),
             "report.html": render_curve_html(results)}  # fmt: skip
    for name, text in files.items():
        folders.replace_file(folder / name, text.encode("utf-8"))
    return folder
