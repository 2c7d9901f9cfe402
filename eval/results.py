"""From stored predictions to `results.json`: scores with intervals, paired tests, verdicts, costs.

Everything here is recomputed from the database, so `ragft report RUN_ID` re-renders a run
without generating anything. The schema is versioned; fields are only ever added within a
version (see README "results.json"):

    schema_version, run_id, corpus, status, config, models, data, versions, judge,
    families.<family>.headline_metric / higher_is_better / arms.<arm>.<metric> = {value, ci_low, ci_high, n}
    families.<family>.comparisons[] and .verdict = {best, tied_with, recommended, reason, rule, rule_statement}
    costs.<arm> = {training_wall_s, ..., latency_ms_p50, latency_ms_p95, cost_per_1k_queries_usd, ...}
    failures.<arm>[] = {row_id, family, input, expected, prediction, passages}
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from eval import stats
from eval.metrics import METRICS, ScoringContext, family_metrics, headline, report_families
from eval.metrics.knowledge import answer_sentences
from eval.store import Prediction, RunRecord, Store
from eval.tasks import TaskRow, load_tasks, reference_output
from eval.verdict import break_even_queries, decide
from service.arms import ARMS, by_cost
from service.documents import load_documents
from service.models import library_versions
from service.settings import Settings

SCHEMA_VERSION = 1


def _clean(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 4)


def scoring_context(settings: Settings, corpus: Path, rows: list[TaskRow], embed=None, judge=None) -> ScoringContext:
    """Answer-bearing sentences of each knowledge row's source documents, and the local embedder."""
    documents = {d.doc_id: d.text for d in load_documents(Path(corpus) / "documents")}
    gold = {}
    for row in rows:
        if row.family == "knowledge" and row.source_docs:
            sentences = [s for doc in row.source_docs for s in answer_sentences(documents.get(doc, ""), row.answers)]
            if sentences:
                gold[row.id] = sentences
    if judge is None and settings.eval.judge_base_url:
        from eval.metrics.judge import judge_llm

        key = settings.eval.judge_api_key
        judge = judge_llm(settings.eval.judge_base_url, settings.eval.judge_model, key and key.get_secret_value())
    return ScoringContext(settings.generation.abstention_phrase, embed=embed, gold_contexts=gold, judge=judge)


def score_predictions(
    predictions: list[Prediction], rows: dict[str, TaskRow], ctx: ScoringContext
) -> dict[tuple[str, str], dict[str, object]]:
    """Per (arm, metric): {row_id: value} for every row the metric applies to."""
    values: dict[tuple[str, str], dict[str, object]] = defaultdict(dict)
    for pred in predictions:
        row = rows.get(pred.row_id)
        if row is None:
            continue
        for metric in METRICS.values():
            if row.family not in metric.reads or pred.phase != metric.phase:
                continue
            if metric.needs_contexts and not ARMS[pred.arm].retrieve:
                continue
            value = metric.score(row, pred, ctx)
            if value is not None:
                values[(pred.arm, metric.name)][row.id] = value
    return values


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def costs(run: RunRecord, predictions: list[Prediction], settings: Settings) -> dict[str, dict]:
    """Per arm: one-off training and index time, per-answer latency and tokens, and money per 1,000 queries."""
    meta = run.meta
    adapters = meta.get("adapters", {})
    index = meta.get("index", {})
    refresh = meta.get("refresh", {})
    by_arm: dict[str, list[Prediction]] = defaultdict(list)
    for p in predictions:
        if p.phase == "main":
            by_arm[p.arm].append(p)
    out = {}
    for arm_name in [a for a in ARMS if a in by_arm]:
        arm = ARMS[arm_name]
        preds = by_arm[arm_name]
        cost = [p.cost_ms for p in preds]
        trained = adapters.get(arm.adapter or "", {})
        per_query_s = (sum(cost) / len(cost) / 1000) if cost else None
        out[arm_name] = {
            "training_wall_s": trained.get("wall_s"),
            "training_cpu_s": trained.get("cpu_s"),
            "training_tokens": trained.get("tokens_processed"),
            "adapter_bytes": trained.get("size_bytes"),
            "index_build_s": index.get("full_build_s") if arm.retrieve else None,
            "refresh_s": refresh.get("reindex_s") if arm.retrieve else trained.get("wall_s"),
            "refresh_by": "re-index" if arm.retrieve else ("retrain" if arm.adapter else "cannot learn updates"),
            "answers": len(preds),
            "latency_ms_p50": _clean(_percentile(cost, 50)),
            "latency_ms_p95": _clean(_percentile(cost, 95)),
            "batch_latency_ms_p50": _clean(_percentile([p.latency_ms for p in preds], 50)),
            "retrieval_ms_mean": _clean(np.mean([p.retrieval_ms for p in preds])) if arm.retrieve else None,
            "prompt_tokens_mean": _clean(np.mean([p.prompt_tokens for p in preds])),
            "generated_tokens_mean": _clean(np.mean([p.generated_tokens for p in preds])),
            "cost_per_1k_queries_usd": _clean(per_query_s * 1000 / 3600 * settings.eval.price_per_hour)
            if per_query_s is not None
            else None,
        }
    rag = out.get("rag")
    for arm_name, figures in out.items():
        if ARMS[arm_name].adapter and rag and figures["training_wall_s"] and figures["latency_ms_p50"] is not None:
            mean_arm = np.mean([p.cost_ms for p in by_arm[arm_name]])
            mean_rag = np.mean([p.cost_ms for p in by_arm["rag"]])
            figures["break_even_queries_vs_rag"] = _clean(
                break_even_queries(figures["training_wall_s"], mean_rag, mean_arm)
            )
            figures["prompt_tokens_saved_vs_rag"] = _clean(rag["prompt_tokens_mean"] - figures["prompt_tokens_mean"])
    return out


def _family_block(family: str, values, arms: list[str], seed: int) -> dict:
    top = headline(family)
    block: dict = {"headline_metric": top.name, "higher_is_better": top.higher_is_better, "arms": {}}
    for arm in arms:
        figures = {}
        for metric in family_metrics(family):
            per_row = values.get((arm, metric.name))
            if not per_row:
                continue
            ordered = [per_row[k] for k in sorted(per_row)]
            ci = stats.interval(ordered, seed, metric.aggregate)
            figures[metric.name] = {"value": _clean(ci.value), "ci_low": _clean(ci.ci_low),
                                    "ci_high": _clean(ci.ci_high), "n": ci.n}  # fmt: skip
        if figures:
            block["arms"][arm] = figures
    scored = [a for a in arms if top.name in block["arms"].get(a, {})]
    if not scored:
        block["verdict"] = None
        block["comparisons"] = []
        return block
    means = {a: block["arms"][a][top.name]["value"] for a in scored}
    sign = 1 if top.higher_is_better else -1
    cheap_first = by_cost(scored)
    best = max(scored, key=lambda a: (sign * means[a], -cheap_first.index(a)))
    comparisons, worse = [], {}
    for arm in scored:
        if arm == best:
            continue
        c = _paired(values, top.name, best, arm, seed)
        comparisons.append(c)
        worse[(best, arm)] = c["significant"] and sign * c["difference"] > 0
    verdict = decide(family, means, worse, top.higher_is_better)
    block["comparisons"] = comparisons
    block["verdict"] = {"best": verdict.best, "tied_with": verdict.tied_with, "recommended": verdict.recommended,
                        "reason": verdict.reason, "rule": verdict.rule, "rule_statement": verdict.rule_statement}  # fmt: skip
    return block


def _paired(values, metric: str, a: str, b: str, seed: int) -> dict:
    va, vb = values.get((a, metric), {}), values.get((b, metric), {})
    common = sorted(set(va) & set(vb))
    c = stats.compare(a, b, [va[k] for k in common], [vb[k] for k in common], seed)
    return {"a": a, "b": b, "n": c.n, "difference": _clean(c.difference), "ci_low": _clean(c.ci_low),
            "ci_high": _clean(c.ci_high), "p_value": _clean(c.p_value), "test": c.test,
            "significant": c.significant}  # fmt: skip


def failures(values, predictions: list[Prediction], rows: dict[str, TaskRow], settings: Settings) -> dict:
    """The worst answers per arm on each family's headline metric, with what the arm retrieved."""
    limit = settings.eval.failures_per_arm
    families = set(report_families())
    out: dict[str, list] = {}
    for pred in sorted(predictions, key=lambda p: (p.arm, p.row_id)):
        row = rows.get(pred.row_id)
        if row is None or row.family not in families:
            continue
        top = headline(row.family)
        if pred.phase != top.phase:
            continue
        score = values.get((pred.arm, top.name), {}).get(row.id)
        if score is None or score >= 1.0:
            continue
        out.setdefault(pred.arm, []).append(
            {
                "row_id": row.id,
                "family": row.family,
                "score": _clean(score),
                "input": row.text,
                "expected": reference_output(row, settings.generation.abstention_phrase),
                "prediction": pred.text,
                "passages": [{"doc_id": p.doc_id, "text": p.text} for p in pred.passages],
            }
        )
    return {
        arm: sorted(items, key=lambda i: (i["score"], i["family"], i["row_id"]))[:limit] for arm, items in out.items()
    }


def build_results(store: Store, run_id: str, settings: Settings, embed=None, judge=None) -> dict:
    """Every figure of a run, recomputed from the database."""
    from eval.runner import RunSpec

    run = store.run(run_id)
    spec = RunSpec.model_validate(run.config["spec"])
    corpus = Path(spec.corpus)
    all_rows = load_tasks(corpus)
    wanted = {i for ids in run.meta.get("rows", {}).values() for i in ids}
    rows = {r.id: r for r in all_rows if r.id in wanted}
    predictions = store.predictions(run_id)
    ctx = scoring_context(settings, corpus, list(rows.values()), embed, judge)
    values = score_predictions(predictions, rows, ctx)
    arms = [a for a in ARMS if a in spec.arms]
    seed = spec.seed
    families = {}
    for family in [f for f in report_families() if f in spec.families]:
        families[family] = _family_block(family, values, arms, seed)
    if "general" in families and "base" in arms:
        # forgetting: only arms whose weights changed answer the probes (eval/families.py), with the base prompt
        families["general"]["forgetting_vs_base"] = {
            arm: _paired(values, "general_accuracy", arm, "base", seed)
            for arm in arms
            if arm != "base" and (arm, "general_accuracy") in values
        }
    judged = any(name.startswith("judge_") for _, name in values)
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": run.id,
        "corpus": run.corpus,
        "created_at": run.created_at,
        "status": run.status,
        "config": run.config,
        "models": {"generator": settings.models.generator, "embedder": settings.models.embedder},
        "data": {
            "tasks_hash": run.meta.get("tasks_hash"),
            "rows": {f: len(ids) for f, ids in run.meta.get("rows", {}).items()},
            "index": run.meta.get("index"),
            "refresh": run.meta.get("refresh"),
            "adapters": run.meta.get("adapters"),
        },  # fmt: skip
        "versions": library_versions(),
        "judge": {
            "used": judged,
            "endpoint": settings.eval.judge_base_url if ctx.judge is not None and judge is None else None,
            "model": settings.eval.judge_model if judged else None,
        },
        "families": families,
        "costs": costs(run, predictions, settings),
        "failures": failures(values, predictions, rows, settings),
    }


def publish(settings: Settings, run_id: str, embed=None) -> tuple[dict, Path]:
    """Score a stored run and write its three report files; returns the results and the report folder."""
    from eval.report import write_report

    store = Store(settings.database)
    try:
        results = build_results(store, run_id, settings, embed=embed)
    finally:
        store.close()
    return results, write_report(results, settings.eval.reports_dir)
