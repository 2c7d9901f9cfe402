"""From stored predictions to `results.json`: scores with intervals, paired tests, verdicts, costs.

Everything here is recomputed from the database, so `ragft report RUN_ID` re-renders a run
without generating anything. The schema is versioned; fields are only ever added within a
version (see README "results.json"):

    schema_version, run_id, corpus, status, config, models, data, versions, judge,
    families.<family>.headline_metric / higher_is_better / arms.<arm>.<metric> = {value, ci_low, ci_high, n}
    families.<family>.pairs[] (every pair of arms), .comparisons[] (the best against each other arm) and
    .verdict = {best, tied_with, recommended, status, reason, rule, rule_statement, candidates, relative, ...}
    costs.<arm> = {training_wall_s, ..., latency_ms_p50, latency_ms_p95, cost_per_1k_queries_usd, ...}
    failures.<arm>[] = {row_id, family, input, expected, prediction, passages}
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from ragft.eval.families import FAMILIES
from ragft.eval.scoring import stats
from ragft.eval.scoring.baseline import chance_baseline
from ragft.eval.scoring.metrics import METRICS, ScoringContext, balanced, family_metrics, headline, report_families
from ragft.eval.scoring.metrics.knowledge import answer_sentences, corpus_answers
from ragft.eval.scoring.strata import stratum_blocks
from ragft.eval.scoring.verdict import (
    BREAK_EVEN,
    TOKENS_SAVED,
    best_arm,
    break_even_queries,
    family_margin,
    judge_family,
    verdict_dict,
)
from ragft.eval.spec import RunSpec, register_external_arms, replicated_arm
from ragft.eval.store import Prediction, RunRecord, Store
from ragft.eval.tasks import TaskRow, load_tasks, reference_output, row_origin, unreviewed_note
from ragft.service.arms import ARMS, break_even_reference
from ragft.service.documents import load_documents
from ragft.service.models import library_versions
from ragft.service.settings import Settings, without_folders

SCHEMA_VERSION = 4  # 4: verdicts from every pair of arms (pairs[], candidates, relative, above_chance), p-values
# adjusted within each family, Tango non-inferiority, cluster sign-flip tests, one-sided baseline gate; 3: chance_baseline an object scored like an arm, baseline_comparisons, balanced abstention,
# cost per answer its share of the wall clock; 2: verdicts with worse / non_inferior / undecided and status


def _clean(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 4)


def scoring_context(
    settings: Settings, corpus: Path, rows: list[TaskRow], embed=None, judge=None, all_rows: list[TaskRow] = ()
) -> ScoringContext:
    """Answer-bearing sentences of each knowledge row's source documents, every answer the corpus holds (the
    rivals a reply may not list beside its answer), and the local embedder."""
    documents = {d.doc_id: d.text for d in load_documents(Path(corpus) / "documents")}
    gold = {}
    for row in rows:
        if FAMILIES[row.family].grounded and row.source_docs:
            sentences = [s for doc in row.source_docs for s in answer_sentences(documents.get(doc, ""), row.answers)]
            if sentences:
                gold[row.id] = sentences
    if judge is None and settings.eval.judge_base_url:
        from ragft.eval.scoring.metrics.judge import judge_llm

        key = settings.eval.judge_api_key
        judge = judge_llm(settings.eval.judge_base_url, settings.eval.judge_model, key and key.get_secret_value())
    return ScoringContext(settings.generation.abstention_phrase, embed=embed, gold_contexts=gold, judge=judge,
                          corpus_answers=corpus_answers(all_rows or rows))  # fmt: skip


def fold_replicates(values: dict) -> tuple[dict, dict]:
    """Answers of extra training seeds ("lora@seed1", eval.training_seeds) folded into their arm: each row's value
    becomes its mean over seeds, and the per-seed values are kept for intervals that resample seeds too."""
    by_arm: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for (stored, metric), per_row in sorted(values.items()):
        by_arm[(replicated_arm(stored), metric)].append(per_row)
    folded, replicates = {}, {}
    for key, runs in by_arm.items():
        if len(runs) == 1 or not all(isinstance(v, int | float) for v in runs[0].values()):
            folded[key] = runs[0]  # one seed, or pairs an aggregate reads (macro-F1): the first seed's
            continue
        common = sorted(set.intersection(*(set(r) for r in runs)))
        folded[key] = {row: float(np.mean([float(r[row]) for r in runs])) for row in common}
        replicates[key] = [[float(r[row]) for row in common] for r in runs]
    return folded, replicates


def balance_values(values: dict, replicates: dict, rows: dict[str, TaskRow]) -> dict:
    """Row values of metrics whose row groups weigh equally (abstention's answerable and unanswerable halves)
    reweighted (`ragft.eval.scoring.metrics.balanced`), their per-seed replicates alike (in place); other metrics as they are."""
    out = dict(values)
    for (arm, name), per_row in values.items():
        metric = METRICS[name]
        if metric.balance is None or not all(isinstance(v, int | float) for v in per_row.values()):
            continue
        weight = balanced(metric, dict.fromkeys(per_row, 1.0), rows)
        out[(arm, name)] = {i: float(v) * weight[i] for i, v in per_row.items()}
        if (arm, name) in replicates:
            ids = sorted(per_row)  # the order fold_replicates keeps the seeds' values in
            replicates[(arm, name)] = [[v * weight[i] for v, i in zip(r, ids, strict=True)]
                                       for r in replicates[(arm, name)]]  # fmt: skip
    return out


def score_predictions(
    predictions: list[Prediction], rows: dict[str, TaskRow], ctx: ScoringContext
) -> dict[tuple[str, str], dict[str, object]]:
    """Per (arm, metric): {row_id: value} for every row the metric applies to."""
    values: dict[tuple[str, str], dict[str, object]] = defaultdict(dict)
    for pred in predictions:
        row = rows.get(pred.row_id)
        arm = ARMS.get(replicated_arm(pred.arm))  # answers of extra training seeds count as their arm's
        if row is None or arm is None or not FAMILIES[row.family].scores(arm):
            continue  # e.g. forgetting probes answered by an arm whose weights never change
        for metric in METRICS.values():
            if row.family not in metric.reads or pred.phase != metric.phase:
                continue
            if metric.needs_contexts and not arm.retrieve:
                continue
            value = metric.score(row, pred, ctx)
            if value is not None:
                values[(pred.arm, metric.name)][row.id] = value
    return values


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def costs(run: RunRecord, predictions: list[Prediction], settings: Settings) -> dict[str, dict]:
    """Per arm: one-off training and index time, per-answer cost and tokens, and money per 1,000 queries.

    An answer's cost is its share of the machine (`Prediction.cost_ms`), not its batch's latency: batches that ran
    side by side each took longer than the machine time they used. Beside it, the arm's summed machine time and
    the wall clock the runner measured while it answered (`machine_over_wall` near 1: the costs add up)."""
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
        if not any(p.latency_ms or p.prompt_tokens for p in preds):  # scored from a file: nothing was timed here
            out[arm_name] = {"answers": len(preds), "measured": False}
            continue
        per_query_s = (sum(cost) / len(cost) / 1000) if cost else None
        out[arm_name] = {
            "measured": True,
            "training_wall_s": trained.get("wall_s"),
            "training_cpu_s": trained.get("cpu_s"),
            "training_tokens": trained.get("tokens_processed"),
            "adapter_bytes": trained.get("size_bytes"),
            "index_build_s": index.get("full_build_s") if arm.retrieve else None,
            "refresh_s": refresh.get("reindex_s") if arm.retrieve else trained.get("wall_s"),
            "refresh_by": "re-index" if arm.retrieve else ("retrain" if arm.adapter else "cannot learn updates"),
            "answers": len(preds),
            "reused": sum(p.reused for p in preds),  # from the answer cache: timed by the run that made them
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
    walls = meta.get("answer_wall_s", {})
    for arm_name, figures in out.items():
        if figures["measured"] and arm_name in walls:  # main and fresh answers: the wall clock covers both phases
            # reused answers were timed by the run that made them, not during this run's wall clock
            machine_s = sum(p.cost_ms for p in predictions if p.arm == arm_name and not p.reused) / 1000
            figures["machine_s"] = _clean(round(machine_s, 3))
            figures["answer_wall_s"] = walls[arm_name]
            figures["machine_over_wall"] = _clean(round(machine_s / walls[arm_name], 3)) if walls[arm_name] else None
    reference = break_even_reference([name for name, figures in out.items() if figures["measured"]])
    for arm_name, figures in out.items():
        if (
            ARMS[arm_name].adapter
            and reference
            and figures.get("training_wall_s")
            and figures["latency_ms_p50"] is not None
        ):
            mean_arm = np.mean([p.cost_ms for p in by_arm[arm_name]])
            mean_reference = np.mean([p.cost_ms for p in by_arm[reference]])
            figures[BREAK_EVEN + reference] = _clean(
                break_even_queries(figures["training_wall_s"], mean_reference, mean_arm)
            )
            saved = out[reference]["prompt_tokens_mean"] - figures["prompt_tokens_mean"]
            figures[TOKENS_SAVED + reference] = _clean(saved)
    return out


def document_clusters(rows: dict[str, TaskRow], row_ids: list[str]) -> list[str] | None:
    """The cluster of each row: its first source document (questions about one document are not independent), or
    for a row of a format family without documents the template it was written from
    (`ragft.eval.scoring.metrics.behaviour.template_cluster`: ten ticket templates are ten clusters, not forty rows). None when
    no two rows share one, so independent-row methods apply."""
    from ragft.eval.scoring.metrics.behaviour import template_cluster

    def key(i: str) -> str:
        row = rows.get(i)
        if row is None:
            return f"row:{i}"
        if row.source_docs:
            return row.source_docs[0]
        return f"template:{template_cluster(row.kind, row.text)}" if FAMILIES[row.family].formats else f"row:{i}"

    keys = [key(i) for i in row_ids]
    return keys if len(set(keys)) < len(keys) else None


def _cell(ci: stats.Interval) -> dict:
    return {"value": _clean(ci.value), "ci_low": _clean(ci.ci_low), "ci_high": _clean(ci.ci_high), "n": ci.n,
            "method": ci.method}  # fmt: skip


def _balanced_interval(metric, per_row: dict, ids: list[str], rows: dict[str, TaskRow], seed: int):
    """The interval of a metric whose row groups weigh equally (abstention's halves): the bootstrap recomputes the
    mean of the group means in every resample, so the interval stays on the metric's scale. Resampling the values
    `balance_values` reweighted gave intervals past the scale's ends (a never-abstaining arm's -0.978 on
    entityq: [-1.091, -0.875] on a score that cannot go below -1)."""
    group = [metric.balance(rows[i]) for i in ids]
    sizes = Counter(group)
    raw = [float(per_row[i]) * len(sizes) * sizes[g] / len(ids) for i, g in zip(ids, group, strict=True)]  # unweighted

    def mean_of_group_means(items: list[tuple[float, str]]) -> float:
        by_group: dict[str, list[float]] = defaultdict(list)
        for value, g in items:
            by_group[g].append(value)
        return float(np.mean([np.mean(v) for v in by_group.values()]))

    return stats.interval(list(zip(raw, group, strict=True)), seed, mean_of_group_means,
                          clusters=document_clusters(rows, ids))  # fmt: skip


def _family_block(family: str, values, arms: list[str], rows: dict[str, TaskRow], seed: int, margin: float,
                  replicates: dict, baseline, margin_share: float | None = None) -> tuple[dict, dict[str, float]]:  # fmt: skip
    """Every metric per arm with its interval, the chance baseline, and every test the verdict reads with the
    verdict (`ragft.eval.scoring.verdict.judge_family`: p-values adjusted within this family only). Returns the block and the
    baseline's (or the floor's) row values before balancing, for the strata."""
    top = headline(family)
    block: dict = {"label": FAMILIES[family].label, "headline_metric": top.name,
                   "higher_is_better": top.higher_is_better, "arms": {}}  # fmt: skip
    for arm in arms:
        figures = {}
        for metric in family_metrics(family):
            per_row = values.get((arm, metric.name))
            if not per_row:
                continue
            ids = sorted(per_row)
            if (arm, metric.name) in replicates and metric.aggregate is None:
                ci = stats.replicated_interval(replicates[(arm, metric.name)], seed)  # seed-to-seed variance too
            elif metric.balance is not None and metric.aggregate is None:
                ci = _balanced_interval(metric, per_row, ids, rows, seed)
            else:
                ci = stats.interval(
                    [per_row[k] for k in ids], seed, metric.aggregate, clusters=document_clusters(rows, ids)
                )
            figures[metric.name] = _cell(ci)
        if figures:
            block["arms"][arm] = figures
    scored = [a for a in arms if top.name in block["arms"].get(a, {})]
    if baseline.values:
        ids = sorted(baseline.values)
        ci = stats.interval([baseline.values[i] for i in ids], seed, clusters=document_clusters(rows, ids))
        block["chance_baseline"] = {**_cell(ci), "guess": baseline.guess, "reason": None}
        reference = baseline.values
    else:
        block["chance_baseline"] = {"value": None, "ci_low": None, "ci_high": None, "n": 0, "method": None,
                                    "guess": None, "reason": baseline.reason}  # fmt: skip
        floor = 0.0 if top.higher_is_better else 1.0  # every row failed: an arm at the floor is never recommended
        reference = {i: floor for a in scored for i in values.get((a, top.name), {})}
    block["baseline_reference"] = "chance" if baseline.values else "floor"
    per_arm = {a: values[(a, top.name)] for a in scored}
    heads = {a: block["arms"][a][top.name]["value"] for a in scored}
    lead = heads[best_arm(heads, top.higher_is_better)] if heads else None
    low, high = getattr(top, "figure_range", (0.0, 1.0))
    margin, how = family_margin(margin, margin_share, lead, block["chance_baseline"]["value"], top.higher_is_better,
                                scale=high - low)  # fmt: skip
    block["margin"] = {"value": margin, "set_by": how}
    judged = judge_family(
        family, per_arm, higher_is_better=top.higher_is_better, margin=margin, seed=seed,
        clusters_of=lambda ids: document_clusters(rows, ids),
        replicates={a: (sorted(per_arm[a]), replicates[(a, top.name)]) for a in scored if (a, top.name) in replicates},
        reference=reference, reference_kind=block["baseline_reference"],
        baseline_value=block["chance_baseline"]["value"], baseline_reason=baseline.reason,
        scores=heads)  # fmt: skip
    block["pairs"], block["comparisons"] = judged["pairs"], judged["comparisons"]
    block["baseline_comparisons"], block["power"] = judged["baseline_comparisons"], judged["power"]
    if judged["forgetting_vs_base"]:
        block["forgetting_vs_base"] = judged[
            "forgetting_vs_base"
        ]  # the schema's name, from when base was the only reference
    block["single_seed"] = judged["single_seed"]
    v = judged["verdict"]
    block["verdict"] = None if v is None else verdict_dict(v) | {
        "never_abstains": [a for a, f in block["arms"].items()
                           if (f.get("coverage_unanswerable") or {}).get("value") == 1.0]}  # fmt: skip
    return block, (baseline.raw if baseline.values else reference)


def judge_agreement(values, threshold: float = 0.5) -> dict[str, dict]:
    """Per family: Cohen's kappa between the string headline and the judge on the same (arm, row) pairs, the
    judge's score read as correct at `threshold`. Low agreement means one of the two scores the wrong thing."""
    from ragft.eval.scoring.metrics.judge import AGREES_WITH_HEADLINE
    from statsmodels.stats.inter_rater import cohens_kappa

    out = {}
    for family, judged in AGREES_WITH_HEADLINE.items():
        top = headline(family).name
        pairs = [(float(v) >= 0.5, float(values[(arm, judged)][row]) >= threshold)
                 for (arm, name), rows in values.items() if name == top for row, v in rows.items()
                 if row in values.get((arm, judged), {})]  # fmt: skip
        if len(pairs) < 2:
            continue
        table = np.zeros((2, 2))
        for string_says, judge_says in pairs:
            table[int(string_says), int(judge_says)] += 1
        agree = float(np.trace(table) / table.sum())
        kappa = float(cohens_kappa(table).kappa) if table.sum(axis=0).all() and table.sum(axis=1).all() else None
        out[family] = {"headline": top, "judge_metric": judged, "pairs": len(pairs), "agreement": _clean(agree),
                       "cohens_kappa": _clean(kappa)}  # fmt: skip
    return out


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
                "passages": [
                    {"doc_id": p.doc_id, "text": p.text, **({"page": p.page} if p.page else {})} for p in pred.passages
                ],
            }
        )
    return {
        arm: sorted(items, key=lambda i: (i["score"], i["family"], i["row_id"]))[:limit] for arm, items in out.items()
    }


def build_results(store: Store, run_id: str, settings: Settings, embed=None, judge=None, adjust=None) -> dict:
    """Every figure of a run, recomputed from the database; `adjust(values, rows)` may change the measured row
    values before anything is computed from them (reviewers' marks: `ragft.eval.reporting.review`)."""
    run = store.run(run_id)
    register_external_arms(run.config)
    spec = RunSpec.model_validate(run.config["spec"])
    corpus = Path(spec.corpus)
    all_rows = load_tasks(corpus, spec.include_unreviewed)
    wanted = {i for ids in run.meta.get("rows", {}).values() for i in ids}
    rows = {r.id: r for r in all_rows if r.id in wanted}
    predictions = store.predictions(run_id)
    ctx = scoring_context(settings, corpus, list(rows.values()), embed, judge, all_rows)
    measured = score_predictions(predictions, rows, ctx)
    raw, replicates = fold_replicates(adjust(measured, rows) if adjust else measured)
    values = balance_values(raw, replicates, rows)
    train = [r for r in all_rows if r.split == "train"]
    arms = [a for a in ARMS if a in spec.arms]
    seed = spec.seed
    margin = settings.eval.non_inferiority_margin
    families, references = {}, {}
    for family in [f for f in report_families() if f in spec.families]:
        baseline = chance_baseline(family, list(rows.values()), train, ctx)
        families[family], references[family] = _family_block(family, values, arms, rows, seed, margin, replicates,
                                                             baseline, settings.eval.non_inferiority_margin_share)  # fmt: skip
    judged = any(METRICS[name].judge for _, name in values)
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": run.id,
        "corpus": run.corpus,
        "created_at": run.created_at,
        "status": run.status,
        "config": without_folders(run.config),  # no server folder in a file readers download
        "models": without_folders(
            {
                "generator": settings.models.generator,
                "embedder": settings.models.embedder,
                "engine": run.meta.get("engine"),
            }
        ),  # which engine and compute type answered  # fmt: skip
        "data": without_folders(
            {
                "tasks_hash": run.meta.get("tasks_hash"),
                "rows": {f: len(ids) for f, ids in run.meta.get("rows", {}).items()},
                "index": run.meta.get("index"),
                "refresh": run.meta.get("refresh"),
                "adapters": run.meta.get("adapters"),
                # where the scored rows came from: written, imported (corpus init), generated and accepted/edited/pending
                "rows_by_origin": dict(sorted(Counter(row_origin(r) for r in rows.values()).items())),
                "unreviewed": unreviewed_note(list(rows.values())),
            }
        ),  # fmt: skip
        "versions": library_versions(),
        "judge": {
            "used": judged,
            "endpoint": settings.eval.judge_base_url if ctx.judge is not None and judge is None else None,
            "model": settings.eval.judge_model if judged else None,
            "agreement": judge_agreement(values) if judged else {},
        },
        "arms": {
            a: {
                "label": ARMS[a].label,
                "retrieve": ARMS[a].retrieve,
                "fewshot": ARMS[a].fewshot,
                "adapter": ARMS[a].adapter,
                "cost_rank": ARMS[a].cost_rank,
                "summary": ARMS[a].summary,
            }
            for a in arms
        },  # fmt: skip
        "families": families,
        "costs": costs(run, predictions, settings),
        "failures": failures(raw, predictions, rows, settings),
        "strata": stratum_blocks(
            families,
            raw,
            rows,
            settings.eval.strata_field,
            seed,
            margin,
            references,
            clusters_of=lambda ids: document_clusters(rows, ids),
        )
        if settings.eval.strata_field
        else {},
    }
