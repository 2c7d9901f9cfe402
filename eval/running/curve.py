"""Crossover curves: how many labelled rows until a fine-tuned arm beats prompting or RAG, and how much label
noise it survives (`ragft curve`, `POST /v1/curves`).

A curve trains the adapter arms on nested, seeded subsets of the train rows (`--rows 10,25,50,100,all`, per
trainable family; every larger subset holds the smaller) and answers the same test rows at every point. Each
point is a *corpus view*: a folder under `<data_dir>/curves/` whose tasks hold every test row, the subset's train
rows (each with a wrong target by its own seeded draw under `--noise`) and every other row, its documents/ and
updates/ linked to the corpus's own. A point is then an ordinary run (`ragft.eval.running.runner.run_eval`) with ordinary
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

import importlib.util
import json
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Literal

import jsonschema
import numpy as np
from ragft.eval.curve_spec import ALL, Corruption, CurvePoint, CurveSpec, learns
from ragft.eval.families import FAMILIES
from ragft.eval.reporting.curve_report import write_curve_report
from ragft.eval.running.pipeline import capped_order
from ragft.eval.running.runner import run_eval
from ragft.eval.scoring.baseline import question_type
from ragft.eval.scoring.crossover import build_curve
from ragft.eval.spec import Progress, RunCancelled, RunSpec
from ragft.eval.store import Store
from ragft.eval.tasks import TaskRow, load_tasks
from ragft.service import engine_ct2, folders
from ragft.service.arms import ARMS
from ragft.service.retrieval import index_exists, index_lock
from ragft.service.settings import Settings

REUSED_POINT_S = 5.0  # a point faster than this trained and answered nothing (its run was stored): not a measure
Executor = Literal["local", "ray"]  # where the points run (eval.executor): run_curve, ray_runs
VIEW_MANIFEST = "curve.json"


def subset_order(rows: list[TaskRow], settings: Settings, seed: int) -> dict[str, list[str]]:
    """Per trainable family, its train row ids (those `ragft.eval.running.pipeline.capped_order` trains on) in a seeded random
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
