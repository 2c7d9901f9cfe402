import json

import numpy as np
import pytest
from ragft.eval import curve_spec
from ragft.eval.curve_spec import CurveSpec
from ragft.eval.running import curve
from ragft.eval.running.curve import noisy_rows
from ragft.eval.scoring.crossover import RunValues, adjust, clean_rows_matching, crossover, crossover_estimate, paired
from ragft.eval.store import Store
from ragft.eval.tasks import load_tasks

LABELS = ["yes", "no"]
SCHEMA = {"type": "object", "properties": {"product": {"type": "string"}, "priority": {"enum": ["low", "high"]}},
          "required": ["product", "priority"]}  # fmt: skip
EXTRA = [
    *({"id": f"bl{i}", "family": "behaviour", "split": "train", "input": f"the k{i} router is {w}", "kind": "label",
       "instruction": "Answer yes or no.", "labels": LABELS, "label": LABELS[i % 2]}
      for i, w in enumerate(["broken", "fine", "slow", "dead", "ok", "hot"])),
    *({"id": f"bj{i}", "family": "behaviour", "split": "train", "input": f"{p} {q} price", "kind": "json",
       "instruction": "Reply with JSON.", "schema": SCHEMA, "expected": {"product": p, "priority": q}}
      for i, (p, q) in enumerate([("k2", "low"), ("k4", "high"), ("camera", "low")])),
    {"id": "kx1", "family": "knowledge", "split": "train", "question": "How much does the dock cost?",
     "answers": ["$249"], "source_docs": ["kestrel-k2"]},
    {"id": "kx2", "family": "knowledge", "split": "train", "question": "How much does the camera cost?",
     "answers": ["$199"], "source_docs": ["kestrel-k4"]},
]  # fmt: skip


@pytest.fixture
def curve_corpus(full_corpus):
    with (full_corpus / "tasks" / "tasks.jsonl").open("a") as f:
        f.writelines(json.dumps(r) + "\n" for r in EXTRA)
    return full_corpus


def test_sizes_and_noise_parse_and_check():
    assert curve_spec.parse_sizes("50, 10,all,10") == [10, 50, "all"]
    assert curve_spec.parse_noise("0.3,0") == [0.0, 0.3]
    for bad in ("0", "ten", ""):
        with pytest.raises(ValueError):
            curve_spec.parse_sizes(bad)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        curve_spec.parse_noise("1")


def test_a_curve_needs_an_arm_that_learns_from_train_rows(settings, curve_corpus):
    with pytest.raises(ValueError, match="learn nothing"):
        CurveSpec.resolve(settings, curve_corpus, arms=["base", "rag"], families=["behaviour"])


def test_subsets_are_nested_per_family(settings, curve_corpus):
    rows = load_tasks(curve_corpus)
    order = curve.subset_order(rows, settings, seed=0)
    assert set(order) == {"knowledge", "behaviour", "abstention"}
    # a seeded random order, not the training order that puts the rows test paraphrases restate first
    assert sorted(order["knowledge"]) == sorted(r.id for r in rows if r.split == "train" and r.family == "knowledge")
    small, large, full = (curve.subset(order, s) for s in (2, 5, "all"))
    for family in order:
        assert set(small[family]) <= set(large[family]) <= set(full[family])
        assert len(small[family]) == min(2, len(order[family]))
    assert sorted(full["behaviour"]) == sorted(r.id for r in rows if r.split == "train" and r.family == "behaviour")
    assert curve.subset_order(rows, settings, seed=1)["behaviour"] != order["behaviour"]  # seeded
    sizes, notes = curve.plan_sizes([2, 5, 100, "all"], order, ["behaviour"])
    assert sizes == [2, 5, "all"] and "100 rows: the same subset as all" in notes[0]


def test_noise_gives_train_rows_a_wrong_target_of_their_type_and_never_touches_test_rows(settings, curve_corpus):
    rows = load_tasks(curve_corpus)
    order = curve.subset_order(rows, settings, seed=0)
    folder, counts, corrupted = curve.write_view(settings, curve_corpus, rows, order, "all", 0.5, seed=0)
    view = {r.id: r for r in load_tasks(folder)}  # the view is a valid corpus
    original = {r.id: r for r in rows}
    assert {r.id for r in view.values() if r.split == "test"} == {r.id for r in rows if r.split == "test"}
    for row in rows:
        if row.split == "test":
            assert view[row.id].model_dump(exclude={"paraphrase_of"}) == row.model_dump(exclude={"paraphrase_of"})
    by_family = {f: [c for c in corrupted if c.family == f] for f in counts}
    # each row by its own draw: the share holds in expectation, and exactly the rows whose draw fell under it
    assert {c.row_id for c in by_family["behaviour"]} == {
        r.id for r in rows if r.split == "train" and r.family == "behaviour" and curve.noisy(r.id, 0.5, 0)
    }
    assert 0 < len(by_family["behaviour"]) < counts["behaviour"]
    assert not by_family["abstention"]  # the abstention phrase is the only target an abstention row has
    for c in corrupted:
        before, after = original[c.row_id], view[c.row_id]
        assert before.split == "train"
        if c.field == "label":
            assert after.label in before.labels and after.label != before.label
        elif c.field.startswith("expected."):
            changed = [k for k in before.expected if before.expected[k] != after.expected[k]]
            assert len(changed) == 1  # one JSON field, to a value the schema allows (load_tasks checked it)
        else:
            assert after.answers != before.answers and c.same_type
    manifest = json.loads((folder / "curve.json").read_text())
    assert [c["row_id"] for c in manifest["corrupted"]] == [c.row_id for c in corrupted]
    again = curve.write_view(settings, curve_corpus, rows, order, "all", 0.5, seed=0)
    assert again[2] == corrupted  # seeded: the same rows, the same wrong targets
    small = curve.write_view(settings, curve_corpus, rows, order, 2, 0.0, seed=0)[0]
    kept = {r.id for r in load_tasks(small) if r.split == "train" and r.family == "knowledge"}
    assert kept == set(order["knowledge"][:2])


def _run(scores: dict[str, list[int]]) -> RunValues:
    ids = [f"r{i:03d}" for i in range(len(next(iter(scores.values()))))]
    values = {(arm, "m"): dict(zip(ids, s, strict=True)) for arm, s in scores.items()}
    return RunValues({}, values, {}, {})


def _points(gaps: list[tuple[int, int]], n: int = 60, reference: int = 20) -> list[dict]:
    """Per point (rows, lora's correct rows): lora against a reference arm correct on the first `reference` rows."""
    ref = [1] * reference + [0] * (n - reference)
    points = []
    for rows, correct in gaps:
        lora = [1] * correct + [0] * (n - correct)
        run = _run({"lora": lora, "rag": ref})
        points.append({"rows": rows, "against": "rag", "comparison": paired("lora", run, "rag", run, "m", 0)})
    adjust([p["comparison"] for p in points])
    return points


def test_crossover_rule_on_constructed_scores():
    reached = crossover(_points([(10, 18), (25, 24), (50, 45), (100, 55)]), higher_is_better=True, label="LoRA")
    assert reached["status"] == "reached" and reached["rows"] == 50 and "beats rag" in reached["statement"]
    assert "holds at every larger size tested up to 100 (2 tests in sequence)" in reached["statement"]
    behind = crossover(_points([(10, 0), (25, 1), (50, 2)]), higher_is_better=True)
    assert behind["status"] == "worse" and behind["rows"] is None
    assert behind["statement"].startswith("not reached within the 50 train rows available")
    assert behind["trend"]["per_doubling"] > 0  # lora's gap closes as rows grow
    undecided = crossover(_points([(10, 18), (25, 21), (50, 23)]), higher_is_better=True)
    assert undecided["status"] == "undecided" and "undecided against rag" in undecided["statement"]
    assert "(95% CI), p = " in undecided["statement"]


def test_the_crossover_does_not_move_with_the_number_of_points_and_needs_larger_sizes_to_hold():
    """Issue #33 item 6: 'the first significant point' moved with how many points Holm spanned (p 0.044 over 3
    tests, 0.374 over 10), and named a size whose lead larger sizes lost."""
    three = crossover(_points([(50, 20), (100, 30), (210, 40)]), higher_is_better=True)
    ten = crossover(_points([(2, 20), (4, 20), (6, 20), (8, 19), (10, 20), (20, 21), (30, 20), (50, 20), (100, 30),
                             (210, 40)]), higher_is_better=True)  # fmt: skip
    assert three["status"] == ten["status"] == "reached" and three["rows"] == ten["rows"] == 100
    lost = crossover(_points([(10, 40), (50, 45), (100, 21)]), higher_is_better=True)  # ahead early, level at 100
    assert lost["status"] == "undecided" and lost["rows"] is None


def test_the_crossover_estimate_crosses_where_the_fitted_gap_does_with_an_interval_that_covers_it():
    rng = np.random.default_rng(0)
    sizes = [10, 25, 50, 100, 200]
    n = 1500
    truth = 40.0  # gap = 0.1 * ln(rows / 40): below 0 under 40 rows, above it after
    gaps = np.array([rng.choice([-1.0, 0.0, 1.0], n, p=[0.3 - g / 2, 0.4, 0.3 + g / 2])
                     for g in (0.1 * np.log(np.array(sizes) / truth))])  # fmt: skip
    e = crossover_estimate(sizes, gaps, seed=0, resamples=300)
    assert e["ci_low"] <= truth <= e["ci_high"] and 20 <= e["rows"] <= 80
    assert e["per_doubling"] == pytest.approx(0.1 * np.log(2), abs=0.025)
    flat = crossover_estimate(sizes, rng.choice([-1.0, 0.0], (5, n), p=[0.3, 0.7]), seed=0, resamples=200)
    assert flat["rows"] == "inf" and flat["ci_high"] == "inf"  # always behind, not closing: no crossover in reach


def test_noisy_subsets_are_nested(settings, curve_corpus):
    """Issue #33 item 6: the noisy rows of a size were the first of a seeded order within that size, so a larger
    size could leave a smaller size's noisy row clean; decided per row, a noisy row stays noisy."""
    rows = load_tasks(curve_corpus)
    train = [r for r in rows if r.split == "train"]
    order = curve.subset_order(rows, settings, seed=0)
    by_id = {r.id: r for r in train}
    corrupted = []
    for size in (2, 5, "all"):
        chosen = [by_id[i] for ids in curve.subset(order, size).values() for i in ids]
        corrupted.append({c.row_id for c in noisy_rows(chosen, train, 0.5, seed=0)[1]})
    assert corrupted[0] <= corrupted[1] <= corrupted[2] and corrupted[2]


def test_clean_rows_matching_a_noisy_plateau():
    clean = [(10, 0.1), (100, 0.5), (1000, 0.9)]
    assert clean_rows_matching(clean, 0.3, True) == {"rows": 32, "bound": "about"}  # halfway in log(rows)
    assert clean_rows_matching(clean, 0.05, True) == {"rows": 10, "bound": "at most"}
    assert clean_rows_matching(clean, 0.95, True) == {"rows": 1000, "bound": "more than"}


def test_curve_end_to_end_reuses_points_and_resumes(settings, curve_corpus, ragft):
    settings, run = ragft
    args = ["curve", "--corpus", curve_corpus, "--arms", "base,fewshot,lora", "--families", "behaviour",
            "--rows", "3,all", "--noise", "0,0.5"]  # fmt: skip
    out = run(*args)
    assert out.exit_code == 0, out.output
    curve_id = out.stdout.split("Curve ")[1].split()[0]
    folder = settings.eval.reports_dir / curve_id
    results = json.loads((folder / "results.json").read_text())
    block = results["families"]["behaviour"]
    assert set(block["reference"]) == {"base"}  # base reads no train rows: one run, a reference line
    assert {(ln["arm"], ln["noise"]) for ln in block["lines"]} == {(a, x) for a in ("fewshot", "lora")
                                                                   for x in (0.0, 0.5)}  # fmt: skip
    lora = next(ln for ln in block["lines"] if ln["arm"] == "lora" and ln["noise"] == 0)
    assert [p["rows"] for p in lora["points"]] == [3, 10]
    for p in lora["points"]:
        assert p["n"] == 3 and p["ci_low"] <= p["value"] <= p["ci_high"] and p["training"]["tokens"] > 0
        assert p["against"] in ("base", "fewshot") and p["comparison"]["p_holm"] is not None
    assert {x["status"] for x in block["crossover"]} <= {"reached", "worse", "undecided"}
    assert all("estimate" in x and "_gaps" not in json.dumps(block) for x in block["crossover"])
    assert block["noise_matching"][0]["noise"] == 0.5
    noisy = [p for p in results["points"] if p["noise"] == 0.5]
    assert all(p["corrupted"] for p in noisy) and all(c["row_id"].startswith("b") for p in noisy
                                                        for c in p["corrupted"] if c["family"] == "behaviour")  # fmt: skip
    full = next(p for p in results["points"] if p["size"] == "all" and p["noise"] == 0)
    assert full["corpus"] == curve_corpus.name  # the full clean point is the corpus itself, shared with ragft eval
    html = (folder / "report.html").read_text()
    assert "data:image/png;base64," in html and "http" not in html.split("<body>")[1].split("Library")[0]
    assert "crossover" in (folder / "report.md").read_text().lower() or block["crossover"]

    store = Store(settings.database)
    answers = {p["run_id"]: store.count(p["run_id"]) for p in results["points"]}
    store.close()
    again = run(*args)  # every point reused: the same runs, no adapter trained, no answer added
    assert again.exit_code == 0 and f"Curve {curve_id}" in again.stdout
    results2 = json.loads((folder / "results.json").read_text())
    assert all(p["training"]["reused"] for ln in results2["families"]["behaviour"]["lines"] if ln["arm"] == "lora"
               for p in ln["points"])  # fmt: skip
    store = Store(settings.database)
    assert {r: store.count(r) for r in answers} == answers
    store.close()


def test_an_interrupted_curve_resumes(settings, curve_corpus, monkeypatch):
    from ragft.eval.spec import RunCancelled
    from ragft.service import engine_ct2
    from ragft.service.finetune import TrainingCancelled

    settings = settings.model_copy(update={"eval": settings.eval.model_copy(update={"reports_dir": settings.data_dir
                                                                                    / "reports"})})  # fmt: skip
    spec = CurveSpec.resolve(settings, curve_corpus, arms=["base", "lora"], families=["behaviour"], rows=[3, "all"])
    stages = []
    with pytest.raises((RunCancelled, TrainingCancelled)):  # stopped once the second point starts training
        curve.run_curve(settings, spec, progress=lambda s, d, t: stages.append(s),
                        should_stop=lambda: any("rows all" in s for s in stages))  # fmt: skip
    first = curve.view_name(curve_corpus, 3, 0.0, 0)
    manifest = settings.artifact_dir / "adapters" / first / "lora" / "behaviour" / "manifest.json"
    made = json.loads(manifest.read_text())["created_at"]
    stages.clear()
    released = []
    monkeypatch.setattr(engine_ct2, "release", lambda keys: released.append(set(keys)) or 0)
    results, folder = curve.run_curve(settings, spec, progress=lambda s, d, t: stages.append(s))
    assert len(released) == 2  # after each point, the converted models it loaded are freed
    assert json.loads(manifest.read_text())["created_at"] == made  # the first point's adapter was reused
    assert not any(s.startswith("answer") and "rows 3" in s for s in stages)  # and its answers
    assert len(results["points"]) == 2 and (folder / "report.html").is_file()


def test_time_left_is_fitted_on_measured_points_by_their_train_rows():
    assert curve.remaining_s([], [10, 20]) is None  # nothing measured yet
    assert curve.remaining_s([(10, 60.0)], []) == 0.0
    assert curve.remaining_s([(10, 60.0)], [25, 50]) == 120.0  # one size measured: its time per point
    # 30 s of answering per point plus 2 s per train row: the fit reads both off two sizes
    assert curve.remaining_s([(10, 50.0), (25, 80.0)], [50, 100]) == pytest.approx((30 + 100) + (30 + 200))
    # a size that cost less than a smaller one cannot make later points free
    assert curve.remaining_s([(10, 80.0), (25, 50.0)], [50]) > 0


def test_a_kill_while_a_view_copies_the_index_leaves_no_half_index_and_the_next_copy_is_whole(
    settings, curve_corpus, monkeypatch
):
    """The view's index was copied in place: a kill after the manifest and the FAISS file left an index that looked
    complete, was never copied again and failed when a point loaded it. It is copied aside and swapped in now."""
    import shutil

    from ragft.service.runtime import Runtime

    Runtime(settings, curve_corpus).index()
    source = settings.index_dir(curve_corpus)
    rows = load_tasks(curve_corpus)
    order = curve.subset_order(rows, settings, seed=0)

    class Killed(BaseException):
        pass

    def killed_midway(src, dst, **kwargs):
        dst.mkdir(parents=True, exist_ok=True)
        for name in ("manifest.json", "index.faiss"):  # the files that make an index look complete
            shutil.copy2(src / name, dst / name)
        raise Killed

    real_copytree = shutil.copytree
    monkeypatch.setattr(shutil, "copytree", killed_midway)
    with pytest.raises(Killed):
        curve.write_view(settings, curve_corpus, rows, order, 2, 0.0, seed=0)
    monkeypatch.setattr(shutil, "copytree", real_copytree)
    folder = curve.write_view(settings, curve_corpus, rows, order, 2, 0.0, seed=0)[0]
    copy = settings.index_dir(folder)
    files = {f.name: f.stat().st_size for f in source.iterdir() if f.is_file()}
    assert {f.name: f.stat().st_size for f in copy.iterdir() if f.is_file()} == files
    assert [p.name for p in copy.parent.iterdir() if p.name.startswith(copy.name + ".")] in (
        [],
        [f"{copy.name}.swap.lock"],
    )


def test_with_several_training_seeds_a_curve_point_resamples_seeds():
    """Issue #33 item 5: the curve's tests ran on per-row seed means, so seed-to-seed variance never reached them."""
    ids = [f"r{i:03d}" for i in range(60)]
    seeds = [[1.0 if i % 10 < c else 0.0 for i in range(60)] for c in (9, 6, 3)]  # the adapter moves a lot
    mean = {i: float(np.mean([s[k] for s in seeds])) for k, i in enumerate(ids)}
    few = {i: 1.0 if k % 10 < 4 else 0.0 for k, i in enumerate(ids)}
    values = {("lora", "behaviour_pass"): mean, ("fewshot", "behaviour_pass"): few}
    once = paired("lora", RunValues({}, values, {}, {}), "fewshot", RunValues({}, values, {}, {}), "behaviour_pass", 0)
    run = RunValues({}, values, {("lora", "behaviour_pass"): seeds}, {})
    thrice = paired("lora", run, "fewshot", run, "behaviour_pass", 0)
    assert once["difference"] == thrice["difference"] == 0.2
    assert thrice["test"] == "seed-and-row-bootstrap (k=3)" and thrice["p_value"] > once["p_value"]
