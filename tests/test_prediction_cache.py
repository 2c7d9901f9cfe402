"""The answer cache (eval/running/prediction_cache.py) and the figures a run shows as each family is answered
(eval/running/early_results.py), on the tiny models."""

import json

from ragft.eval.running.runner import run_eval
from ragft.eval.spec import RunSpec
from ragft.eval.store import Store
from ragft.service.generation import Generator

ARMS = ["base", "fewshot", "rag", "lora"]


def counting_generator(monkeypatch) -> list[int]:
    """Prompts each real generate() call was given, in call order."""
    calls: list[int] = []
    real = Generator.generate

    def generate(self, prompts, max_new_tokens=None):
        calls.append(len(prompts))
        return real(self, prompts, max_new_tokens)

    monkeypatch.setattr(Generator, "generate", generate)
    return calls


def edit_row(corpus, row_id: str, question: str) -> None:
    path = corpus / "tasks" / "tasks.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for row in rows:
        if row["id"] == row_id:
            row["question"] = question
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_editing_one_knowledge_row_answers_only_that_row_again(settings, full_corpus, monkeypatch):
    calls = counting_generator(monkeypatch)
    spec = RunSpec.resolve(settings, full_corpus, arms=ARMS, families=["knowledge", "abstention"])
    first = run_eval(settings, spec)
    store = Store(settings.database)
    answers = store.count(first)
    assert sum(calls) == answers and store.reused(first) == 0  # a cold run generates every answer

    calls.clear()
    edit_row(full_corpus, "k2", "What does a Kestrel K4 router cost?")
    second = run_eval(settings, spec)
    assert second != first  # the task file changed, so this is another run...
    assert sum(calls) == len(ARMS)  # ...that generated only the edited row's answers, one per arm
    assert store.count(second) == answers and store.reused(second) == answers - len(ARMS)
    fresh = {p.arm for p in store.predictions(second) if not p.reused}
    assert fresh == set(ARMS) and {p.row_id for p in store.predictions(second) if not p.reused} == {"k2"}
    before = {(p.arm, p.row_id): p.text for p in store.predictions(first)}
    assert all(p.text == before[(p.arm, p.row_id)] for p in store.predictions(second) if p.reused)
    from ragft.eval.reporting.report import render_markdown
    from ragft.eval.scoring.results import build_results

    results = build_results(store, second, settings)
    main = [p for p in store.predictions(second) if p.phase == "main"]
    assert {arm: c["reused"] for arm, c in results["costs"].items()} == {
        arm: sum(p.reused for p in main if p.arm == arm) for arm in results["costs"]}  # fmt: skip
    assert all(c["reused"] > 0 for c in results["costs"].values())
    assert f"{answers - len(ARMS)} of {answers} answers were reused from the answer cache" in render_markdown(results)

    calls.clear()
    again = run_eval(settings, spec, reuse=False)  # --fresh: nothing read from the cache, in a run of its own
    assert again.startswith(second + "-fresh-") and sum(calls) == answers and store.reused(again) == 0
    store.close()


def test_a_run_with_other_arms_shares_the_answers_it_has_in_common(settings, full_corpus, monkeypatch):
    """A curve's reference arms, the demo and a later full eval: another run asking the same prompts of the same
    weights generates nothing for them."""
    calls = counting_generator(monkeypatch)
    run_eval(settings, RunSpec.resolve(settings, full_corpus, arms=["base", "rag"], families=["knowledge"]))
    calls.clear()
    wider = run_eval(settings, RunSpec.resolve(settings, full_corpus, arms=["base", "rag", "fewshot"],
                                               families=["knowledge"]))  # fmt: skip
    store = Store(settings.database)
    assert {p.arm for p in store.predictions(wider) if not p.reused} == {"fewshot"}
    assert sum(calls) == sum(1 for p in store.predictions(wider) if p.arm == "fewshot")
    store.close()


def test_untrained_arms_figures_come_first_and_each_verdict_when_its_family_is_answered(settings, full_corpus):
    events, stages = [], []

    def progress(stage, done, total):
        stages.append(stage)

    def heard(event):
        events.append((event, len(stages)))

    spec = RunSpec.resolve(settings, full_corpus, arms=ARMS, families=["knowledge", "behaviour", "freshness"])
    run_id = run_eval(settings, spec, progress=progress, on_family=heard)
    store = Store(settings.database)
    # a cold run generates every answer in its own batch: fewshot, with no worked example of the JSON and style
    # formats, asks what base asks, and still answers those rows itself
    assert store.reused(run_id) == 0
    first_training = next(i for i, s in enumerate(stages) if s.startswith("train"))
    provisional = [(e, at) for e, at in events if not e.final]
    final = [(e, at) for e, at in events if e.final]
    assert [e.family for e, _ in provisional] == ["knowledge", "behaviour", "freshness"]
    assert all(at <= first_training for _, at in provisional)  # shown while the adapter had yet to train
    for e, _ in provisional:
        block = e.results["families"][e.family]
        assert e.arms == ("base", "fewshot", "rag") and e.waiting == ("lora",)
        assert set(block["arms"]) == {"base", "fewshot", "rag"}  # no figure of an arm that has not answered
        cell = block["arms"]["rag"][block["headline_metric"]]
        assert cell["ci_low"] <= cell["value"] <= cell["ci_high"]
    assert sorted(e.family for e, _ in final) == ["behaviour", "freshness", "knowledge"]
    assert all(at > first_training for _, at in final)
    for e, _ in final:  # the verdict printed early is the one the report prints at the end
        assert set(e.results["families"][e.family]["arms"]) == set(ARMS)
    from ragft.eval.reporting.report import verdict_rows
    from ragft.eval.running.early_results import shown_figures
    from ragft.eval.scoring.results import build_results

    report = build_results(store, run_id, settings)
    rows = {"knowledge": 4, "behaviour": 3, "freshness": 1}  # the corpus's test rows each family reads
    for e, _ in provisional:  # what the CLI prints and the runs page shows: cells, the arms to wait for, no verdict
        shown = shown_figures(e)
        assert shown["status"] == "provisional" and shown["verdict"] is None and shown["waiting"] == ["LoRA"]
        assert [c["arm"] for c in shown["arms"]] == ["base", "fewshot", "rag"] and shown["rows"] == rows[e.family]
        assert json.loads(json.dumps(shown)) == shown  # as the job's progress stores it
    final_rows = {v["family"]: v for v in verdict_rows(report)}
    for e, _ in final:
        shown = shown_figures(e)
        assert shown["status"] == "final" and shown["waiting"] == [] and shown["rows"] == rows[e.family]
        assert shown["verdict"] == final_rows[e.family]  # the report's verdict row, word for word
    for e, _ in final:
        early = e.results["families"][e.family]
        assert early["verdict"] == report["families"][e.family]["verdict"], e.family
        assert early["arms"] == {a: {k: v for k, v in cells.items() if k in early["arms"][a]}
                                 for a, cells in report["families"][e.family]["arms"].items()}  # fmt: skip
    store.close()


def test_the_cli_says_how_many_answers_were_reused_and_fresh_reuses_none(ragft, full_corpus):
    settings, run = ragft
    args = ["eval", "--corpus", full_corpus, "--arms", "base,rag", "--families", "knowledge"]
    first = run(*args)
    assert first.exit_code == 0, first.output
    assert "8 answers: 8 generated, 0 reused from the answer cache\n" in first.stdout
    edit_row(full_corpus, "k2", "What does a Kestrel K4 router cost?")
    second = run(*args)
    assert "8 answers: 2 generated, 6 reused from the answer cache (ragft eval --fresh" in second.stdout
    fresh = run(*args, "--fresh")
    assert fresh.exit_code == 0 and "8 answers: 8 generated, 0 reused" in fresh.stdout
    assert "-fresh-" in fresh.stdout.split("Verdict for run ")[1].split()[0]
