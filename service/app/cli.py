"""The `ragft` command line: index a corpus, ask the arms a question, serve HTTP, validate corpora.

Settings come from the environment (`RAGFT_*`) and can be overridden per call with
`--set group.field=value` (e.g. `--set retrieval.top_k=8`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import textwrap
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError
from ragft.service import spin_before_sleep
from ragft.service.conversion import configure_from as configure_conversions
from ragft.service.settings import Settings, get_settings, make_storage_private, with_overrides

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Compare RAG, LoRA, both, or neither on your data.")
corpus_app = typer.Typer(no_args_is_help=True, help="Corpus and task-suite tools.")
app.add_typer(corpus_app, name="corpus")
backend_app = typer.Typer(no_args_is_help=True, help="An OpenAI-compatible generator backend (vLLM) for GPU hosts.")
app.add_typer(backend_app, name="backend")

SetOption = Annotated[
    list[str] | None, typer.Option("--set", help="Override a setting: group.field=value, e.g. retrieval.top_k=8.")
]


def build_settings(overrides: list[str] | None) -> Settings:
    """Environment settings with `group.field=value` overrides applied and validated; from here on the process
    writes private files (0600) and folders (0700)."""
    settings = _settings_with(overrides)
    make_storage_private(settings)
    configure_conversions(settings)
    spin_before_sleep(settings.models.omp_spin_count)  # before any command loads torch
    return settings


def corpus_for(settings: Settings, given: Path | None) -> Path:
    """The corpus a command works on: the one given; else the corpus setting when it was set or has an index;
    else the only corpus indexed here (after `ragft index mydocs`, `ragft query` uses mydocs); else an error
    naming the indexes and the flag to pick one."""
    from ragft.service.retrieval import stored_indexes

    if given is not None:
        return given
    default = Path(settings.corpus)
    indexes = stored_indexes(settings.data_dir / "indexes")
    if "corpus" in settings.model_fields_set or default.resolve().name in indexes or not indexes:
        return default
    if len(indexes) == 1:
        ((name, manifest),) = indexes.items()
        if manifest.source and Path(manifest.source).is_dir():
            return Path(manifest.source)
    found = ", ".join(f"{n} ({m.source or 'source unknown'})" for n, m in indexes.items())
    raise ValueError(f"which corpus? indexes here: {found}; pick one with --corpus PATH (or set RAGFT_CORPUS)")


def _settings_with(overrides: list[str] | None) -> Settings:
    base = get_settings()
    if not overrides:
        return base
    try:
        return with_overrides(base, overrides)
    except ValueError as exc:  # a bad key, JSON or value (pydantic's ValidationError too): a usage error
        raise typer.BadParameter(str(exc), param_hint="--set") from exc


def field_errors(exc: ValidationError) -> str:
    """A pydantic error as one line, `field: problem` per field, without pydantic's URLs."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'input'}: {e['msg'].removeprefix('Value error, ')}"
                     for e in exc.errors())  # fmt: skip


def fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


@contextmanager
def reported_errors():
    """What a command raises for bad input or a missing model (ValueError, RuntimeError, KeyError) printed as one
    `error:` line with exit code 2, instead of a traceback."""
    try:
        yield
    except typer.Exit:
        raise
    except ValidationError as exc:  # a ValueError too: one line per field, without pydantic's URLs
        fail(field_errors(exc))
    except (ValueError, RuntimeError, KeyError) as exc:
        fail(str(exc))


def corpus_folder(path: Path, *, tasks: bool) -> Path:
    """`path` when it is a corpus folder (with tasks/ when the command reads task rows); checked before any model
    or heavy library loads, so a typo is answered at once."""
    if not path.is_dir():
        raise ValueError(f"corpus folder '{path}' does not exist; give a folder with documents/ and tasks/")
    if tasks and not (path / "tasks").is_dir():
        raise ValueError(f"corpus '{path}' has no tasks/ folder: add tasks/*.jsonl (see corpora/README.md)")
    return path


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress.")] = False) -> None:
    from ragft.service.logs import configure_logging

    configure_logging("text", logging.INFO if verbose else logging.WARNING)


@app.command()
def index(
    corpus: Annotated[Path, typer.Argument(help="Corpus folder (with documents/) or a folder of documents.")],
    set_: SetOption = None,
) -> None:
    """Build or update the retrieval index of a corpus, embedding only what changed."""
    from ragft.service.runtime import Runtime

    settings = build_settings(set_)
    with reported_errors():
        report = Runtime(settings, corpus).index()
    typer.echo(report.summary())
    typer.echo(f"index: {settings.index_dir(corpus)}")


@app.command()
def query(
    question: Annotated[str, typer.Argument(help="The question to ask every arm.")],
    arms: Annotated[
        str | None,
        typer.Option(help="Comma-separated arms, e.g. base,rag,rag+lora (default: the arms asked by default)."),
    ] = None,
    corpus: Annotated[
        Path | None,
        typer.Option(
            help="Corpus whose index and adapters to use (default: the corpus setting, else the only one indexed)."
        ),  # fmt: skip
    ] = None,
    top_k: Annotated[int | None, typer.Option(help="Passages for retrieving arms.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    set_: SetOption = None,
) -> None:
    """Ask one question to several arms side by side."""
    from ragft.eval.running.pipeline import open_runtime
    from ragft.service.arms import asked_by_default, compare, parse_arms

    settings = build_settings(set_)
    with reported_errors():
        chosen = parse_arms(arms or asked_by_default())
        answers = compare(open_runtime(settings, corpus_for(settings, corpus)), question, chosen, top_k)
    if as_json:
        typer.echo(json.dumps([dataclasses.asdict(a) for a in answers], indent=2))
        return
    for a in answers:
        typer.secho(f"== {a.arm} ({a.latency_ms:.0f} ms, {a.prompt_tokens} prompt tokens)", bold=True)
        typer.echo(textwrap.fill(a.text, 100) or "(empty answer)")
        for p in a.passages:
            snippet = " ".join(p.text.split())[:110]
            typer.echo(f"   [{p.score:.3f}] {p.doc_id}: {snippet}")


@app.command()
def train(
    corpus: Annotated[Path, typer.Option(help="Corpus whose train split to learn from.")],
    arm: Annotated[
        list[str] | None,
        typer.Option(
            help="An arm with something to train (e.g. lora, rag+lora, scratch); repeat "
            "for several (default: every such arm)."
        ),  # fmt: skip
    ] = None,
    force: Annotated[bool, typer.Option(help="Train again even if an identical artifact is stored.")] = False,
    set_: SetOption = None,
) -> None:
    """Train the adapters (and the scratch model) an arm needs, reusing identical stored ones."""
    from ragft.service.arms import parse_trainable, trainable

    settings = build_settings(set_)
    with reported_errors():
        chosen = list(dict.fromkeys(parse_trainable(name).name for name in arm or trainable()))
        corpus_folder(corpus, tasks=True)
        from ragft.eval.running import pipeline
        from ragft.service.finetune import describe

        runtime = pipeline.open_runtime(settings, corpus)
        kinds = pipeline.kinds_for(chosen)
        for results in pipeline.train_artifacts(settings, runtime, kinds, force=force, show_bars=True).values():
            for result in results:
                typer.echo(describe(result))


@app.command()
def serve(
    host: Annotated[
        str, typer.Option(help="Interface to bind; anything but loopback needs API keys (RAGFT_API__API_KEYS).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    corpus: Annotated[
        Path | None, typer.Option(help="Corpus to serve (default: the corpus setting, else the only one indexed).")
    ] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Serve a non-loopback --host without API keys (logged as a warning).")
    ] = False,
    set_: SetOption = None,
) -> None:
    """Serve the HTTP API: queries, OpenAI-compatible chat, eval runs, corpus updates (see /docs)."""
    import uvicorn
    from ragft.service.app.api.main import check_binding, create_app
    from ragft.service.logs import configure_logging

    settings = build_settings(set_)
    configure_logging(settings.api.log_format, settings.api.log_level)
    with reported_errors():
        warning = check_binding(host, settings, insecure)
        corpus = corpus_for(settings, corpus)
    if warning:
        logging.getLogger("ragft").warning(warning)
    # log_config=None keeps the handler above for uvicorn's own loggers; the app logs one access line per request
    uvicorn.run(create_app(settings, corpus), host=host, port=port, log_config=None, access_log=False)


def _progress_printer(settings: Settings | None = None, spec=None):
    """Progress lines on stderr: one per stage change, and every batch of answers with a rate and time left. Given
    the run's settings and spec, and told its id (`report.named`), the time left weighs each arm's remaining answers
    by that arm's measured cost per answer (`answering_eta_s`), not one rate over all answers so far. `report.family`
    prints a family's figures on stdout as soon as it is answered (`ragft.eval.running.early_results`), on the same clock."""
    import time

    state = {"stage": None, "start": time.perf_counter(), "t0": time.perf_counter(), "first": 0, "run_id": None}

    def left_s(done: int, total: int, now: float) -> float | None:
        if settings is not None and spec is not None and state["run_id"]:
            from ragft.eval.running.progress import answering_eta_s
            from ragft.eval.store import Store

            store = Store(settings.database)
            try:
                return answering_eta_s(store, state["run_id"], spec.arms, settings.eval.training_seeds)
            finally:
                store.close()
        rate = (done - state["first"]) / (now - state["t0"]) if now > state["t0"] else 0
        return (total - done) / rate if rate else None

    def report(stage: str, done: int, total: int) -> None:
        now = time.perf_counter()
        key = stage.split(" ")[0]
        if key != state["stage"]:
            state.update(stage=key, t0=now, first=done)
        left = left_s(done, total, now) if key == "answer" else None
        eta = f", ~{left / 60:.1f} min left" if left is not None else ""
        typer.echo(f"[{now - state['start']:6.0f}s] {stage}: {done}/{total}{eta}", err=True)

    def family(event) -> None:
        from ragft.eval.running.early_results import shown_figures

        clock = f"[{time.perf_counter() - state['start']:6.0f}s]"
        shown = shown_figures(event)
        if shown["verdict"] is not None:
            typer.secho(f"{clock} final  {_verdict_line(shown['verdict'])}", bold=True)
            return
        cells = "  ".join(f"{c['label']} {_cell(c)}" for c in shown["arms"])
        if shown["status"] == "final":  # a family the verdict does not judge: its figures, final
            typer.echo(f"{clock} final  {event.family:20s} {shown['metric']}: {cells}  (n={shown['rows']})")
            return
        typer.echo(f"{clock} provisional  {event.family:20s} {shown['metric']}: {cells}  chance "
                   f"{_cell(shown['chance'])}  n={shown['rows']}  (no verdict: {', '.join(shown['waiting'])} still to "
                   "answer)")  # fmt: skip

    report.named = lambda run_id: state.update(run_id=run_id)
    report.family = family
    return report


def _cell(cell: dict | None) -> str:
    """A score with its 95% interval, as the verdict table prints it."""
    if not cell or cell.get("value") is None:
        return "n/a"
    return f"{cell['value']:.3f} [{cell['ci_low']:.3f}, {cell['ci_high']:.3f}]"


def _verdict_line(v: dict) -> str:
    """One family's verdict as the CLI prints it (`ragft.eval.reporting.report.verdict_rows`)."""
    return (
        f"{v['family']:20s} best {v['best']:10s} {v['score']:24s} chance {v['chance']:5s} MDD {v['mdd']:11s} "
        f"non-inferior: {v['non_inferior']:20s} undecided: {v['undecided']:28s} -> {v['recommended']:25s} "
        f"(folk rule: {v['rule']})"
    )


def _finish_run(settings: Settings, run_id: str) -> Path:
    """Score a stored run, write its three report files and print the verdict table."""
    from ragft.eval.reporting.report import publish_run, verdict_rows

    results, folder = publish_run(settings, run_id)
    typer.secho(f"\nVerdict for run {run_id}", bold=True)
    for v in verdict_rows(results):
        typer.echo("  " + _verdict_line(v))
    typer.echo(f"\nreport: {folder / 'report.html'}  (also report.md, results.json)")
    return folder


def _split(items: str | None) -> list[str] | None:
    return [x.strip() for x in items.split(",") if x.strip()] if items else None


@app.command("eval")
def eval_(
    corpus: Annotated[Path, typer.Option(help="Corpus folder with documents/ and tasks/.")],
    arms: Annotated[str | None, typer.Option(help="Comma-separated arms (default: every arm).")] = None,
    families: Annotated[str | None, typer.Option(help="Comma-separated families (default: eval.families).")] = None,
    limit: Annotated[int | None, typer.Option(help="Test rows per family (seeded sample).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for sampling and statistics.")] = None,
    run_id: Annotated[str | None, typer.Option(help="Resume or name a run; default: a hash of its inputs.")] = None,
    fresh: Annotated[
        bool,
        typer.Option(
            "--fresh",
            help="Answer every row again: read nothing from the answer cache, in a new run (<id>-fresh-<time>).",
        ),
    ] = False,
    include_unreviewed: Annotated[
        bool,
        typer.Option(
            "--include-unreviewed",
            help="Count generated rows no person has reviewed yet (ragft corpus review); the report says so first.",
        ),
    ] = False,
    seeds: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=10,
            help="Train every adapter this many times (training seeds) and test across them: a verdict on a "
            "fine-tuned arm then holds for training noise too, at N times the adapters' training and answering time "
            "(eval.training_seeds; default 1, and the report warns that the verdict rests on one training).",
        ),
    ] = None,
    set_: SetOption = None,
) -> None:
    """Run every arm on every test row, store the answers, and write the comparison report. Answers already made
    for the same prompt, weights and decoding (by any run, curve or HTTP run) are reused from the answer cache."""
    settings = build_settings([*(set_ or []), *([f"eval.training_seeds={seeds}"] if seeds else [])])
    with reported_errors():
        corpus_folder(corpus, tasks=True)
        from ragft.eval.spec import RunSpec

        spec = RunSpec.resolve(
            settings, corpus, arms=_split(arms), families=_split(families), limit=limit, seed=seed, run_id=run_id,
            include_unreviewed=include_unreviewed,
        )  # fmt: skip
        _run_and_report(settings, spec, reuse=not fresh)


def _run_and_report(settings: Settings, spec, reuse: bool = True) -> None:
    """Run, printing each family's figures as it is answered (provisional before the adapters have answered,
    final after), then how many answers the cache gave, then the verdict table and the report's path."""
    from ragft.eval.running.runner import run_eval
    from ragft.eval.store import Store

    with reported_errors():
        printer = _progress_printer(settings, spec)
        done = run_eval(settings, spec, progress=printer, show_bars=True, named=printer.named,
                        on_family=printer.family, reuse=reuse)  # fmt: skip
        store = Store(settings.database)
        try:
            answers, reused = store.count(done), store.reused(done)
        finally:
            store.close()
        typer.echo(f"\n{answers} answers: {answers - reused} generated, {reused} reused from the answer cache"
                   + (" (ragft eval --fresh answers every row again)" if reused else ""))  # fmt: skip
        _finish_run(settings, done)


ALL_SIZES = "10,25,50,100,all"


@app.command()
def curve(
    corpus: Annotated[Path, typer.Option(help="Corpus folder with documents/ and tasks/.")],
    arms: Annotated[str | None, typer.Option(help="Comma-separated arms (default: base,fewshot,rag,lora).")] = None,
    families: Annotated[str | None, typer.Option(help="Comma-separated families (default: eval.families).")] = None,
    rows: Annotated[str, typer.Option(help="Train rows per family at each point ('all': every row).")] = ALL_SIZES,
    noise: Annotated[str, typer.Option(help="Shares of train rows given a wrong target, e.g. 0,0.1,0.3.")] = "0",
    limit: Annotated[int | None, typer.Option(help="Test rows per family (seeded sample).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for subsets, noise, sampling and statistics.")] = None,
    executor: Annotated[
        str | None,
        typer.Option(
            help="Where the points run: local (one after another) or ray (Ray tasks on RAY_ADDRESS or a "
            "local head; make ray). Default: eval.executor."
        ),
    ] = None,  # fmt: skip
    set_: SetOption = None,
) -> None:
    """Train the adapter arms on nested subsets of the train rows (optionally with label noise), answer the same
    test rows at every size, and report where fine-tuning overtakes prompting and RAG."""
    settings = build_settings(set_)
    with reported_errors():
        corpus_folder(corpus, tasks=True)
        from ragft.eval.curve_spec import CurveSpec, parse_noise, parse_sizes
        from ragft.eval.reporting.curve_report import summary_lines
        from ragft.eval.running.curve import run_curve

        spec = CurveSpec.resolve(settings, corpus, arms=_split(arms), families=_split(families),
                                 rows=parse_sizes(rows), noise=parse_noise(noise), limit=limit, seed=seed)  # fmt: skip

        def eta(left_s: float | None) -> None:
            if left_s is not None:
                typer.echo(f"curve: ~{left_s / 60:.0f} min left for the remaining points", err=True)

        if executor not in (None, "local", "ray"):
            raise ValueError(f"--executor {executor}: give local or ray")
        results, folder = run_curve(settings, spec, progress=_progress_printer(), show_bars=True, on_eta=eta,
                                    executor=executor)  # fmt: skip
    typer.secho(f"\nCurve {results['curve_id']}", bold=True)
    for line in summary_lines(results):
        typer.echo("  " + line.replace("**", ""))
    typer.echo(f"\nreport: {folder / 'report.html'}  (also report.md, results.json)")


@app.command()
def tune(
    corpus: Annotated[Path, typer.Option(help="Corpus folder with documents/ and tasks/.")],
    family: Annotated[str, typer.Option(help="The family whose train rows give the validation rows.")],
    grid: Annotated[
        list[str],
        typer.Option(
            help="A setting and the values to try, setting=v1,v2 (repeat for more axes: every combination "
            "runs), e.g. lora.learning_rate_by_group.lora/behaviour=5e-4,1e-3."
        ),
    ],
    arm: Annotated[str, typer.Option(help="The arm whose settings are chosen.")] = "lora",
    validation_share: Annotated[
        float, typer.Option(min=0.05, max=0.9, help="Share of the family's train rows held out for validation.")
    ] = 0.33,
    demo: Annotated[
        bool, typer.Option("--demo", help="Train as `ragft demo` does (its row subset and epochs).")
    ] = False,
    set_: SetOption = None,
) -> None:
    """Choose hyperparameters on validation rows carved from the train rows (never test rows): train and answer
    once per grid candidate on a tuning corpus of fit and validation rows, and print which scored best and
    whether the rows can tell the candidates apart. Writes tuning.json beside the tuning corpus."""
    settings = build_settings(set_)
    with reported_errors():
        corpus_folder(corpus, tasks=True)
        from ragft.eval.running.pipeline import demo_settings
        from ragft.eval.running.tuning import summary
        from ragft.eval.running.tuning import tune as run_tuning
        from ragft.service.arms import parse_arm

        tuning, out = run_tuning(settings, corpus, family=family, arm=parse_arm(arm).name, grid=grid,
                                 share=validation_share, prepare=demo_settings if demo else (lambda s: s),
                                 say=typer.echo)  # fmt: skip
    for line in summary(tuning):
        typer.echo(line)
    typer.echo(f"tuning: {out}")


@app.command()
def score(
    corpus: Annotated[Path, typer.Option(help="Corpus whose test rows the predictions answer.")],
    predictions: Annotated[Path, typer.Option(help="JSON lines: row_id, arm, text, passages (opt.), phase (opt.).")],
    name: Annotated[str | None, typer.Option(help="Run name (default: a hash of the file).")] = None,
    set_: SetOption = None,
) -> None:
    """Score answers made by any system (a hosted fine-tune, your production RAG) like ragft's own arms."""
    settings = build_settings(set_)
    with reported_errors():
        corpus_folder(corpus, tasks=True)
        if not predictions.is_file():
            raise ValueError(f"predictions file '{predictions}': no such file; give a JSON lines file")
        from ragft.eval.running.external import import_predictions

        run_id = import_predictions(settings, corpus, predictions, name)
        _finish_run(settings, run_id)


@app.command()
def report(
    run_id: Annotated[str, typer.Argument(help="Run id (see `ragft runs`).")],
    with_overrides: Annotated[
        bool,
        typer.Option(
            "--with-overrides",
            help="Also render a reviewed report (reviewers' marks from the web UI in place of the measured headline "
            "scores) under <reports_dir>/reviewed/<run-id>/; the measured report is re-rendered as it was.",
        ),
    ] = False,
    set_: SetOption = None,
) -> None:
    """Re-render a stored run's report from the database, generating nothing."""
    settings = build_settings(set_)
    with reported_errors():
        _finish_run(settings, run_id)
        if with_overrides:
            from ragft.eval.reporting.report import review_line
            from ragft.eval.reporting.review import publish_reviewed

            results, folder = publish_reviewed(settings, run_id)
            typer.echo(review_line(results["review"]))
            typer.echo(f"reviewed report: {folder / 'report.html'}  (also report.md, results.json)")


@app.command()
def compare(
    run_a: Annotated[str, typer.Argument(help="Earlier run id.")],
    run_b: Annotated[str, typer.Argument(help="Later run id.")],
    fail_on_regression: Annotated[
        bool,
        typer.Option(
            "--fail-on-regression",
            help="Exit 1 unless every headline of B is shown within the margin of A's (a one-sided non-inferiority "
            "test per family and arm on the common rows, at 5%), printing each that is not and the rows that would "
            "settle it; for CI.",
        ),
    ] = False,
    margin: Annotated[
        float | None, typer.Option(help="The gate's margin, a share of each headline's scale (default: the report's).")
    ] = None,
    set_: SetOption = None,
) -> None:
    """Show what changed between two runs: headline scores per family and arm, their paired changes, and
    recommendations."""
    from ragft.eval.reporting.answers import score_run
    from ragft.eval.reporting.comparison import describe_gate, describe_regression, headline_changes
    from ragft.eval.reporting.report import compare_runs
    from ragft.eval.scoring.results import build_results
    from ragft.eval.store import Store

    settings = build_settings(set_)
    store = Store(settings.database)
    try:
        with reported_errors():
            typer.echo(compare_runs(build_results(store, run_a, settings), build_results(store, run_b, settings)))
            changes = headline_changes(score_run(store, run_a, settings), score_run(store, run_b, settings),
                                       settings.eval.non_inferiority_margin if margin is None else margin)  # fmt: skip
    finally:
        store.close()
    typer.echo("\npaired change on the rows both runs scored (B minus A, 95% CI, Holm-adjusted p; gate: B shown "
               "within the margin of A, one-sided p):")  # fmt: skip
    for c in changes:
        interval = f"[{c.ci_low:+.3f}, {c.ci_high:+.3f}]" if c.ci_low is not None else "-"
        change = f"{c.difference:+.3f}" if c.difference is not None else "n/a"
        p = f"{c.p_holm:.3g}" if c.p_holm is not None else "-"
        gate = "held" if c.held else "NOT SHOWN" if c.within_p is not None else "-"
        within = f"{c.within_p:.3g}" if c.within_p is not None else "-"
        mark = "  REGRESSION" if c.regression else ""
        typer.echo(f"  {c.family:20s} {c.arm:10s} {change:>7s} {interval:18s} p={p:6s} n={c.n:<5d} "
                   f"gate {gate} (p={within}){mark}")  # fmt: skip
    failing = [c for c in changes if c.within_p is not None and not c.held]
    if fail_on_regression and failing:
        for c in failing:
            typer.secho(describe_gate(c, run_a, run_b), fg=typer.colors.RED, err=True)
        for c in (c for c in changes if c.regression):
            typer.secho(describe_regression(c, run_a, run_b), fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1)


@app.command()
def runs(set_: SetOption = None) -> None:
    """List the stored runs."""
    from ragft.eval.store import Store

    settings = build_settings(set_)
    store = Store(settings.database)
    try:
        for r in store.runs():
            typer.echo(f"{r.id:32s} {r.status:10s} {r.corpus:12s} {r.created_at}  {store.count(r.id)} answers")
    finally:
        store.close()


@app.command()
def demo(
    corpus: Annotated[Path, typer.Option(help="Corpus to run on.")] = Path("corpora/quillmark"),
    limit: Annotated[int | None, typer.Option(help="Test rows per family (default: eval.demo_limit).")] = None,
    set_: SetOption = None,
) -> None:
    """The whole pipeline on the shipped corpus: index, answer with the arms that need no training, train, answer
    with the adapter arms, report the verdict; each family's figures are printed as soon as it is answered."""
    settings = build_settings(set_)  # before the imports below load torch (models.omp_spin_count)
    from ragft.eval.running.pipeline import demo_settings
    from ragft.eval.spec import RunSpec

    settings = demo_settings(settings)  # the demo trains on a subset, declared in the report
    family_limits = None if limit else settings.eval.demo_family_limits  # --limit: the same for every family
    _run_and_report(settings, RunSpec.resolve(settings, corpus, limit=limit or settings.eval.demo_limit,
                                              family_limits=family_limits, extra={"demo": True}))  # fmt: skip


@corpus_app.command("init")
def corpus_init(
    folder: Annotated[Path, typer.Argument(help="The corpus folder to create (must not exist yet).")],
    documents: Annotated[Path, typer.Option(help="Folder of the team's files: PDF, Word, slides, sheets, HTML, text.")],
    questions: Annotated[
        Path | None, typer.Option(help="Questions with short answers: CSV, TSV, XLSX or JSONL (a header row).")
    ] = None,
    examples: Annotated[
        Path | None, typer.Option(help="Examples, input -> expected output: CSV, TSV, XLSX or JSONL.")
    ] = None,
    keep_unlocated: Annotated[
        bool, typer.Option(help="Keep questions whose answer no document states (the RAG arm can never find them).")
    ] = False,
    test_share: Annotated[float, typer.Option(help="Least share of examples per label held out as test rows.")] = 0.3,
    seed: Annotated[int, typer.Option(help="Seed of the train/test split.")] = 0,
    sheet: Annotated[str | None, typer.Option(help="Worksheet to read in an XLSX file (default: the first).")] = None,
    question_column: Annotated[
        str | None, typer.Option(help="Column of the questions (default: found by name).")
    ] = None,
    answer_column: Annotated[
        str | None, typer.Option(help="Column of the answers; several in one cell: 'a | b'.")
    ] = None,
    source_column: Annotated[str | None, typer.Option(help="Column naming the document that holds the answer.")] = None,
    split_column: Annotated[str | None, typer.Option(help="Column saying train or test.")] = None,
    kind_column: Annotated[str | None, typer.Option(help="Column marking unanswerable questions.")] = None,
    input_column: Annotated[str | None, typer.Option(help="Column of the examples' inputs.")] = None,
    expected_column: Annotated[str | None, typer.Option(help="Column of the examples' expected outputs.")] = None,
    instruction: Annotated[str | None, typer.Option(help="Instruction shown before every example's input.")] = None,
    max_words: Annotated[int | None, typer.Option(help="Style rule for free-text examples: at most N words.")] = None,
    first_word_in: Annotated[str | None, typer.Option(help="Style rule: the first word is one of these (a,b).")] = None,
    cite_source: Annotated[bool, typer.Option(help="Style rule: end with the source in brackets.")] = False,
    set_: SetOption = None,
) -> None:
    """Make a corpus from a team's own files: documents converted, questions and examples turned into task rows,
    answers located in the documents, splits assigned; then validate and audit it and print what to fix."""
    from ragft.eval.corpus.corpus_import import plan_corpus, summary, write_corpus

    build_settings(set_)
    if folder.exists():
        fail(f"{folder} already exists; give a new folder name (nothing was written)")
    if not documents.is_dir():
        fail(f"--documents {documents}: no such folder")
    cols = {"question": question_column, "answer": answer_column, "source": source_column, "split": split_column,
            "kind": kind_column, "input": input_column, "expected": expected_column}  # fmt: skip
    style = {"max_words": max_words, "first_word_in": _split(first_word_in), "cite_source": cite_source}
    with reported_errors():
        plan = plan_corpus(documents, questions, examples, columns=cols, sheet=sheet, keep_unlocated=keep_unlocated,
                           test_share=test_share, seed=seed, instruction=instruction, style=style)  # fmt: skip
        for line in summary(plan):
            typer.echo(line)
        write_corpus(plan, folder)
    typer.echo(f"wrote {folder} (documents/, tasks/, DATA_CARD.md)")
    _check_new_corpus(folder)
    typer.echo(f"next: ragft index {folder} && ragft eval --corpus {folder} --arms base,rag")


def _check_new_corpus(folder: Path, include_unreviewed: bool = False) -> None:
    """Validate and audit a corpus just made, printing every finding with its fix (findings do not undo it)."""
    from ragft.eval.corpus.audit import audit_corpus, render
    from ragft.eval.tasks import check_corpus

    _, problems = check_corpus(folder)
    if problems:
        typer.echo(f"validate: {len(problems)} problem(s) to fix in {folder}:")
        for problem in problems:
            typer.echo(f"  {problem}")
        return
    typer.echo("validate: OK")
    report = audit_corpus(folder, include_unreviewed)
    typer.echo(render(report), nl=False)


@corpus_app.command("generate")
def corpus_generate(
    corpus: Annotated[Path, typer.Argument(help="Corpus folder (documents/ and tasks/) to add generated rows to.")],
    generator_url: Annotated[
        str | None, typer.Option(help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8001/v1 (vLLM, ragft serve).")
    ] = None,
    generator_model: Annotated[str | None, typer.Option(help="Model name the endpoint serves.")] = None,
    generator_key: Annotated[
        str | None,
        typer.Option(envvar="RAGFT_GENERATOR_KEY", help="API key for the endpoint (or RAGFT_GENERATOR_KEY)."),
    ] = None,
    families: Annotated[
        str, typer.Option(help="Families to make: knowledge, abstention, behaviour.")
    ] = "knowledge,abstention,behaviour",  # fmt: skip
    count: Annotated[
        int, typer.Option(min=1, help="Items to keep per family (a knowledge item is a question and its paraphrase).")
    ] = 20,  # fmt: skip
    max_rows: Annotated[int | None, typer.Option(min=1, help="Budget: stop after this many rows.")] = None,
    max_tokens: Annotated[
        int | None, typer.Option(min=1, help="Budget: stop after the endpoint reports this many tokens.")
    ] = None,  # fmt: skip
    max_seconds: Annotated[float | None, typer.Option(min=1, help="Budget: stop after this many seconds.")] = None,
    retries: Annotated[int, typer.Option(min=0, max=5, help="Asks again when a reply does not parse.")] = 2,
    max_reply_tokens: Annotated[int, typer.Option(min=64, help="Longest reply asked of the endpoint.")] = 512,
    structured_output: Annotated[
        str,
        typer.Option(
            help="JSON Schema response format: auto (asked until the endpoint refuses it), on (a refusal is "
            "an error), off (never asked; replies parsed leniently)."
        ),
    ] = "auto",  # fmt: skip
    seed: Annotated[int, typer.Option(help="Seed of the passage order and near misses.")] = 0,
    unseen_share: Annotated[
        float, typer.Option(min=0, max=1, help="Share of knowledge items asked as unseen test rows (no train row).")
    ] = 0.25,
) -> None:
    """Make the rows a team lacks from its documents, each checked (span in the document, answer in the span,
    detail absent, label in the set), deduplicated and marked pending: a run uses them once reviewed."""
    from ragft.eval.corpus.generation_rows import (
        Budget,
        OpenAIGenerator,
        generate_rows,
        note_in_data_card,
        write_generated,
    )

    build_settings(None)
    with reported_errors():
        corpus_folder(corpus, tasks=True)
        if bool(generator_url) != bool(generator_model):
            raise ValueError("give --generator-url and --generator-model together (or neither: near misses only)")
        counts = {f: count for f in _split(families) or []}
        generator = None
        if generator_url:
            generator = OpenAIGenerator(generator_url, generator_model, generator_key, retries, max_reply_tokens,
                                        structured=structured_output)  # fmt: skip

        def progress(family: str, done: int, wanted: int, rejected: int, elapsed: float, left: float | None) -> None:
            eta = f", ~{left:.0f} s left" if left is not None else ""
            typer.echo(f"[{elapsed:6.0f}s] {family}: {done}/{wanted} items kept, {rejected} rejected{eta}", err=True)

        budget = Budget(max_rows, max_tokens, max_seconds)
        report = generate_rows(corpus, counts, generator, budget, seed, progress, unseen_share)
        path = write_generated(corpus, report.rows)
        note_in_data_card(corpus, report, generator_model or "none")
    for line in report.summary():
        typer.echo(line)
    typer.echo(f"wrote {len(report.rows)} pending rows to {path}")
    _check_new_corpus(corpus, include_unreviewed=True)
    typer.echo(f"review them: ragft corpus review {corpus} (or the web page, /ui/review); a run counts accepted rows")


@corpus_app.command("review")
def corpus_review(
    corpus: Annotated[Path, typer.Argument(help="Corpus folder whose generated rows to review.")],
    reviewer: Annotated[str | None, typer.Option(help="Your name, stored with each decision.")] = None,
    family: Annotated[str | None, typer.Option(help="Review only this family's rows.")] = None,
) -> None:
    """Accept, edit or reject pending generated rows one by one in the terminal; each decision is stored at once."""
    from ragft.eval.corpus.generation_rows import EDITABLE, GENERATED_FILE, decide, read_generated, review_items

    items = review_items(read_generated(corpus / "tasks" / GENERATED_FILE), "pending", family)
    if not items:
        typer.echo(f"no pending generated rows in {corpus}")
        return
    name = reviewer or typer.prompt("Your name (stored with each decision)")
    counts: dict[str, int] = {}
    for n, item in enumerate(items, start=1):
        fields = item.fields
        typer.secho(f"\n[{n}/{len(items)}] {item.family} ({fields['kind'] or 'no kind'}) from {fields['source_doc'] or '-'}", bold=True)  # fmt: skip
        if fields["span"]:
            typer.echo(f"  span: {fields['span']}")
        for key in EDITABLE[item.family]:
            if fields.get(key) is not None:
                typer.echo(f"  {key}: {fields[key]}")
        choice = typer.prompt("  [a]ccept, [e]dit, [r]eject, [s]kip, [q]uit", default="a").strip().lower()[:1]
        if choice == "q":
            break
        if choice not in ("a", "e", "r"):
            continue
        edits = {}
        if choice == "e":
            for key in EDITABLE[item.family]:
                if fields.get(key) is not None and not isinstance(fields[key], dict):
                    edits[key] = typer.prompt(f"  {key}", default=str(fields[key]))
        with reported_errors():
            done = decide(corpus, item.item, {"a": "accept", "e": "edit", "r": "reject"}[choice], name, edits)
        counts[done.status] = counts.get(done.status, 0) + 1
    typer.echo(", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "nothing decided")


@corpus_app.command("validate")
def corpus_validate(corpus: Annotated[Path, typer.Argument(help="Corpus folder to check.")]) -> None:
    """Check documents and task rows; every problem is printed with file and line."""
    from collections import Counter

    from ragft.eval.tasks import check_corpus, count_rows

    build_settings(None)  # the conversion cache and limits, as `ragft index` reads the documents
    rows, problems = check_corpus(corpus)
    for problem in problems:
        typer.echo(str(problem), err=True)
    if problems:
        fail(f"{corpus}: {len(problems)} problem(s)")
    counts = count_rows(rows)
    typer.echo(f"{corpus}: OK, {len(rows)} task rows")
    for family, by_split in counts.items():
        typer.echo(f"  {family:11s} train {by_split['train']:4d}  test {by_split['test']:4d}")
    reviews = Counter(r.review.status for r in rows if r.review is not None)
    if reviews:
        typer.echo("  generated rows: " + ", ".join(f"{reviews[s]} {s}" for s in ("pending", "accepted", "edited", "rejected"))
                   + " (runs count accepted and edited ones; review the rest: ragft corpus review)")  # fmt: skip


@corpus_app.command("audit")
def corpus_audit(
    corpus: Annotated[Path, typer.Argument(help="Corpus folder to audit.")],
    include_unreviewed: Annotated[
        bool, typer.Option(help="Audit generated rows still pending review too (ragft corpus generate).")
    ] = False,
) -> None:
    """Look for shortcuts in the task suite: train/test near-duplicates, shared abstention entities, surface
    rules, guessable answers, unbalanced labels, answers missing from their documents."""
    from ragft.eval.corpus.audit import audit_corpus, render
    from ragft.eval.tasks import CorpusError

    try:
        report = audit_corpus(corpus, include_unreviewed)
    except CorpusError as exc:
        fail(f"{corpus} does not validate; run `ragft corpus validate {corpus}` and fix it first.\n{exc}")
    typer.echo(render(report), nl=False)
    if not report.passed:
        fail(f"{corpus}: {len(report.failed)} audit check(s) failed; each 'fix:' line says what to change")


@backend_app.command("vllm-args")
def backend_vllm_args(
    corpus: Annotated[Path, typer.Option(help="Corpus whose trained adapters vLLM should serve.")] = Path(
        "corpora/quillmark"
    ),
    set_: SetOption = None,
) -> None:
    """Print `vllm serve` arguments: the generator plus one --lora-modules entry per trained adapter."""
    import shlex

    from ragft.service.backend import vllm_arguments

    with reported_errors():
        typer.echo(shlex.join(vllm_arguments(build_settings(set_), corpus)))


@backend_app.command("load-adapters")
def backend_load_adapters(
    corpus: Annotated[
        Path, typer.Option(help="Corpus whose trained adapters the running server should (re)load.")
    ] = Path("corpora/quillmark"),
    set_: SetOption = None,
) -> None:
    """After a retrain: load every adapter of the corpus into the running vLLM server again, without a restart."""
    from ragft.service.backend import load_adapters

    with reported_errors():
        for name in load_adapters(build_settings(set_), corpus):
            typer.echo(f"loaded {name}")


def run() -> None:
    try:  # the environment's settings, checked before any command runs
        settings = get_settings()
    except (ValidationError, SettingsError) as exc:
        problem = field_errors(exc) if isinstance(exc, ValidationError) else str(exc)
        typer.secho(f"error: a setting from the environment (RAGFT_* variables, .env) is invalid: {problem}; fix or "
                    "unset it (group.field is RAGFT_GROUP__FIELD; objects and lists are JSON)", fg=typer.colors.RED,
                    err=True)  # fmt: skip
        sys.exit(2)
    spin_before_sleep(settings.models.omp_spin_count)  # before whatever a command imports first loads torch
    app(prog_name="ragft")


if __name__ == "__main__":
    sys.exit(run())
