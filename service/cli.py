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
from pathlib import Path
from typing import Annotated

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import typer

from service.settings import Settings, get_settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Compare RAG, LoRA, both, or neither on your data.")
corpus_app = typer.Typer(no_args_is_help=True, help="Corpus and task-suite tools.")
app.add_typer(corpus_app, name="corpus")

SetOption = Annotated[
    list[str] | None, typer.Option("--set", help="Override a setting: group.field=value, e.g. retrieval.top_k=8.")
]


def build_settings(overrides: list[str] | None) -> Settings:
    """Environment settings with `group.field=value` overrides applied and validated."""
    base = get_settings()
    if not overrides:
        return base
    data = base.model_dump()
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"'{item}' is not group.field=value", param_hint="--set")
        node = data
        *path, leaf = key.split(".")
        for part in path:
            if not isinstance(node.get(part), dict):
                raise typer.BadParameter(f"unknown settings group '{part}' in '{item}'", param_hint="--set")
            node = node[part]
        if leaf not in node:
            raise typer.BadParameter(f"unknown setting '{key}'; see README 'Configuration'", param_hint="--set")
        node[leaf] = value
    try:
        return Settings.model_validate(data)
    except Exception as exc:  # pydantic ValidationError: show it as a usage error
        raise typer.BadParameter(str(exc), param_hint="--set") from exc


def runtime_for(settings: Settings, corpus: Path):
    """A runtime for `corpus` with fewshot examples drawn from its train split."""
    from eval.tasks import corpus_examples
    from service.runtime import Runtime

    return Runtime(settings, corpus, corpus_examples(corpus, settings.generation))


def fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress.")] = False) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


@app.command()
def index(
    corpus: Annotated[Path, typer.Argument(help="Corpus folder (with documents/) or a folder of documents.")],
    set_: SetOption = None,
) -> None:
    """Build or update the retrieval index of a corpus, embedding only what changed."""
    from service.runtime import Runtime

    settings = build_settings(set_)
    try:
        report = Runtime(settings, corpus).index()
    except (ValueError, RuntimeError) as exc:
        fail(str(exc))
    typer.echo(report.summary())
    typer.echo(f"index: {settings.index_dir(corpus)}")


@app.command()
def query(
    question: Annotated[str, typer.Argument(help="The question to ask every arm.")],
    arms: Annotated[str, typer.Option(help="Comma-separated arms, e.g. base,rag,rag+lora.")] = "base,rag",
    corpus: Annotated[Path | None, typer.Option(help="Corpus whose index and adapters to use.")] = None,
    top_k: Annotated[int | None, typer.Option(help="Passages for retrieving arms.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    set_: SetOption = None,
) -> None:
    """Ask one question to several arms side by side."""
    from service.arms import compare, parse_arms

    settings = build_settings(set_)
    try:
        chosen = parse_arms(arms)
        answers = compare(runtime_for(settings, corpus or settings.corpus), question, chosen, top_k)
    except (ValueError, RuntimeError) as exc:
        fail(str(exc))
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
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    set_: SetOption = None,
) -> None:
    """Serve the HTTP API (POST /v1/query, GET /healthz)."""
    import uvicorn

    from service.api.main import create_app

    uvicorn.run(create_app(build_settings(set_)), host=host, port=port)


@app.command()
def demo(
    corpus: Annotated[Path, typer.Option(help="Corpus to run on.")] = Path("corpora/quillmark"),
    questions: Annotated[int, typer.Option(help="Test questions to ask.")] = 3,
    arms: Annotated[str, typer.Option(help="Arms to compare.")] = "base,fewshot,rag",
    set_: SetOption = None,
) -> None:
    """Index the shipped corpus and compare arms on a few of its test questions."""
    from eval.tasks import load_tasks
    from service.arms import compare, parse_arms

    settings = build_settings(set_)
    try:
        runtime = runtime_for(settings, corpus)
        typer.echo(runtime.index().summary())
        rows = [r for r in load_tasks(corpus) if r.split == "test" and r.family == "knowledge"][:questions]
        for row in rows:
            typer.secho(
                f"\nQ: {row.text}   (expected: {row.answers[0]}; source: {', '.join(row.source_docs)})", bold=True
            )
            for a in compare(runtime, row.text, parse_arms(arms)):
                cited = ", ".join(dict.fromkeys(p.doc_id for p in a.passages))
                typer.echo(f"  {a.arm:8s} {a.text[:150]!r}" + (f"  <- {cited}" if cited else ""))
    except (ValueError, RuntimeError) as exc:
        fail(str(exc))


@corpus_app.command("validate")
def corpus_validate(corpus: Annotated[Path, typer.Argument(help="Corpus folder to check.")]) -> None:
    """Check documents and task rows; every problem is printed with file and line."""
    from eval.tasks import check_corpus, count_rows

    rows, problems = check_corpus(corpus)
    for problem in problems:
        typer.echo(str(problem), err=True)
    if problems:
        fail(f"{corpus}: {len(problems)} problem(s)")
    counts = count_rows(rows)
    typer.echo(f"{corpus}: OK, {len(rows)} task rows")
    for family, by_split in counts.items():
        typer.echo(f"  {family:11s} train {by_split['train']:4d}  test {by_split['test']:4d}")


def run() -> None:
    app(prog_name="ragft")


if __name__ == "__main__":
    sys.exit(run())
