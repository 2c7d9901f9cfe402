"""Verdicts by stratum: each family's headline, comparisons and verdict within every value of a row field.

A pooled verdict can hide where an arm wins: retrieval's advantage over fine-tuning is published to be
largest on the least popular facts (Mallen et al., 2023; Soudani et al., 2024). Rows may carry any label a
team names (`eval.strata_field`: a row field such as `stratum`, `kind` or `popularity`, or a key of the
row's `tags`); per family and per value this module gives every arm's headline with its interval and judges
the stratum exactly as a family is judged (`ragft.eval.scoring.verdict.judge_family`: every pair of arms, Holm within the
stratum, the margin tests, the one-sided gate against the family's chance baseline, or the metric's floor, on
the stratum's rows), so a stratum's verdict depends on its own rows only. Row values are re-balanced within
the stratum (abstention's two halves weigh the same in each stratum too).

Example:
    >>> from ragft.eval.tasks import TaskRow
    >>> row = TaskRow.model_validate({"id": "k1", "family": "knowledge", "split": "test", "question": "Who?",
    ...     "answers": ["A"], "tags": {"doc_type": "manual"}})
    >>> row_stratum(row, "doc_type"), row_stratum(row, "kind")
    ('manual', None)
"""

from __future__ import annotations

from collections import defaultdict

from ragft.eval.scoring import stats
from ragft.eval.scoring.metrics import METRICS, balanced
from ragft.eval.scoring.verdict import judge_family
from ragft.eval.tasks import TaskRow

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
                   references: dict[str, dict[str, float]] | None = None, alpha: float = 0.05,
                   clusters_of=lambda ids: None) -> dict:  # fmt: skip
    """Per family, per value of `field`: {arms: {arm: figure}, pairs, comparisons, baseline, baseline_comparisons,
    verdict}; families whose scored rows carry fewer than two values of the field are left out (there is nothing
    to break down). `values`: row values before balancing; `references[family]`: the baseline's (or floor's) row
    values; `clusters_of(ids)`: the rows' clusters. Each stratum is judged as a family is (`judge_family`), its
    p-values adjusted within the stratum."""
    references = references or {}
    out: dict[str, dict] = {}
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
        kind = block.get("baseline_reference", "chance")
        for label in sorted(groups):
            ids = sorted(groups[label])
            metric = METRICS[top]
            mine = {a: balanced(metric, {i: float(values[(a, top)][i]) for i in ids if i in values[(a, top)]}, rows)
                    for a in arms}  # fmt: skip
            mine = {a: v for a, v in mine.items() if len(v) >= MIN_ROWS}
            if not mine:
                continue
            figures = {a: _figure([v[i] for i in sorted(v)], seed) for a, v in mine.items()}
            reference = balanced(metric, {i: v for i, v in references.get(family, {}).items() if i in groups[label]},
                                 rows)  # fmt: skip
            baseline = _figure([reference[i] for i in ids if i in reference], seed) if reference else None
            judged = judge_family(family, mine, higher_is_better=higher, seed=seed,
                                  margin=(block.get("margin") or {}).get("value", margin),
                                  clusters_of=clusters_of, reference=reference or None, reference_kind=kind,
                                  baseline_value=baseline["value"] if baseline and kind == "chance" else None,
                                  baseline_reason="too few train rows to choose a guess",
                                  scores={a: f["value"] for a, f in figures.items()}, alpha=alpha)  # fmt: skip
            v = judged["verdict"]
            strata[label] = {"rows": len(ids), "arms": figures, "pairs": judged["pairs"],
                             "comparisons": judged["comparisons"] or list(judged["forgetting_vs_base"].values()),
                             "baseline": baseline, "baseline_comparisons": judged["baseline_comparisons"],
                             "verdict": {"best": v.best, "worse": v.worse, "non_inferior": v.non_inferior,
                                         "undecided": v.undecided, "recommended": v.recommended, "status": v.status,
                                         "reason": v.reason, "candidates": v.leading}}  # fmt: skip
        if strata:
            out[family] = {"field": field, "headline_metric": top, "higher_is_better": higher, "strata": strata,
                           "baseline_reference": kind}  # fmt: skip
    return out


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
