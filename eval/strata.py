"""Verdicts by stratum: each family's headline, comparisons and verdict within every value of a row field.

A pooled verdict can hide where an arm wins: retrieval's advantage over fine-tuning is published to be
largest on the least popular facts (Mallen et al., 2023; Soudani et al., 2024). Rows may carry any label a
team names (`eval.strata_field`: a row field such as `stratum`, `kind` or `popularity`, or a key of the
row's `tags`); per family and per value this module gives every arm's headline with its interval, the
best arm's paired test and non-inferiority test against each other arm, Holm-adjusted over all the stratum
tests of the report (a family of tests of its own, beside the pooled report's), and the verdict those
outcomes give (`eval.verdict.decide`). The verdict respects the family's chance baseline (or the metric's
floor) on the stratum's rows as the pooled one does: the arms a verdict could name are tested against it,
Holm-adjusted over every stratum's such tests, and a stratum where none beats it recommends nothing. Row values
are re-balanced within the stratum (abstention's two halves weigh the same in each stratum too).

Example:
    >>> from eval.tasks import TaskRow
    >>> row = TaskRow.model_validate({"id": "k1", "family": "knowledge", "split": "test", "question": "Who?",
    ...     "answers": ["A"], "tags": {"doc_type": "manual"}})
    >>> row_stratum(row, "doc_type"), row_stratum(row, "kind")
    ('manual', None)
"""

from __future__ import annotations

from collections import defaultdict

from eval import stats
from eval.metrics import METRICS, balanced
from eval.tasks import TaskRow
from eval.verdict import decide, gate, leading, outcome
from service.arms import by_cost

MIN_ROWS = 2  # rows a stratum needs before it gets figures


def row_stratum(row: TaskRow, field: str) -> str | None:
    """The row's value of `field` (a TaskRow field, else a key of its tags) as text; None when it has none."""
    own = field != "tags" and field in TaskRow.model_fields
    value = getattr(row, field) if own else row.tags.get(field)
    return None if value is None or value == [] else str(value)


def _figure(values: list[float], seed: int) -> dict:
    ci = stats.interval(values, seed)
    return {"value": _round(ci.value), "ci_low": _round(ci.ci_low), "ci_high": _round(ci.ci_high), "n": ci.n}


def _round(x) -> float | None:
    return None if x is None or x != x else round(float(x), 4)


def stratum_blocks(families: dict, values, rows: dict[str, TaskRow], field: str, seed: int, margin: float,
                   references: dict[str, dict[str, float]] | None = None, alpha: float = 0.05) -> dict:  # fmt: skip
    """Per family, per value of `field`: {arms: {arm: figure}, comparisons: [...], baseline, verdict: {...}};
    families whose scored rows carry fewer than two values of the field are left out (there is nothing to break
    down). `values`: row values before balancing; `references[family]`: the baseline's (or floor's) row values."""
    references = references or {}
    out: dict[str, dict] = {}
    tests: list[dict] = []
    for family, block in families.items():
        top, higher = block["headline_metric"], block["higher_is_better"]
        arms = [a for a in block["arms"] if (a, top) in values]
        groups: dict[str, set[str]] = defaultdict(set)
        for arm in arms:
            for row_id in values[(arm, top)]:
                label = row_stratum(rows[row_id], field) if row_id in rows else None
                if label is not None:
                    groups[label].add(row_id)
        if len(groups) < 2:
            continue
        strata = {}
        for label in sorted(groups):
            ids = sorted(groups[label])
            metric = METRICS[top]
            mine = {a: balanced(metric, {i: float(values[(a, top)][i]) for i in ids if i in values[(a, top)]}, rows)
                    for a in arms}  # fmt: skip
            per_arm = {a: [v[i] for i in ids if i in v] for a, v in mine.items()}
            per_arm = {a: v for a, v in per_arm.items() if len(v) >= MIN_ROWS}
            if not per_arm:
                continue
            figures = {a: _figure(v, seed) for a, v in per_arm.items()}
            sign = 1 if higher else -1
            cheap = by_cost(list(figures))
            best = max(figures, key=lambda a: (sign * figures[a]["value"], -cheap.index(a)))
            comparisons = []
            for arm in [a for a in cheap if a != best]:
                common = [i for i in ids if i in mine[arm] and i in mine[best]]
                xb = [mine[best][i] for i in common]
                xa = [mine[arm][i] for i in common]
                c = stats.compare(best, arm, xb, xa, seed)
                ni = stats.non_inferiority(arm, best, xa, xb, margin, seed, higher_is_better=higher)
                comparisons.append({"a": best, "b": arm, "n": c.n, "difference": _round(c.difference),
                                    "ci_low": _round(c.ci_low), "ci_high": _round(c.ci_high),
                                    "p_value": _round(c.p_value), "test": c.test,
                                    "non_inferiority_p": _round(ni.p_value)})  # fmt: skip
            tests += comparisons
            reference = balanced(metric, {i: v for i, v in references.get(family, {}).items() if i in groups[label]},
                                 rows)  # fmt: skip
            against = []  # each arm against the baseline on the stratum's rows; only the leading ones are tested
            for arm in cheap:
                common = [i for i in ids if i in mine[arm] and i in reference]
                if len(common) >= MIN_ROWS:
                    c = stats.compare(arm, "chance", [mine[arm][i] for i in common], [reference[i] for i in common],
                                      seed)  # fmt: skip
                    against.append({"a": arm, "b": "chance", "n": c.n, "difference": _round(c.difference),
                                    "p_value": _round(c.p_value), "test": c.test})  # fmt: skip
            strata[label] = {"rows": len(ids), "arms": figures, "best": best, "comparisons": comparisons,
                             "baseline": _figure([reference[i] for i in ids if i in reference], seed)
                             if reference else None, "baseline_comparisons": against}  # fmt: skip
        if strata:
            out[family] = {"field": field, "headline_metric": top, "higher_is_better": higher, "strata": strata,
                           "baseline_reference": block.get("baseline_reference", "chance")}  # fmt: skip
    _adjust(tests, alpha)
    outcomes_of = {(family, label): {c["b"]: outcome(c, higher_is_better=block["higher_is_better"], alpha=alpha)
                                     for c in s["comparisons"]}
                   for family, block in out.items() for label, s in block["strata"].items()}  # fmt: skip
    # the arms a stratum's verdict could name, against the baseline: Holm over all strata, as the pooled gate
    gate([(leading(s["best"], outcomes_of[(family, label)]), s["baseline_comparisons"], block["higher_is_better"])
          for family, block in out.items() for label, s in block["strata"].items()], alpha=alpha, clean=_round)  # fmt: skip
    for family, block in out.items():
        for label, s in block["strata"].items():
            outcomes = outcomes_of[(family, label)]
            above = {c["a"]: bool(c["beats"]) for c in s["baseline_comparisons"]}
            scores = {a: f["value"] for a, f in s["arms"].items()}
            chance = s["baseline"] and block["baseline_reference"] == "chance"
            v = decide(family, scores, outcomes, margin=margin, higher_is_better=block["higher_is_better"],
                       beats_baseline=above if s["baseline"] else None,
                       baseline=s["baseline"]["value"] if chance else None,
                       baseline_reason="too few train rows to choose a guess")  # fmt: skip
            s["verdict"] = {"best": v.best, "worse": v.worse, "non_inferior": v.non_inferior,
                            "undecided": v.undecided, "recommended": v.recommended, "status": v.status,
                            "reason": v.reason}  # fmt: skip
            s.pop("best")
    return out


def _adjust(tests: list[dict], alpha: float) -> None:
    """Holm over every stratum test (and, separately, every stratum non-inferiority test)."""
    if not tests:
        return
    for c, p in zip(tests, stats.holm([c["p_value"] for c in tests]), strict=True):
        c["p_holm"], c["significant"] = _round(p), p < alpha
    for c, p in zip(tests, stats.holm([c["non_inferiority_p"] for c in tests]), strict=True):
        c["non_inferiority_p_holm"] = _round(p)


def strata_lines(results: dict) -> list[str]:
    """One line per family and stratum for the report: each arm's headline with its interval, the best arm's
    Holm-adjusted tests, and the stratum's verdict."""
    labels = {a: info.get("label", a) for a, info in results.get("arms", {}).items()}
    lines = []
    for family, block in (results.get("strata") or {}).items():
        for label, s in block["strata"].items():
            arms = "; ".join(f"{labels.get(a, a)} {f['value']:.3f} [{f['ci_low']:.3f}, {f['ci_high']:.3f}]"
                             for a, f in s["arms"].items())  # fmt: skip
            tests = "; ".join(f"{labels.get(c['a'], c['a'])} minus {labels.get(c['b'], c['b'])} {c['difference']:+.3f} "
                              f"[{c['ci_low']:+.3f}, {c['ci_high']:+.3f}], Holm p={c['p_holm']:.3g}"
                              for c in s["comparisons"])  # fmt: skip
            verdict = s["verdict"]
            b = s.get("baseline")
            if b and block.get("baseline_reference", "chance") == "chance":
                arms += f"; chance {b['value']:.3f} [{b['ci_low']:.3f}, {b['ci_high']:.3f}]"
            lines.append(f"**{family}**, {block['field']} = {label} ({s['rows']} rows, {block['headline_metric']}): "
                         f"{arms}. {tests + '. ' if tests else ''}Verdict: {verdict['status']}"
                         f"{', use ' + labels.get(verdict['recommended'], verdict['recommended']) if verdict['recommended'] else ''}"
                         f" ({verdict['reason']}).")  # fmt: skip
    return lines
