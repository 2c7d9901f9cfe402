"""Rendering a run's results as `results.json`, `report.md` and a self-contained `report.html`.

The HTML opens offline: charts are matplotlib PNGs inlined as data URIs, styles are inline,
and no script or font is fetched from anywhere. Jinja2 escapes every model output.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import jinja2
from ragft.eval.scoring.metrics import METRICS
from ragft.eval.scoring.results import build_results
from ragft.eval.scoring.strata import strata_lines
from ragft.eval.scoring.verdict import BREAK_EVEN, INSUFFICIENT, break_even_arm
from ragft.eval.store import Store
from ragft.service import folders
from ragft.service.kinds import KINDS
from ragft.service.settings import Settings

# the files `write_report` writes into a run's report folder, with their media types
REPORT_FILES = {"report.html": "text/html", "report.md": "text/markdown", "results.json": "application/json"}
RULE_MARK = {"agrees": "agrees", "contradicts": "CONTRADICTS", "inconclusive": "inconclusive", "n/a": "-"}


STRATA_NOTE = (
    "Each family again within every value of the row field eval.strata_field (eval/scoring/strata.py), judged as the family "
    "is: every pair of arms on the stratum's rows, Holm within the stratum, the margin tests, and the one-sided test "
    "against the family's chance baseline on the stratum's rows; only an arm shown within the margin of every other "
    "and above the baseline is recommended."
)


def _fmt(cell: dict | None) -> str:
    if not cell or cell.get("value") is None:
        return "-"
    return f"{cell['value']:.3f} [{cell['ci_low']:.3f}, {cell['ci_high']:.3f}]"


def _label(results: dict, arm: str) -> str:
    return results.get("arms", {}).get(arm, {}).get("label", arm)


def _labels(results: dict, arms) -> str:
    return ", ".join(_label(results, a) for a in arms) or "none"


def verdict_rows(results: dict) -> list[dict]:
    """One row per family: what the CLI prints and both reports show first."""
    rows = []
    for family, block in results["families"].items():
        v = block.get("verdict")
        if not v:
            continue
        power = block.get("power", {})
        rows.append({
            "family": family,
            "metric": block["headline_metric"],
            "best": _label(results, v["best"]),
            "score": _fmt(block["arms"][v["best"]][block["headline_metric"]]),
            "chance": _chance(block.get("chance_baseline")),
            "mdd": f"{_num(power.get('mdd'), 2)} (n={power.get('rows', '-')})",
            "worse": _labels(results, v.get("worse", [])),
            "non_inferior": _labels(results, v.get("non_inferior", [])),
            "undecided": _labels(results, v.get("undecided", v.get("tied_with", []))),
            "recommended": _label(results, v["recommended"]) if v.get("recommended") else v.get("status", INSUFFICIENT),
            "status": v.get("status", "decided"),
            "rule": RULE_MARK[v["rule"]],
            "reason": v["reason"] + _never_abstains(results, v.get("never_abstains", [])),
            "rule_statement": v["rule_statement"],
            "baseline": _baseline_line(results, block),
            "relative": v.get("relative", "-"),
            "above_chance": v.get("above_chance", "-"),
            "candidates": _labels(results, v.get("candidates", [])),
            "seeds": seed_warning(results, block),
        })  # fmt: skip
    return rows


def _chance(cell) -> str:
    """The chance baseline's cell: its score with interval, or 'n/a' when too few train rows made no guess (and
    the old schema's bare number as it was)."""
    if cell is None or isinstance(cell, int | float):
        return _num(cell, 2)
    return "n/a" if cell.get("value") is None else f"{cell['value']:.2f} [{cell['ci_low']:.2f}, {cell['ci_high']:.2f}]"


def _never_abstains(results: dict, arms: list[str]) -> str:
    if not arms:
        return ""
    return (f"; {_labels(results, arms)} never abstained on an unanswerable row (coverage 1.00), so "
            f"{'its' if len(arms) == 1 else 'their'} score is answerable rows alone, at most half the headline")  # fmt: skip


def _baseline_line(results: dict, block: dict) -> str:
    """What the family's chance baseline guessed and which arms beat it (paired, Holm-adjusted)."""
    cell = block.get("chance_baseline")
    if not isinstance(cell, dict):
        return ""
    if cell.get("value") is None:
        head = f"no chance baseline ({cell.get('reason')}); arms were tested against the metric's floor instead"
    else:
        head = f"chance baseline {_chance(cell)}: {cell.get('guess')}"
    tested = [c for c in block.get("baseline_comparisons", []) if c.get("tested", True)]
    above = [c["a"] for c in tested if c.get("beats")]
    sided = " (one-sided at 5%, Holm over the family's tests)" if (results.get("schema_version") or 0) >= 4 else ""
    return (f"{head}; of the arms a verdict could name ({_labels(results, [c['a'] for c in tested])}), "
            f"significantly above it{sided}: {_labels(results, above)}")  # fmt: skip


HOW_TO_READ_V3 = (
    "How to read this: each score has a 95% interval (Wilson for rates, clustered by source document where rows "
    "share one). The best arm is compared with every other arm on the same rows (exact McNemar for 0/1 scores, "
    "paired bootstrap otherwise); p-values are Holm-adjusted over all {tests} comparisons in this report. An arm is "
    "*worse* when that adjusted test says so, *non-inferior* when a one-sided test shows it within the margin of "
    "{margin:g} of the best, and *undecided* otherwise. The recommendation is the cheapest of the best and the "
    "non-inferior arms, unless a cheaper arm is undecided: then the verdict is *insufficient evidence*. (Written by "
    "results schema {schema}: re-render with `ragft report` for the current rules.)"
)

TESTS = {  # what each test a report can name is, for "How to read this"
    "mcnemar-exact": "exact McNemar (a binomial test on the rows where exactly one arm is right) for 0/1 scores on "
    "independent rows",
    "cluster-sign-flip": "the cluster sign-flip test where rows share a source document or a behaviour template "
    "(each cluster's summed difference keeps or flips its sign with probability 1/2; exact, and exact McNemar when "
    "no rows share one: 4 rows won and none lost is p = 0.125 however the rows are grouped)",
    "sign-flip": "for graded scores the same sign-flip test with every row its own cluster (a paired permutation "
    "test, exact where few rows differ)",
    "paired-bootstrap": "a paired bootstrap for graded scores",
    "seed-and": "with several training seeds, a bootstrap that resamples the adapters' seeds and the clusters "
    "together, so seed-to-seed variance reaches the p-value",
}

HOW_TO_READ = (
    "How to read this. Each score has a 95% interval: Wilson for rates (clustered where rows share a source document "
    "or a behaviour template), a bootstrap otherwise, resampling training seeds too where there are several. Every "
    "pair of arms is compared on the rows both answered, by the test named beside it: {tests}. Each interval "
    "inverts its test, so it excludes 0 exactly when the test rejects. Within each family the p-values are "
    "Holm-adjusted over that family's own pairwise tests ({counts}), so a family's verdict never depends on another "
    "family's rows. An arm is *worse* when that adjusted test shows it below the best; *non-inferior* when Tango's "
    "score test (for paired rates; a paired bootstrap for graded scores; divided by the square root of the design "
    "effect where rows cluster) shows it at most {margin} below the best, one-sided at 2.5% over the k - 1 "
    "comparisons with the best (Bonferroni, as Hsu's multiple comparisons with the best asks); *undecided* "
    "otherwise, which never means equal. **An arm is recommended only when it is shown within the margin of, or "
    "better than, every other arm** (the cheapest such arm; the *candidates*): a lead alone is never a decision, and "
    "swapping two arms' scores cannot change the status. A family has two answers: which arm is best relative to the "
    "others, and whether it is above *chance*, a constant guess chosen on the train rows alone and scored on the test "
    "rows like an arm: the arms a verdict could name are tested against it **one-sided at 5%** (Holm over the "
    "family's baseline tests), and only one above it is recommended, else the verdict is *no arm beats the "
    "baseline*. Where too few train rows made no guess, the metric's floor can stop a recommendation but never make "
    "one. General (forgetting) compares each arm whose weights changed with base, both ways, and recommends nothing. "
    "*MDD* is the smallest difference the family's rows detect with 80% power at the strictest Holm step of its "
    "tests (the sign-flip test's own power where rows cluster); the rows to settle are where the "
    "margin test reaches 80% power for two equally good arms at the level it is run at."
)


def _how_to_read(results: dict) -> str:
    families = results["families"].values()
    margin = next((b["verdict"]["margin"] for b in families if b.get("verdict")), 0.0)
    if (results.get("schema_version") or 0) < 4:
        tests = sum(len(b.get("comparisons", [])) + len(b.get("forgetting_vs_base", {})) for b in families)
        return HOW_TO_READ_V3.format(tests=tests, margin=margin, schema=results.get("schema_version", "?"))
    used = {p["test"] for b in families for p in b.get("pairs", [])}
    named = [text for key, text in TESTS.items() if any(t.startswith(key) for t in used)]
    counts = ", ".join(f"{f} {len(b.get('pairs', []))}" for f, b in results["families"].items() if b.get("pairs"))
    shared = {(b.get("margin") or {}).get("set_by", "flat") for b in families} <= {"flat"}
    said = (
        f"{margin:g}"
        if shared
        else "the family's margin (a share of the best arm's lead over chance; see each verdict)"
    )
    return HOW_TO_READ.format(tests="; ".join(named) or "none ran", counts=counts or "none", margin=said)


def seed_warning(results: dict, block: dict) -> str:
    """A line when the family's verdict rests on adapters trained once (eval.training_seeds = 1)."""
    once = [a for a in block.get("single_seed", []) if a in block.get("arms", {})]
    if not once:
        return ""
    return (f"rests on one training seed: {_labels(results, once)} trained once, so its tests treat the adapter as "
            "fixed; retraining with another seed moved the quillmark behaviour adapter between 0.20 and 0.30. "
            "Set eval.training_seeds=3 (three times the training) for tests that resample seeds")  # fmt: skip


def _figure_range(metric: str) -> tuple[float, float]:
    m = METRICS.get(metric)
    return getattr(m, "figure_range", (0.0, 1.0)) if m else (0.0, 1.0)


def headline_note(block: dict) -> str:
    """What a reader needs beside the family's headline (its scale, what it cannot show), from the metric."""
    m = METRICS.get(block.get("headline_metric", ""))
    return (getattr(m, "note", None) or "") if m else ""


def _comparison(results: dict, c: dict) -> str:
    text = (f"{_label(results, c['a'])} − {_label(results, c['b'])} = {_num(c['difference'], 3)} "
            f"[{_num(c['ci_low'], 3)}, {_num(c['ci_high'], 3)}], p={_num(c['p_value'], 3)}, "
            f"Holm p={_num(c.get('p_holm'), 3)} ({c['test']}, n={c['n']})")  # fmt: skip
    if c.get("non_inferiority_p_adjusted") is not None:
        text += f", {_label(results, c['b'])} within the margin: adjusted p={_num(c['non_inferiority_p_adjusted'], 3)}"
    elif c.get("non_inferiority_p_holm") is not None:
        text += f", non-inferiority p (Holm)={_num(c['non_inferiority_p_holm'], 3)}"
    return text


def _tests(n: int) -> str:
    return f"{n} test" if n == 1 else f"{n} tests"


def pair_line(results: dict, p: dict) -> str:
    """One pair of arms: the paired test, then each arm's margin test against the other (adjusted p)."""
    a, b = _label(results, p["a"]), _label(results, p["b"])
    shown = f"; {_label(results, p['worse'])} shown worse" if p.get("worse") else ""
    return (f"{a} − {b} = {_num(p['difference'], 3)} [{_num(p['ci_low'], 3)}, {_num(p['ci_high'], 3)}], "
            f"Holm p={_num(p.get('p_holm'), 3)} ({p['test']}, n={p['n']}){shown}; within the margin: {a} of {b} "
            f"p={_num(p.get('a_within_p_adjusted'), 3)}, {b} of {a} p={_num(p.get('b_within_p_adjusted'), 3)} "
            f"({p.get('non_inferiority_test', '-')})")  # fmt: skip


def training_lines(results: dict) -> list[str]:
    """One line per trained artifact: what it learnt (examples and epochs per family), what it cost, and a flag
    when any family got less than one epoch; the from-scratch model is labelled as the floor it is."""
    lines = []
    subset = ((results.get("config") or {}).get("settings") or {}).get("lora", {}).get("max_rows_per_family")
    if subset and results["data"].get("adapters"):
        lines.append(f"Adapters learnt from a subset: at most {subset} train rows per family (lora.max_rows_per_family; "
                     "rows that test paraphrases restate first). A decision wants every row: ragft eval.")  # fmt: skip
    for kind, meta in (results["data"].get("adapters") or {}).items():
        arms = [a for a, f in results.get("arms", {}).items() if f.get("adapter") == kind]
        for group, g in (meta.get("groups") or {"all": meta}).items():
            training = g.get("training") or {}
            epochs = ", ".join(f"{f} {v['examples']} examples x {v['epochs_reached']:.2f} epochs"
                               for f, v in training.get("families", {}).items())  # fmt: skip
            flag = (f" **UNDERTRAINED**: less than one epoch of a family; the configured epochs need "
                    f"{training.get('loss_tokens_for_configured_epochs', 0):,} loss tokens."
                    if training.get("undertrained") else "")  # fmt: skip
            floor = (f" From-scratch floor ({g.get('trainable_params', 0):,} parameters, {g.get('tokens_processed') or 0:,} "
                     "tokens): what the architecture learns without pre-training; not part of the folk rule."
                     if kind in KINDS and KINDS[kind].full_model else "")  # fmt: skip
            val = f", val loss {g['val_loss']:.3f}" if g.get("val_loss") is not None else ""
            lines.append(f"{kind} ({', '.join(_label(results, a) for a in arms) or '-'}), {group}: {epochs or 'n/a'}; "
                         f"{_num(g.get('wall_s'))} s{val}.{flag}{floor}")  # fmt: skip
    return lines


def review_line(review: dict) -> str:
    """What a reviewed report (`ragft.eval.reporting.review`) says first: how many answers reviewers overrode, and who."""
    by = ", ".join(f"{name} ({n})" for name, n in review["by"].items())
    return (f"Reviewed: {review['answers_overridden']} answer(s) on {review['rows_overridden']} row(s) overridden "
            f"({review['right']} marked right, {review['wrong']} wrong) by {by or 'nobody'}; the headline scores of "
            "those answers are the reviewers' marks, every other figure is measured. The measured report is "
            "unchanged.")  # fmt: skip


def reuse_line(results: dict) -> str | None:
    """How many answers came from the answer cache (`ragft.eval.running.prediction_cache`), or None when none did."""
    costs = [c for c in results.get("costs", {}).values() if c.get("measured")]
    reused, answers = sum(c.get("reused", 0) for c in costs), sum(c.get("answers", 0) for c in costs)
    if not reused:
        return None
    return (f"{reused} of {answers} answers were reused from the answer cache (made by an earlier run with the same "
            "weights, prompt and decoding; their costs are that run's, and this run's machine time leaves them out).")  # fmt: skip


def origin_line(results: dict) -> str | None:
    """The scored rows by where they came from, when any was not written by hand (imported or generated)."""
    origins = (results.get("data") or {}).get("rows_by_origin") or {}
    if set(origins) <= {"written"}:
        return None
    return "Rows by origin: " + ", ".join(f"{origin} {n}" for origin, n in origins.items()) + "."


def render_markdown(results: dict) -> str:
    lines = [f"# ragft report: {results['run_id']}", ""]
    if (results.get("data") or {}).get("unreviewed"):  # the first thing a reader sees: rows nobody checked
        lines += [f"**{results['data']['unreviewed']}**", ""]
    lines.append(f"Corpus `{results['corpus']}`, generator `{results['models']['generator']}`, "
                 f"status {results['status']}; judge: {'used' if results['judge']['used'] else 'none (judge-free metrics)'}.")  # fmt: skip
    if results.get("review"):
        lines += ["", f"**{review_line(results['review'])}**"]
    if reuse_line(results):
        lines += ["", reuse_line(results)]
    if origin_line(results):
        lines += ["", origin_line(results)]
    lines += ["", "## Verdict", "", "| family | headline | best | score [95% CI] | chance | MDD | worse | non-inferior "
              "| undecided | relative | above chance | recommended | folk rule |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in verdict_rows(results):
        lines.append(f"| {r['family']} | {r['metric']} | {r['best']} | {r['score']} | {r['chance']} | {r['mdd']} | "
                     f"{r['worse']} | {r['non_inferior']} | {r['undecided']} | {r['relative']} | {r['above_chance']} | "
                     f"**{r['recommended']}** | {r['rule']} |")  # fmt: skip
    for family, a in results["judge"].get("agreement", {}).items():
        lines += ["", f"Judge check ({family}): the string headline {a['headline']} and {a['judge_metric']} agree on "
                  f"{a['agreement']:.0%} of {a['pairs']} answers, Cohen's kappa {_num(a['cohens_kappa'], 2)}."]  # fmt: skip
    lines += ["", _how_to_read(results), ""]
    for r in verdict_rows(results):
        lines.append(f"- **{r['family']}**: {r['reason']}. {r['rule_statement']}"
                     + (f" ({r['baseline']}.)" if r["baseline"] else "")
                     + (f" **Warning**: the verdict {r['seeds']}." if r["seeds"] else ""))  # fmt: skip
    for family, block in results["families"].items():
        arms = list(block["arms"])
        metrics = [m for m in METRICS.values() if m.family == family and any(m.name in block["arms"][a] for a in arms)]
        lines += ["", f"## {family}", ""] + ([headline_note(block), ""] if headline_note(block) else [])
        lines += ["| arm | " + " | ".join(m.name for m in metrics) + " |", "|---|" + "---|" * len(metrics)]
        for arm in arms:
            lines.append(
                f"| {_label(results, arm)} | "
                + " | ".join(_fmt(block["arms"][arm].get(m.name)) for m in metrics)
                + " |"
            )
        if block.get("pairs") and not block.get("forgetting_vs_base"):
            lines += ["", f"Every pair of arms (Holm over this family's {_tests(len(block['pairs']))}): "
                      + "; ".join(pair_line(results, p) for p in block["pairs"]) + "."]  # fmt: skip
        elif block.get("comparisons"):
            lines += [
                "",
                "Paired tests against the best arm: "
                + "; ".join(_comparison(results, c) for c in block["comparisons"])
                + ".",
            ]
        if block.get("forgetting_vs_base"):
            lines += ["", "Forgetting (arm minus base on the general probes, base prompt, arms whose weights changed): "
                      + "; ".join(_comparison(results, c) for c in block["forgetting_vs_base"].values()) + "."]  # fmt: skip
    if strata_lines(results):
        lines += ["", "## By stratum", "", STRATA_NOTE, ""] + [f"- {line}" for line in strata_lines(results)]
    if training_lines(results):
        lines += ["", "## Training", ""] + [f"- {line}" for line in training_lines(results)]
    reference = break_even_arm(results["costs"])
    lines += ["", "## Cost", "", "| arm | training s | index s | refresh | p50 ms/answer | p95 ms/answer | prompt tokens "
              f"| generated tokens | $ per 1k queries | {_break_even_header(results, reference)} (queries) |",
              "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for arm, c in results["costs"].items():
        if not c.get("measured", True):
            lines.append(
                f"| {_label(results, arm)} | " + " | ".join(["not measured (scored from a file)"] + ["-"] * 8) + " |"
            )
            continue
        refresh = f"{c['refresh_by']} {c['refresh_s']:.1f}s" if c.get("refresh_s") is not None else c["refresh_by"]
        be = c.get(BREAK_EVEN + reference) if reference else None
        never = (
            results.get("arms", {}).get(arm, {}).get("adapter")
            and reference
            and BREAK_EVEN + reference in c
            and be is None
        )
        lines.append(
            f"| {_label(results, arm)} | {_num(c['training_wall_s'])} | {_num(c['index_build_s'])} | {refresh} | "
            f"{_num(c['latency_ms_p50'])} | {_num(c['latency_ms_p95'])} | {_num(c['prompt_tokens_mean'])} | "
            f"{_num(c['generated_tokens_mean'])} | {_num(c['cost_per_1k_queries_usd'], 4)} | "
            f"{'never' if never else _num(be)} |"
        )
    return "\n".join(lines) + "\n"


def _break_even_header(results: dict, reference: str | None) -> str:
    return f"break-even vs {_label(results, reference)}" if reference else "break-even"


def _num(x, digits: int = 1) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def png_data_uri(fig) -> str:
    """A figure (`figure`) as an inline PNG data URI (the reports open offline)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def figure(width: float, height: float):
    """A figure and its axes outside pyplot's global state (a `Figure` object, drawn by Agg), so reports and the
    results routes can draw in several threads at once."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    return fig, fig.subplots()


def charts(results: dict) -> dict[str, str]:
    """Headline-with-interval per family, cost versus quality, freshness and forgetting, as inline PNGs."""
    out = {}
    for family, block in results["families"].items():
        metric = block["headline_metric"]
        arms = [a for a in block["arms"] if metric in block["arms"][a]]
        if not arms:
            continue
        cells = [block["arms"][a][metric] for a in arms]
        fig, ax = figure(6, 2.8)
        values = [c["value"] for c in cells]
        errors = [[v - c["ci_low"] for v, c in zip(values, cells, strict=True)],
                  [c["ci_high"] - v for v, c in zip(values, cells, strict=True)]]  # fmt: skip
        recommended = (block.get("verdict") or {}).get("recommended")
        colours = ["#2b8a3e" if a == recommended else "#4c6ef5" for a in arms]
        ax.bar([_label(results, a) for a in arms], values, yerr=errors, capsize=4, color=colours)
        low, high = _figure_range(metric)
        ax.set_ylim(min(0.0, low - 0.05 * (high - low)), high + 0.05 * (high - low))
        if low < 0:
            ax.axhline(0, color="black", linewidth=0.8)
        ax.set_ylabel(metric)
        ax.set_title(f"{family}: {metric} (95% CI; green = recommended)", fontsize=9)
        out[family] = png_data_uri(fig)
    costs = results["costs"]
    points = [(a, costs[a]["latency_ms_p50"], b["arms"][a][b["headline_metric"]]["value"], f)
              for f, b in results["families"].items() for a in b["arms"]
              if a in costs and b["headline_metric"] in b["arms"][a] and costs[a].get("latency_ms_p50")]  # fmt: skip
    if points:
        fig, ax = figure(6, 3.2)
        for family in dict.fromkeys(p[3] for p in points):
            mine = [p for p in points if p[3] == family]
            ax.scatter([p[1] for p in mine], [p[2] for p in mine], label=family)
            for arm, x, y, _ in mine:
                ax.annotate(_label(results, arm), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("ms of compute per answer (p50, log scale)")
        ax.set_ylabel("headline score")
        ax.set_title("cost versus quality", fontsize=9)
        ax.legend(fontsize=7)
        out["cost_quality"] = png_data_uri(fig)
    # the blocks that carry the update panel's and the forgetting panel's figures, whatever their family is named
    fresh = next((b for b in results["families"].values() if any("new_answer_rate" in c for c in b["arms"].values())),
                 None)  # fmt: skip
    if fresh:
        arms = list(fresh["arms"])
        fig, ax = figure(6, 2.8)
        new = [fresh["arms"][a].get("new_answer_rate", {}).get("value") or 0 for a in arms]
        stale = [fresh["arms"][a].get("stale_answer_rate", {}).get("value") or 0 for a in arms]
        x = range(len(arms))
        ax.bar([i - 0.2 for i in x], new, width=0.4, label="new answer", color="#2b8a3e")
        ax.bar([i + 0.2 for i in x], stale, width=0.4, label="stale answer", color="#e03131")
        ax.set_xticks(list(x), [_label(results, a) for a in arms])
        ax.set_ylim(0, 1.05)
        ax.legend(fontsize=7)
        ax.set_title("freshness after the corpus update", fontsize=9)
        out["freshness_panel"] = png_data_uri(fig)
    general = next((b for b in results["families"].values() if b.get("forgetting_vs_base")), None)
    if general:
        items = general["forgetting_vs_base"]
        arms = list(items)
        fig, ax = figure(6, 2.8)
        diffs = [items[a]["difference"] for a in arms]
        errors = [[d - items[a]["ci_low"] for d, a in zip(diffs, arms, strict=True)],
                  [items[a]["ci_high"] - d for d, a in zip(diffs, arms, strict=True)]]  # fmt: skip
        ax.bar([_label(results, a) for a in arms], diffs, yerr=errors, capsize=4, color="#868e96")
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_ylabel("accuracy minus base")
        ax.set_title("forgetting: general probes versus base (95% CI)", fontsize=9)
        out["forgetting_panel"] = png_data_uri(fig)
    return out


TEMPLATE = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ragft report {{ r.run_id }}</title>
<style>
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#212529}
table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #dee2e6;padding:4px 8px;vertical-align:top}
th{background:#f1f3f5}.CONTRADICTS{color:#c92a2a;font-weight:bold}.agrees{color:#2b8a3e}
.small{font-size:12px;color:#495057}pre{white-space:pre-wrap;margin:0;font-size:12px}
</style></head><body>
<h1>ragft report: {{ r.run_id }}</h1>
<p class="small">Corpus <b>{{ r.corpus }}</b> &middot; generator {{ r.models.generator }} &middot; embedder {{ r.models.embedder }}
&middot; status {{ r.status }} &middot; judge: {{ "used" if r.judge.used else "none (judge-free metrics)" }}
&middot; rows per family: {% for f, n in r.data.rows.items() %}{{ f }} {{ n }}{% if not loop.last %}, {% endif %}{% endfor %}</p>
{% if (r.get("data") or {}).get("unreviewed") %}<p><b>{{ r.data.unreviewed }}</b></p>{% endif %}
{% if r.get("review") %}<p><b>{{ review_line(r.review) }}</b></p>{% endif %}
{% if reuse_line(r) %}<p>{{ reuse_line(r) }}</p>{% endif %}
{% if origin_line(r) %}<p>{{ origin_line(r) }}</p>{% endif %}
<h2>Verdict</h2>
<table><tr><th>family</th><th>headline</th><th>best</th><th>score [95% CI]</th><th>chance</th><th>MDD</th><th>worse</th><th>non-inferior</th><th>undecided</th><th>relative</th><th>above chance</th><th>recommended</th><th>folk rule</th></tr>
{% for v in verdicts %}<tr><td>{{ v.family }}</td><td>{{ v.metric }}</td><td>{{ v.best }}</td><td>{{ v.score }}</td><td>{{ v.chance }}</td><td>{{ v.mdd }}</td>
<td>{{ v.worse }}</td><td>{{ v.non_inferior }}</td><td>{{ v.undecided }}</td><td>{{ v.relative }}</td><td>{{ v.above_chance }}</td><td><b>{{ v.recommended }}</b></td><td class="{{ v.rule }}">{{ v.rule }}</td></tr>{% endfor %}</table>
<p class="small">{{ how_to_read }}</p>
{% for family, a in r.judge.get("agreement", {}).items() %}<p class="small">Judge check ({{ family }}): {{ a.headline }} and {{ a.judge_metric }} agree on {{ a.agreement }} of {{ a.pairs }} answers, Cohen's kappa {{ num(a.cohens_kappa, 2) }}.</p>{% endfor %}
<ul>{% for v in verdicts %}<li><b>{{ v.family }}</b>: {{ v.reason }}. {{ v.rule_statement }}{% if v.baseline %} ({{ v.baseline }}.){% endif %}{% if v.seeds %} <b>Warning</b>: the verdict {{ v.seeds }}.{% endif %}</li>{% endfor %}</ul>
{% for family, block in r.families.items() %}
<h2>{{ family }}</h2>
{% if note(block) %}<p class="small">{{ note(block) }}</p>{% endif %}
{% if family in charts %}<img alt="{{ family }} chart" src="{{ charts[family] }}">{% endif %}
<table><tr><th>arm</th>{% for m in metric_names[family] %}<th>{{ m }}</th>{% endfor %}</tr>
{% for arm, cells in block.arms.items() %}<tr><td>{{ labels[arm] }}</td>{% for m in metric_names[family] %}<td>{{ fmt(cells.get(m)) }}</td>{% endfor %}</tr>{% endfor %}
</table>
{% if block.get("pairs") and not block.get("forgetting_vs_base") %}<p class="small">Every pair of arms (Holm over this family's {{ block.pairs|length }} test{{ "s" if block.pairs|length != 1 else "" }}):
{% for p in block.pairs %}{{ pair(p) }}{% if not loop.last %}; {% endif %}{% endfor %}</p>
{% elif block.comparisons %}<p class="small">Paired tests against the best arm:
{% for c in block.comparisons %}{{ comparison(c) }}{% if not loop.last %}; {% endif %}{% endfor %}</p>{% endif %}
{% if block.get("forgetting_vs_base") %}<p class="small">Forgetting (arm minus base, general probes, base prompt):
{% for c in block.forgetting_vs_base.values() %}{{ comparison(c) }}{% if not loop.last %}; {% endif %}{% endfor %}</p>{% endif %}
{% endfor %}
{% if "freshness_panel" in charts %}<h2>Freshness panel</h2><img alt="freshness" src="{{ charts.freshness_panel }}">
<p class="small">Refresh: re-index {{ r.data.refresh.reindex_s if r.data.refresh else "-" }} s for {{ r.data.refresh.documents_changed if r.data.refresh else "-" }} changed documents; adapters would need retraining (see cost table).</p>{% endif %}
{% if "forgetting_panel" in charts %}<h2>Forgetting panel</h2><img alt="forgetting" src="{{ charts.forgetting_panel }}">{% endif %}
{% if strata %}<h2>By stratum</h2><p class="small">{{ strata_note }}</p><ul>{% for line in strata %}<li>{{ line }}</li>{% endfor %}</ul>{% endif %}
{% if training %}<h2>Training</h2><ul>{% for line in training %}<li>{{ line }}</li>{% endfor %}</ul>{% endif %}
<h2>Cost</h2>
{% if "cost_quality" in charts %}<img alt="cost versus quality" src="{{ charts.cost_quality }}">{% endif %}
<table><tr><th>arm</th><th>training s</th><th>training tokens</th><th>index s</th><th>refresh</th><th>p50 ms/answer</th><th>p95 ms/answer</th>
<th>prompt tokens</th><th>generated tokens</th><th>$ / 1k queries</th><th>{{ break_even_header }}</th></tr>
{% for arm, c in r.costs.items() %}{% if c.get("measured", True) %}<tr><td>{{ labels[arm] }}</td><td>{{ num(c.training_wall_s) }}</td><td>{{ num(c.training_tokens, 0) }}</td>
<td>{{ num(c.index_build_s) }}</td><td>{{ c.refresh_by }} {{ num(c.refresh_s) }}</td><td>{{ num(c.latency_ms_p50) }}</td><td>{{ num(c.latency_ms_p95) }}</td>
<td>{{ num(c.prompt_tokens_mean) }}</td><td>{{ num(c.generated_tokens_mean) }}</td><td>{{ num(c.cost_per_1k_queries_usd, 4) }}</td>
<td>{{ num(c.get(break_even_key), 0) }}</td></tr>{% else %}<tr><td>{{ labels[arm] }}</td><td colspan="10">not measured (scored from a predictions file)</td></tr>{% endif %}{% endfor %}</table>
<h2>Worst failures per arm</h2>
{% for arm, items in r.failures.items() %}<h3>{{ labels[arm] }}</h3>
<table><tr><th>row</th><th>input</th><th>expected</th><th>answer</th><th>retrieved passages</th></tr>
{% for f in items %}<tr><td>{{ f.row_id }}<br><span class="small">{{ f.family }}</span></td><td><pre>{{ f.input }}</pre></td><td><pre>{{ f.expected }}</pre></td>
<td><pre>{{ f.prediction }}</pre></td><td>{% for p in f.passages %}<b>{{ p.doc_id }}{% if p.get("page") %}, {{ p.page }}{% endif %}</b>: <span class="small">{{ p.text[:300] }}</span><br>{% endfor %}</td></tr>{% endfor %}
</table>{% endfor %}
<p class="small">Library versions: {% for k, v in r.versions.items() %}{{ k }} {{ v }}{% if not loop.last %}, {% endif %}{% endfor %}. Schema version {{ r.schema_version }}.</p>
</body></html>
""")


def render_html(results: dict) -> str:
    metric_names = {
        family: [
            m.name for m in METRICS.values() if m.family == family and any(m.name in c for c in block["arms"].values())
        ]
        for family, block in results["families"].items()
    }
    return TEMPLATE.render(
        r=results,
        verdicts=verdict_rows(results),
        charts=charts(results),
        metric_names=metric_names,
        labels={a: _label(results, a) for a in results.get("arms", {})}
        | {a: _label(results, a) for b in results["families"].values() for a in b["arms"]},
        how_to_read=_how_to_read(results),
        training=[line.replace("**", "") for line in training_lines(results)],
        strata=[line.replace("**", "") for line in strata_lines(results)],
        strata_note=STRATA_NOTE,
        comparison=lambda c: _comparison(results, c),
        pair=lambda p: pair_line(results, p),
        note=headline_note,
        review_line=review_line,
        reuse_line=reuse_line,
        origin_line=origin_line,
        fmt=_fmt,
        num=_num,
        break_even_header=_break_even_header(results, break_even_arm(results["costs"])),
        break_even_key=BREAK_EVEN + (break_even_arm(results["costs"]) or ""),
    )


def write_report(results: dict, reports_dir: Path) -> Path:
    """Write the three files under `<reports_dir>/<run-id>/` (each replaced atomically) and return the folder."""
    folder = Path(reports_dir) / results["run_id"]
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "results.json": json.dumps(results, indent=2, default=str),
        "report.md": render_markdown(results),
        "report.html": render_html(results),
    }
    for name, text in files.items():
        folders.replace_file(folder / name, text.encode("utf-8"))  # fsynced; a temp name per writer
    return folder


def compare_runs(a: dict, b: dict) -> str:
    """What changed between two runs: headline scores per family and arm, and verdicts."""
    lines = [f"{'family':11s} {'arm':10s} {a['run_id']:>24s} {b['run_id']:>24s}   change"]
    for family in dict.fromkeys([*a["families"], *b["families"]]):
        fa, fb = a["families"].get(family, {}), b["families"].get(family, {})
        metric = (fa or fb).get("headline_metric")
        for arm in dict.fromkeys([*fa.get("arms", {}), *fb.get("arms", {})]):
            va = fa.get("arms", {}).get(arm, {}).get(metric, {}).get("value")
            vb = fb.get("arms", {}).get(arm, {}).get(metric, {}).get("value")
            change = f"{vb - va:+.3f}" if va is not None and vb is not None else "n/a"
            lines.append(f"{family:11s} {arm:10s} {_num(va, 3):>24s} {_num(vb, 3):>24s}   {change}")
        ra, rb = (fa.get("verdict") or {}).get("recommended"), (fb.get("verdict") or {}).get("recommended")
        if ra != rb:
            lines.append(f"{family:11s} recommended arm changed: {ra} -> {rb}")
    return "\n".join(lines)


def publish_run(settings: Settings, run_id: str, embed=None) -> tuple[dict, Path]:
    """Score a stored run (with the local embedder unless `embed` is given) and write results.json, report.md and
    report.html; returns the results and the report folder."""
    if embed is None:
        from ragft.service import models

        embedder = models.load_embedder(settings.models)
        embed = lambda texts: embedder.encode(texts).tolist()  # noqa: E731
    store = Store(settings.database)
    try:
        results = build_results(store, run_id, settings, embed=embed)
    finally:
        store.close()
    return results, write_report(results, settings.eval.reports_dir)
