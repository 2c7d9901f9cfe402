import json

import pytest
import typer
from ragft.service.app import cli
from ragft.service.settings import get_settings
from typer.testing import CliRunner


@pytest.fixture
def run(settings, monkeypatch):
    monkeypatch.setattr(cli, "get_settings", lambda: settings)
    runner = CliRunner()
    return lambda *args: runner.invoke(cli.app, [str(a) for a in args])


def test_index_twice_then_query(run, corpus):
    first = run("index", corpus)
    assert first.exit_code == 0, first.output
    assert "3 added" in first.output
    second = run("index", corpus)
    assert "index up to date" in second.output and "0 chunks re-embedded" in second.output
    out = run("query", "what is the price ?", "--corpus", corpus, "--top-k", "1")  # no --arms: those asked by default
    assert out.exit_code == 0, out.output
    assert "== base" in out.output and "== rag" in out.output and "== fewshot" not in out.output
    data = json.loads(run("query", "what is the price ?", "--arms", "rag", "--corpus", corpus, "--json").stdout)
    assert data[0]["arm"] == "rag" and len(data[0]["passages"]) == 2


def test_errors_are_one_clear_line_and_exit_2(run, corpus, tmp_path):
    out = run("query", "q", "--arms", "ragg", "--corpus", corpus)
    assert out.exit_code == 2 and "unknown arm 'ragg'" in out.output
    out = run("query", "q", "--arms", "rag", "--corpus", corpus)
    assert out.exit_code == 2 and "ragft index" in out.output
    out = run("index", tmp_path / "empty")
    assert out.exit_code == 2 and "no such folder" in out.output


def test_set_overrides_settings(run, corpus):
    out = run("index", corpus, "--set", "retrieval.chunk_tokens=20", "--set", "retrieval.chunk_overlap=2")
    assert out.exit_code == 0 and "new index" in out.output
    out = run("index", corpus, "--set", "retrieval.chunk_tokens=nine")
    assert out.exit_code == 2 and "chunk_tokens" in out.output
    out = run("index", corpus, "--set", "retrieval.no_such=1")
    assert out.exit_code == 2 and "unknown setting 'retrieval.no_such'" in out.output


def test_set_reads_json_for_settings_that_take_an_object_or_a_list():
    settings = cli._settings_with(['lora.max_rows_per_family={"behaviour": 80, "lora/knowledge": 5}',
                                   'lora.target_modules=["q_proj", "v_proj"]', "lora.rank=4"])  # fmt: skip
    assert settings.lora.max_rows_per_family == {"behaviour": 80, "lora/knowledge": 5}
    assert settings.lora.target_modules == ["q_proj", "v_proj"] and settings.lora.rank == 4
    with pytest.raises(typer.BadParameter, match="not valid JSON"):
        cli._settings_with(["lora.max_rows_per_family={behaviour: 80}"])


def test_corpus_validate(run, corpus):
    out = run("corpus", "validate", corpus)
    assert out.exit_code == 0 and "OK, 3 task rows" in out.output
    (corpus / "tasks" / "tasks.jsonl").write_text('{"id": "x"}\n')
    out = run("corpus", "validate", corpus)
    assert out.exit_code == 2 and "tasks/tasks.jsonl:1:" in out.output


def test_real_get_settings_reads_env(monkeypatch):
    get_settings.cache_clear()
    monkeypatch.setenv("RAGFT_RETRIEVAL__TOP_K", "7")
    try:
        assert get_settings().retrieval.top_k == 7
    finally:
        get_settings.cache_clear()


def test_train_then_reuse_then_refuse_untrainable(run, full_corpus):
    first = run("train", "--corpus", full_corpus, "--arm", "lora")
    assert first.exit_code == 0, first.output
    assert first.stdout.startswith("trained lora/questions:") and "tokens" in first.stdout
    assert "trained lora/behaviour:" in first.stdout and "epochs: behaviour 2.0" in first.stdout
    second = run("train", "--corpus", full_corpus, "--arm", "lora")
    assert second.stdout.startswith("reused lora/questions:")
    bad = run("train", "--corpus", full_corpus, "--arm", "base")
    assert bad.exit_code == 2 and "nothing to train" in bad.output


def test_query_uses_the_only_indexed_corpus_and_names_the_choices_otherwise(settings, corpus, tmp_path, monkeypatch):
    from ragft.service.settings import Settings

    unset = Settings.model_validate({k: v for k, v in settings.model_dump().items() if k != "corpus"})
    assert "corpus" not in unset.model_fields_set
    monkeypatch.setattr(cli, "get_settings", lambda: unset)
    runner = CliRunner()
    mydocs = tmp_path / "mydocs"
    (mydocs / "documents").mkdir(parents=True)
    (mydocs / "documents" / "a.md").write_text("The K2 costs $249.")
    assert runner.invoke(cli.app, ["index", str(mydocs)]).exit_code == 0
    out = runner.invoke(cli.app, ["query", "what does the K2 cost ?", "--arms", "rag", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)[0]["passages"][0]["doc_id"] == "a"  # searched mydocs, just indexed
    assert runner.invoke(cli.app, ["index", str(corpus)]).exit_code == 0
    two = runner.invoke(cli.app, ["query", "what does the K2 cost ?", "--arms", "rag"])
    assert two.exit_code == 2 and "mydocs" in two.output and "corpus" in two.output and "--corpus" in two.output


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["eval", "--corpus", "/no/such/folder"], "corpus folder '/no/such/folder' does not exist"),
        (["train", "--corpus", "/no/such/folder"], "does not exist"),
        (["train", "--corpus", ".", "--arm", "base"], "arm 'base' has nothing to train; choose from lora"),
        (["score", "--corpus", "/no/such/folder", "--predictions", "p.jsonl"], "does not exist"),
    ],
)
def test_bad_input_is_answered_before_any_model_or_torch_loads(args, says):
    """Argument and corpus checks come before the expensive imports, so a typo is answered at once."""
    import subprocess
    import sys

    code = ("import atexit, sys; atexit.register(lambda: print('torch imported' if 'torch' in sys.modules else "
            "'torch not imported', file=sys.stderr)); from ragft.service.app.cli import run; sys.argv[1:] = "
            f"{args!r}; run()")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert says in out.stderr and "torch not imported" in out.stderr, out.stderr


def test_omp_spin_count_reaches_libgomp_before_torch_loads():
    """models.omp_spin_count becomes GOMP_SPINCOUNT before a command imports torch (libgomp reads it once, when
    torch loads); once torch is loaded the count cannot change, and the process says so instead of pretending."""
    import os
    import subprocess
    import sys

    code = ("import os, sys; from ragft.service.app.cli import build_settings; build_settings(sys.argv[1:]); "
            "print(os.environ.get('GOMP_SPINCOUNT')); import torch; build_settings(['models.omp_spin_count=7'])")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    spun = subprocess.run([sys.executable, "-c", code, "models.omp_spin_count=5000"], capture_output=True,
                          text=True, timeout=120, env=env)  # fmt: skip
    assert spun.returncode == 0, spun.stderr
    assert spun.stdout.split() == ["5000"]
    assert "models.omp_spin_count=7 is not applied: torch is already loaded" in spun.stderr
    default = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert default.stdout.split() == ["None"]  # 0: OMP_WAIT_POLICY=PASSIVE alone, threads sleep at once


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("RAGFT_RETRIEVAL__TOP_K", "0", "retrieval.top_k: Input should be greater than or equal to 1"),
        ("RAGFT_LORA__LEARNING_RATE_BY_GROUP", "{bad", 'error parsing value for field "lora"'),
    ],
)
def test_a_bad_setting_in_the_environment_is_one_error_line_not_a_traceback(variable, value, says):
    import os
    import subprocess
    import sys

    code = "import sys; from ragft.service.app.cli import run; sys.argv[1:] = ['runs']; run()"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, variable: value})  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert "error: a setting from the environment" in out.stderr and says in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and "errors.pydantic.dev" not in out.stderr


def test_a_validation_error_is_one_line_per_field(ragft, corpus):
    _, run = ragft
    out = run("eval", "--corpus", corpus, "--arms", "ragg")
    assert out.exit_code == 2
    assert "arms.0: unknown arm 'ragg'" in out.output and "errors.pydantic.dev" not in out.output


def test_eval_seeds_is_the_training_seeds_preset(run, corpus, monkeypatch):
    from ragft.service.app import cli

    seen = {}
    monkeypatch.setattr(cli, "_run_and_report", lambda settings, spec, reuse=True: seen.update(
        seeds=settings.eval.training_seeds, top_k=settings.retrieval.top_k))  # fmt: skip
    assert run("eval", "--corpus", str(corpus), "--seeds", "3", "--set", "retrieval.top_k=2").exit_code == 0
    assert seen == {"seeds": 3, "top_k": 2}
    refused = run("eval", "--corpus", str(corpus), "--seeds", "0")
    assert refused.exit_code == 2 and "--seeds" in refused.output
