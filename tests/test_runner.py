import json
from html.parser import HTMLParser

import pytest
from ragft.eval.families import FAMILIES as FAMILY_FACTS
from ragft.eval.running.runner import select_rows
from ragft.eval.scoring.results import SCHEMA_VERSION
from ragft.eval.store import Store
from ragft.eval.tasks import load_tasks
from ragft.service.app import cli
from ragft.service.arms import ARMS

ALL_ARMS = ["base", "fewshot", "rag", "lora", "rag_lora", "scratch"]
FAMILIES = ["knowledge", "knowledge_paraphrase", "knowledge_unseen", "behaviour", "abstention", "freshness", "general"]


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls, self.tags = [], 0

    def handle_starttag(self, tag, attrs):
        self.tags += 1
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]


def test_rows_are_a_seeded_sample_shared_by_all_arms(full_corpus):
    rows = load_tasks(full_corpus)
    chosen = select_rows(rows, ["knowledge", "abstention"], limit=2, seed=0)
    assert set(chosen) == {"knowledge", "abstention"}  # abstention also reads the answerable knowledge rows
    assert all(r.split == "test" for rs in chosen.values() for r in rs)
    assert select_rows(rows, ["knowledge"], 2, seed=0)["knowledge"] == chosen["knowledge"]
    assert len(select_rows(rows, ["knowledge"], None, 0)["knowledge"]) == 4


def test_a_sample_gives_each_kind_a_family_reports_its_own_rows(full_corpus):
    rows = load_tasks(full_corpus)
    knowledge = [r for r in rows if r.split == "test" and r.family == "knowledge"]
    kinds = {r.kind for r in knowledge}
    assert {"paraphrase", "unseen"} <= kinds  # knowledge_paraphrase and knowledge_unseen score one kind each
    chosen = select_rows(rows, ["knowledge"], limit=1, seed=0)["knowledge"]
    assert sorted(r.kind or "" for r in chosen) == sorted(k or "" for k in kinds)  # one row of each, not 1 in all
    assert len(select_rows(rows, ["behaviour"], limit=1, seed=0)["behaviour"]) == 1  # no view splits it


def test_a_family_limit_replaces_the_run_limit_for_that_family_only(full_corpus, settings):
    from ragft.eval.running.runner import run_id_for
    from ragft.eval.spec import RunSpec

    rows = load_tasks(full_corpus)
    every = [r for r in rows if r.split == "test" and r.family == "behaviour"]
    chosen = select_rows(rows, ["knowledge", "behaviour"], 1, 0, {"behaviour": None})
    assert chosen["behaviour"] == sorted(every, key=lambda r: r.id) and len(every) > 1  # every behaviour row
    assert chosen["knowledge"] == select_rows(rows, ["knowledge"], 1, 0)["knowledge"]  # the rest as sampled
    assert len(select_rows(rows, ["behaviour"], None, 0, {"behaviour": 1})["behaviour"]) == 1
    with pytest.raises(ValueError, match="family_limits names no family: behavior"):
        RunSpec.resolve(settings, full_corpus, family_limits={"behavior": None})
    # a run without family limits keeps the id it had before they existed; one with them gets its own
    spec = RunSpec.resolve(settings, full_corpus, limit=1)
    limited = RunSpec.resolve(settings, full_corpus, limit=1, family_limits={"behaviour": None})
    assert run_id_for(settings, spec, "t", {}) != run_id_for(settings, limited, "t", {})
    assert "family_limits" not in spec.model_dump(exclude_defaults=True)


def test_how_threads_wait_is_not_part_of_the_run_id(full_corpus, settings):
    """models.omp_spin_count changes the speed, never an answer: `make demo` (5,000) and `ragft demo` (0) store their
    answers under one run id, while a setting that decides answers (the compute type) still gives a new one."""
    from ragft.eval.running.runner import run_id_for
    from ragft.eval.spec import RunSpec

    spec = RunSpec.resolve(settings, full_corpus, limit=1)
    spinning = settings.model_copy(update={"models": settings.models.model_copy(update={"omp_spin_count": 5000})})
    other = settings.model_copy(update={"models": settings.models.model_copy(update={"compute_type": "int8"})})
    assert run_id_for(spinning, spec, "t", {}) == run_id_for(settings, spec, "t", {})
    assert run_id_for(other, spec, "t", {}) != run_id_for(settings, spec, "t", {})


def test_eval_end_to_end_writes_three_report_files(settings, full_corpus, monkeypatch, tmp_path):
    settings = settings.model_copy(
        update={"eval": settings.eval.model_copy(update={"reports_dir": tmp_path / "reports"})}
    )
    monkeypatch.setattr(cli, "get_settings", lambda: settings)
    from typer.testing import CliRunner

    out = CliRunner().invoke(cli.app, ["eval", "--corpus", str(full_corpus)], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    assert "Verdict for run" in out.stdout and "report.html" in out.stdout
    run_id = out.stdout.split("Verdict for run ")[1].split()[0]
    # each family's figures as it is answered: the untrained arms' first, marked provisional, then its verdict
    provisional, final = out.stdout.index("provisional  knowledge"), out.stdout.index("final  knowledge")
    assert provisional < final < out.stdout.index("Verdict for run")
    assert "(no verdict: LoRA, RAG + LoRA, Scratch still to answer)" in out.stdout
    assert " generated, 0 reused from the answer cache" in out.stdout  # a cold run generates every answer
    folder = tmp_path / "reports" / run_id
    results = json.loads((folder / "results.json").read_text())
    assert results["schema_version"] == SCHEMA_VERSION and set(results["families"]) == set(FAMILIES)
    assert "undecided:" in out.stdout and "not worse" not in out.stdout
    for family, block in results["families"].items():
        asked = {a for a in ALL_ARMS if FAMILY_FACTS[family].scores(ARMS[a])}
        assert set(block["arms"]) == asked, family
        cell = block["arms"]["base"][block["headline_metric"]]
        assert (
            set(cell) == {"value", "ci_low", "ci_high", "n", "method"}
            and cell["ci_low"] <= cell["value"] <= cell["ci_high"]
        )
        assert set(block["verdict"]) >= {
            "best",
            "worse",
            "non_inferior",
            "undecided",
            "recommended",
            "status",
            "reason",
        }
        assert block["power"]["rows"] >= 1 and "chance_baseline" in block
        if block["verdict"]["status"] == "insufficient evidence":  # a handful of rows never settles a cheaper arm
            assert block["verdict"]["recommended"] is None
    assert set(results["costs"]) == set(ALL_ARMS)
    assert results["costs"]["lora"]["training_wall_s"] > 0 and results["costs"]["rag"]["index_build_s"] > 0
    for arm, c in results["costs"].items():  # each arm's answers cost at most the wall clock it spent answering
        assert 0 < c["machine_s"] <= c["answer_wall_s"] * 1.01 and c["machine_over_wall"] > 0.05, (arm, c)
    assert results["data"]["refresh"]["documents_changed"] == 1
    assert "recall_at_k" in results["families"]["knowledge"]["arms"]["rag"]
    assert "recall_at_k" not in results["families"]["knowledge"]["arms"]["base"]  # retrieval metrics: retrieving arms
    md = (folder / "report.md").read_text()
    assert md.startswith("# ragft report") and "| knowledge |" in md
    assert "## Training" in md and "From-scratch floor" in md and "epochs" in md
    html = (folder / "report.html").read_text()
    parser = Links()
    parser.feed(html)
    assert parser.tags > 50 and parser.urls and all(u.startswith("data:image/png;base64,") for u in parser.urls)
    assert "http://" not in html and "https://" not in html

    store = Store(settings.database)
    stored = store.count(run_id)
    # arms x (knowledge + behaviour + abstention + freshness), and the general probes only for base and the three
    # arms whose weights changed: rag and fewshot run the base weights, so they cannot forget
    assert stored == 6 * (4 + 3 + 1 + 1) + 4 * 2
    assert set(results["families"]["general"]["forgetting_vs_base"]) == {"lora", "rag_lora", "scratch"}
    answered_by = store.run(run_id).meta["answered_by"]  # the artifacts whose weights answered, by fingerprint
    for arm in ("lora", "rag_lora", "scratch"):
        trained = {g["fingerprint"] for g in results["data"]["adapters"][arm]["groups"].values()}
        assert answered_by[arm] and set(answered_by[arm]) <= trained
    assert not answered_by.get("base") and not answered_by.get("rag")
    again = CliRunner().invoke(cli.app, ["eval", "--corpus", str(full_corpus)])
    assert again.exit_code == 0 and f"Verdict for run {run_id}" in again.stdout  # same inputs, same run
    assert store.count(run_id) == stored
    rerendered = CliRunner().invoke(cli.app, ["report", run_id])
    assert rerendered.exit_code == 0, rerendered.output
    assert json.loads((folder / "results.json").read_text())["families"] == results["families"]
    diff = CliRunner().invoke(cli.app, ["compare", run_id, run_id])
    assert diff.exit_code == 0 and "+0.000" in diff.stdout
    missing = CliRunner().invoke(cli.app, ["report", "no-such-run"])
    assert missing.exit_code == 2 and "no run 'no-such-run'" in missing.output


def test_missing_families_and_bad_input_are_clear(settings, corpus, monkeypatch, tmp_path):
    settings = settings.model_copy(
        update={"eval": settings.eval.model_copy(update={"reports_dir": tmp_path / "reports"})}
    )
    monkeypatch.setattr(cli, "get_settings", lambda: settings)
    from typer.testing import CliRunner

    out = CliRunner().invoke(cli.app, ["eval", "--corpus", str(corpus), "--arms", "base,rag"])
    assert out.exit_code == 0, out.output  # no behaviour, freshness or general rows and no updates/: still a report
    run_id = out.stdout.split("Verdict for run ")[1].split()[0]
    results = json.loads((tmp_path / "reports" / run_id / "results.json").read_text())
    assert results["families"]["knowledge"]["verdict"] is not None
    assert results["families"]["behaviour"]["arms"] == {} and results["families"]["behaviour"]["verdict"] is None
    bad_arm = CliRunner().invoke(cli.app, ["eval", "--corpus", str(corpus), "--arms", "base,ragg"])
    assert bad_arm.exit_code == 2 and "unknown arm 'ragg'" in bad_arm.output
    bad_family = CliRunner().invoke(cli.app, ["eval", "--corpus", str(corpus), "--families", "knowledge,trivia"])
    assert bad_family.exit_code == 2 and "trivia" in bad_family.output
    empty = CliRunner().invoke(cli.app, ["eval", "--corpus", str(corpus), "--families", "general"])
    assert empty.exit_code == 2 and '"split": "test"' in empty.output


def test_training_seeds_train_and_answer_each_adapter_k_times(ragft, full_corpus):
    settings, run = ragft
    out = run("eval", "--corpus", full_corpus, "--arms", "base,lora", "--families", "knowledge,behaviour",
              "--set", "eval.training_seeds=2")  # fmt: skip
    assert out.exit_code == 0, out.output
    run_id = out.stdout.split("Verdict for run ")[1].split()[0]
    store = Store(settings.database)
    arms = {p.arm for p in store.predictions(run_id)}
    assert arms == {"base", "lora", "lora@seed1"}  # the second seed's answers are kept apart...
    results = json.loads((settings.eval.reports_dir / run_id / "results.json").read_text())
    cell = results["families"]["knowledge"]["arms"]["lora"]["answer_contained"]
    assert cell["method"].startswith("seed-and-row-bootstrap")  # ...and folded into lora, resampling seeds too
    assert "lora@seed1" not in results["families"]["knowledge"]["arms"]
    assert set(results["data"]["adapters"]["lora"]["groups"]) == {"questions", "behaviour", "questions@seed1",
                                                                  "behaviour@seed1"}  # fmt: skip


def test_freshness_copies_the_index_under_the_index_lock(settings, full_corpus, monkeypatch):
    """A document PUT swaps the index under its lock; the freshness phase's copy must take the same lock, or the
    swap can land mid-copy. The flock is per open file, so a second open of the lock file sees it held."""
    import fcntl
    import os

    import pytest
    from ragft.eval.running import runner

    class Copied(Exception):
        pass

    index_dir = settings.index_dir(full_corpus)
    index_dir.mkdir(parents=True)
    (index_dir / "manifest.json").write_text("{}")
    held: list[bool] = []

    def copytree(src, dst, **kwargs):
        fd = os.open(index_dir.with_name(f"{index_dir.name}.lock"), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held.append(False)
        except BlockingIOError:
            held.append(True)
        finally:
            os.close(fd)
        raise Copied  # the copy is all this test looks at

    class FakeRuntime:
        pass

    fake = FakeRuntime()
    fake.index_dir = index_dir
    monkeypatch.setattr(runner.shutil, "copytree", copytree)
    with pytest.raises(Copied):
        runner._apply_updates(settings, fake, full_corpus)
    assert held == [True]


def test_batches_are_each_arms_rows_in_order_answered_a_family_at_a_time(full_corpus, settings):
    """A batch's answers depend on the prompts in it, so the runner cuts each arm's rows into the batches arm-by-arm
    order always gave (rows_per_batch, in row order) and only reorders whole batches: every arm answers one row
    family before the next family starts, so its figures are ready early."""
    from ragft.eval.running.runner import plan_batches

    settings = settings.model_copy(update={"eval": settings.eval.model_copy(update={"rows_per_batch": 2})})
    chosen = select_rows(load_tasks(full_corpus), ["knowledge", "behaviour", "general"], None, 0)
    rows = [r for rs in chosen.values() for r in rs]
    answerers = [("base", 0), ("rag", 0), ("lora", 0), ("lora", 1)]
    batches = plan_batches(settings, answerers, "main", rows, lambda arm, phase, ids: ids)
    for arm, replicate in answerers:
        mine = [r.id for r in rows if FAMILY_FACTS[r.family].scores(ARMS[arm])]
        cut = [tuple(mine[i : i + 2]) for i in range(0, len(mine), 2)]
        assert [tuple(r.id for r in b.rows) for b in batches if (b.arm, b.replicate) == (arm, replicate)] == cut
    order = list(dict.fromkeys(r.family for r in rows))
    first = [order.index(min((r.family for r in b.rows), key=order.index)) for b in batches]
    assert first == sorted(first) and [b.arm for b in batches[:2]] == ["base", "base"]
    assert {b.arm for b in batches if b.rows[0].family == "knowledge" and b.rows[-1].family == "knowledge"} == {
        "base", "rag", "lora"}  # fmt: skip
    # a resumed run cuts what is missing
    resumed = plan_batches(settings, [("base", 0)], "main", rows, lambda arm, phase, ids: ids[3:])
    assert [r.id for b in resumed for r in b.rows] == [r.id for r in rows][3:]


def test_pending_generated_rows_count_only_with_include_unreviewed_and_the_report_says_so_first(settings, corpus):
    from ragft.eval.reporting.report import render_markdown
    from ragft.eval.running.runner import run_eval
    from ragft.eval.scoring.results import build_results
    from ragft.eval.spec import RunSpec

    generated = {"model": "scripted", "prompt_version": "knowledge-1", "item": "g-1", "source_doc": "kestrel-k2",
                 "span": "The Kestrel K2 router costs $249"}  # fmt: skip
    row = {"id": "gen-1", "family": "knowledge", "split": "test", "kind": "unseen", "question": "What is the K2's price?",
           "answers": ["$249"], "source_docs": ["kestrel-k2"], "generated": generated, "review": {"status": "pending"}}  # fmt: skip
    (corpus / "tasks" / "generated.jsonl").write_text(json.dumps(row) + "\n")
    store = Store(settings.database)
    try:
        reviewed = RunSpec.resolve(settings, corpus, arms=["base"], families=["knowledge"])
        plain = run_eval(settings, reviewed)
        assert "gen-1" not in {p.row_id for p in store.predictions(plain)}
        results = build_results(store, plain, settings)
        assert results["data"]["unreviewed"] is None and results["data"]["rows_by_origin"] == {"written": 1}

        counted = RunSpec.resolve(settings, corpus, arms=["base"], families=["knowledge"], include_unreviewed=True)
        wider = run_eval(settings, counted)
        assert wider != plain and "gen-1" in {p.row_id for p in store.predictions(wider)}
        results = build_results(store, wider, settings)
        assert results["data"]["rows_by_origin"] == {"generated, pending": 1, "written": 1}
        first = render_markdown(results).split("\n")[2]
        assert first.startswith("**Unreviewed rows: 1 of the 2 rows counted were generated and not yet reviewed")
    finally:
        store.close()
