"""A learning curve's report: the summary lines, report.md, the charts and report.html."""

from __future__ import annotations

import json
from pathlib import Path

import jinja2
from ragft.eval.reporting.report import figure, png_data_uri
from ragft.eval.scoring.crossover import gap_text
from ragft.service import folders


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
                        seeds, p.get("against", "-"), gap_text(c) if c else "-",
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
