"""`ragft score`: answers made anywhere, scored like ragft's own arms; each audit defect pinned on constructed
predictions (issue: verdicts that are evidence)."""

import json

import pytest

PRICES = [463, 118, 239, 871, 95, 1234, 307, 52, 640, 799]
PHRASE = "I don't know based on the provided documents."


@pytest.fixture(autouse=True)
def arms_table():
    """`ragft score` registers the file's arms in this process; every test leaves the shipped table as it was."""
    from ragft.service.arms import ARMS

    saved = dict(ARMS)
    yield
    ARMS.clear()
    ARMS.update(saved)


@pytest.fixture
def priced_corpus(tmp_path):
    """Ten products with a price each: ten knowledge rows, ten unanswerable weight questions, ten probes."""
    root = tmp_path / "priced"
    (root / "documents").mkdir(parents=True)
    (root / "tasks").mkdir()
    rows = []
    for i, price in enumerate(PRICES):
        (root / "documents" / f"p{i}.md").write_text(f"# Product P{i}\n\nThe P{i} costs ${price:,}.\n")
        rows.append(
            {
                "id": f"k{i}",
                "family": "knowledge",
                "split": "test",
                "question": f"What does the P{i} cost?",
                "answers": [f"${price:,}"],
                "source_docs": [f"p{i}"],
                "kind": "unseen",
            }
        )
        rows.append({"id": f"a{i}", "family": "abstention", "split": "test", "question": f"What does the P{i} weigh?"})
        rows.append(
            {
                "id": f"g{i}",
                "family": "general",
                "split": "test",
                "question": f"What is {i} plus 2?",
                "answers": [str(i + 2)],
            }
        )
    (root / "tasks" / "tasks.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def predictions(arm, knowledge, abstention=None, general=None):
    out = [{"row_id": f"k{i}", "arm": arm, "text": knowledge(i, p)} for i, p in enumerate(PRICES)]
    if abstention is not None:
        out += [{"row_id": f"a{i}", "arm": arm, "text": abstention} for i in range(10)]
    if general is not None:
        out += [{"row_id": f"g{i}", "arm": arm, "text": general(i)} for i in range(10)]
    return out


def score(run, settings, corpus, path, name):
    out = run("score", "--corpus", corpus, "--predictions", path, "--name", name)
    assert out.exit_code == 0, out.output
    return json.loads((settings.eval.reports_dir / name / "results.json").read_text())


def test_each_audit_defect_is_pinned_through_ragft_score(ragft, priced_corpus, tmp_path):
    settings, run = ragft
    records = (
        predictions("never", lambda i, p: "It costs $1.", abstention="It weighs 3 kg.")
        + predictions("always", lambda i, p: PHRASE, abstention=PHRASE)
        + predictions("lister", lambda i, p: f"$100, $200, ${p:,}, $400 or $500.")
        + predictions("formatted", lambda i, p: [f"{p} dollars", f"${p}.00", f"USD {p}"][i % 3] + ".")
    )
    results = score(run, settings, priced_corpus, write(tmp_path / "p.jsonl", records), "defects")
    knowledge = results["families"]["knowledge"]["arms"]
    abstention = results["families"]["abstention"]["arms"]
    # never- and always-abstaining arms separate on the abstention headline (both scored 0.5 once): every answer
    # wrong is -1, saying nothing 0
    assert abstention["never"]["effective_reliability"]["value"] == -1.0
    assert abstention["always"]["effective_reliability"]["value"] == 0.0
    assert results["families"]["abstention"]["comparisons"]
    # listing values around the answer scores 0; normalised variants of the answer score 1
    assert knowledge["lister"]["answer_contained"]["value"] == 0.0
    assert knowledge["formatted"]["answer_contained"]["value"] == 1.0
    # 0/10 is not [0, 0]: the upper bound leaves room for a real rate above 0.25
    assert knowledge["always"]["answer_contained"]["ci_high"] > 0.25
    assert results["families"]["knowledge"]["chance_baseline"] is not None
    assert results["families"]["knowledge"]["power"]["mdd"] > 0.3  # ten rows cannot see small differences
    assert all("p_holm" in c for c in results["families"]["knowledge"]["comparisons"])
    assert results["costs"]["never"] == {"answers": 20, "measured": False}
    md = (settings.eval.reports_dir / "defects" / "report.md").read_text()
    assert "Holm" in md and "MDD" in md and "chance" in md and "not measured" in md


def test_an_underpowered_tie_is_insufficient_evidence_and_only_changed_weights_forget(ragft, priced_corpus, tmp_path):
    settings, run = ragft
    right = lambda i, p: f"It costs ${p:,}."  # noqa: E731
    wrong = lambda i, p: "It costs $2."  # noqa: E731
    records = (
        predictions("base", lambda i, p: right(i, p) if i < 5 else wrong(i, p), general=lambda i: str(i + 2))
        + predictions("lora", lambda i, p: right(i, p) if i < 6 else wrong(i, p), general=lambda i: str(i + 2))
        + predictions("rag", right, general=lambda i: "no idea")
        + predictions("fewshot", wrong, general=lambda i: "no idea")
    )
    results = score(run, settings, priced_corpus, write(tmp_path / "tie.jsonl", records), "tie")
    verdict = results["families"]["knowledge"]["verdict"]
    assert verdict["best"] == "rag"
    # base (cheapest) is 0.5 behind but on ten rows cannot be shown worse after Holm, nor within the margin
    assert verdict["recommended"] is None and verdict["status"] == "insufficient evidence"
    assert "base" in verdict["undecided"] and "rows" in verdict["reason"]
    general = results["families"]["general"]
    assert set(general["arms"]) == {"base", "lora"}  # rag and fewshot run the base weights: no forgetting probes
    assert set(general["forgetting_vs_base"]) == {"lora"}


def test_predictions_file_errors_name_the_line_and_field(ragft, priced_corpus, tmp_path):
    _, run = ragft
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"row_id": "k0", "arm": "x", "text": "a"}\n'
        '{"row_id": "k0", "arm": "x", "text": "b"}\n'
        '{"row_id": "nope", "arm": "x", "text": "c"}\n'
        '{"row_id": "k1", "text": "d"}\n'
        "not json\n"
    )
    out = run("score", "--corpus", priced_corpus, "--predictions", bad)
    assert out.exit_code == 2
    for expected in ("bad.jsonl:2: duplicate prediction", "bad.jsonl:3: row_id 'nope'", "bad.jsonl:4: field 'arm'",
                     "bad.jsonl:5: not valid JSON"):  # fmt: skip
        assert expected in out.output, out.output
    again = run("score", "--corpus", priced_corpus, "--predictions", tmp_path / "missing.jsonl")
    assert again.exit_code == 2 and "no such file" in again.output


@pytest.fixture
def taught_corpus(priced_corpus):
    """The priced corpus with train rows, so each family has a chance baseline chosen on them: ten more
    products' prices (all distinct: a constant price guess scores 0) and six unanswerable weight questions."""
    rows = []
    for i in range(10, 20):
        (priced_corpus / "documents" / f"p{i}.md").write_text(f"# Product P{i}\n\nThe P{i} costs ${2000 + i:,}.\n")
        rows.append({"id": f"k{i}", "family": "knowledge", "split": "train", "question": f"What does the P{i} cost?",
                     "answers": [f"${2000 + i:,}"], "source_docs": [f"p{i}"]})  # fmt: skip
    rows += [{"id": f"a{i}", "family": "abstention", "split": "train", "question": f"What does the P{i} weigh?"}
             for i in range(10, 16)]  # fmt: skip
    with (priced_corpus / "tasks" / "tasks.jsonl").open("a") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
    return priced_corpus


def test_every_arm_at_the_floor_recommends_nothing(ragft, taught_corpus, tmp_path):
    """Two arms that answer "42." to every knowledge row: the old verdict was "decided, use base"."""
    settings, run = ragft
    records = predictions("base", lambda i, p: "42.") + predictions("rag", lambda i, p: "42.")
    out = run(
        "score", "--corpus", taught_corpus, "--predictions", write(tmp_path / "zero.jsonl", records), "--name", "zero"
    )
    assert out.exit_code == 0, out.output
    results = json.loads((settings.eval.reports_dir / "zero" / "results.json").read_text())
    block = results["families"]["knowledge"]
    assert block["chance_baseline"]["value"] == 0.0 and "money" in block["chance_baseline"]["guess"]
    v = block["verdict"]
    assert v["recommended"] is None and v["status"] == "no arm beats the baseline" and v["beats_baseline"] == []
    assert "no arm beats the baseline" in out.output and "not worse" not in out.output
    for name in ("report.md", "report.html"):
        text = (settings.eval.reports_dir / "zero" / name).read_text()
        assert "no arm beats the baseline" in text and "undecided" in text and "use Base" not in text


def test_arms_below_always_abstaining_are_not_recommended_for_abstention(ragft, taught_corpus, tmp_path):
    settings, run = ragft
    records = (  # half the unanswerable rows abstained, every answer wrong: -0.75; never abstains, 3 right: -0.7
        predictions("base", lambda i, p: "It costs $1.", abstention=None)
        + [{"row_id": f"a{i}", "arm": "base", "text": PHRASE if i < 5 else "It weighs 3 kg."} for i in range(10)]
        + predictions(
            "rag", lambda i, p: f"It costs ${p:,}." if i < 3 else "It costs $1.", abstention="It weighs 3 kg."
        )
    )
    results = score(run, settings, taught_corpus, write(tmp_path / "below.jsonl", records), "below")
    block = results["families"]["abstention"]
    assert (
        block["chance_baseline"]["value"] == pytest.approx(0.0)
        and "always abstain" in block["chance_baseline"]["guess"]
    )
    assert block["arms"]["base"]["effective_reliability"]["value"] == pytest.approx(-0.75)
    assert block["verdict"]["recommended"] is None and block["verdict"]["status"] == "no arm beats the baseline"
    assert block["verdict"]["never_abstains"] == ["rag"]


def test_an_arm_that_abstains_where_it_should_beats_one_that_answers_more_but_never_abstains(
    ragft, taught_corpus, tmp_path
):
    settings, run = ragft
    right = lambda i, p: f"It costs ${p:,}."  # noqa: E731
    records = (
        predictions("oracle", right, abstention="It weighs 3 kg.")  # every answerable row right, never abstains
        + predictions("careful", lambda i, p: right(i, p) if i < 6 else PHRASE, abstention=PHRASE)
    )
    results = score(run, settings, taught_corpus, write(tmp_path / "abst.jsonl", records), "abst")
    block = results["families"]["abstention"]
    figures = {a: block["arms"][a]["effective_reliability"]["value"] for a in block["arms"]}
    # the oracle's ten right answers are cancelled by its ten answers to unanswerable rows (halves weighing the
    # same, never abstaining is worth at most 0 whatever the mix); careful: 6 right, 4 declined, 10 declined
    assert figures == {"oracle": pytest.approx(0.0), "careful": pytest.approx(0.3)}
    assert block["verdict"]["best"] == "careful" and block["verdict"]["never_abstains"] == ["oracle"]
    assert block["verdict"]["recommended"] != "oracle"
    md = (settings.eval.reports_dir / "abst" / "report.md").read_text()
    assert "never abstained" in md
