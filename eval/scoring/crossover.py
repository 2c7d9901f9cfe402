"""A learning curve's analysis: each point's headline with its interval, paired tests against the best arm
that needs no training, the crossover estimate with its interval, the trend and the noise match."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from ragft.eval.curve_spec import SCHEMA, CurvePoint, CurveSpec, curve_id_for, learns
from ragft.eval.families import FAMILIES
from ragft.eval.scoring import stats
from ragft.eval.scoring.metrics import METRICS, headline, report_families
from ragft.eval.scoring.results import (
    balance_values,
    document_clusters,
    fold_replicates,
    score_predictions,
    scoring_context,
)
from ragft.eval.spec import RunSpec
from ragft.eval.store import Store
from ragft.eval.tasks import TaskRow, load_tasks
from ragft.service.arms import ARMS, by_cost
from ragft.service.models import library_versions
from ragft.service.settings import Settings, without_folders


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
                        f"{gap_text(first['comparison'])}{also}"}  # fmt: skip
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
                    f"{how} ({gap_text(c)}){said}"}  # fmt: skip


def gap_text(c: dict) -> str:
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
