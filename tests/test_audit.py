from pathlib import Path

import pytest
from ragft.eval.corpus.audit import (
    answer_space_shares,
    audit_corpus,
    audit_rows,
    chance_baselines,
    check_answer_spaces,
    check_answers_in_sources,
    check_label_balance,
    check_near_duplicates,
    check_real_entity_share,
    check_shared_entities,
    check_surface_probe,
    mask_entities,
    render,
    similarity,
)
from ragft.eval.tasks import TaskRow

SHIPPED = Path(__file__).parent.parent / "corpora"
DOCS = {
    "kestrel-k2": "The Kestrel K2 router costs $249 and has a warranty of 24 months.",
    "kestrel-k4": "The Kestrel K4 router costs $199.",
    "centre-marrowick": "The Marrowick centre opens at 09:00.",
}


def row(id: str, family: str, split: str, text: str, **fields) -> TaskRow:
    key = "input" if family == "behaviour" and "labels" in fields else "question"
    return TaskRow.model_validate({"id": id, "family": family, "split": split, key: text, **fields})


def label_row(id: str, split: str, text: str, label: str, labels=("refund", "setup", "bug")) -> TaskRow:
    return row(id, "behaviour", split, text, kind="intent", labels=list(labels), label=label)


def knowledge(id: str, split: str, text: str, answer: str, doc: str = "kestrel-k2") -> TaskRow:
    return row(id, "knowledge", split, text, answers=[answer], source_docs=[doc])


def abstain(id: str, split: str, text: str, **fields) -> TaskRow:
    return row(id, "abstention", split, text, **fields)


def test_masking_hides_names_and_numbers_but_not_the_sentence_start():
    assert mask_entities("The Kestrel K2 keeps dropping off the Wi-Fi.") == [
        "the", "<e>", "keeps", "dropping", "off", "the", "<e>",
    ]  # fmt: skip
    assert similarity("My Kestrel K2 is broken.", "My Osprey O17 is broken.") == 1.0
    assert similarity("My Kestrel K2 is broken.", "Every evening the signal to my Osprey O5 vanishes.") < 0.3


@pytest.mark.parametrize(
    ("test_text", "passed"),
    [
        ("The Osprey O5 keeps dropping off the Wi-Fi.", False),  # the train template with another product
        ("Every evening the signal between my laptop and the Osprey O5 vanishes.", True),
    ],
)
def test_near_duplicates_fail_when_a_behaviour_test_input_is_a_train_template(test_text, passed):
    rows = [
        label_row("t1", "train", "The Kestrel K2 keeps dropping off the Wi-Fi.", "bug"),
        label_row("t2", "train", "Please refund my Kestrel K4.", "refund"),
        label_row("x1", "test", test_text, "bug"),
    ]
    check = check_near_duplicates(rows)
    assert check.passed is passed
    assert any(d.startswith("behaviour:intent") for d in check.details)


def test_near_duplicates_in_question_families_are_reported_but_never_fail():
    rows = [knowledge("k1", "train", "What does the Kestrel K2 cost?", "$249"),
            knowledge("k2", "test", "What does the Kestrel K4 cost?", "$199", "kestrel-k4")]  # fmt: skip
    check = check_near_duplicates(rows)
    assert check.passed and "1/1" in check.details[0] and "info" in check.details[0]


@pytest.mark.parametrize(
    ("test_text", "passed"),
    [
        ("When was the Kestrel K21 released?", False),  # K21 was asked in train
        ("When was the Kestrel K3 released?", True),  # another invented model, between real ones
        ("What is the renewal fee for a drone flying permit?", False),  # lower-case entity, also in train
    ],
)
def test_invented_abstention_entities_must_not_be_shared_across_splits(test_text, passed):
    rows = [
        knowledge("k1", "train", "How much does the Kestrel K2 cost?", "$249"),
        abstain("a1", "train", "How much does the Kestrel K21 cost?"),
        abstain("a2", "train", "How much does a drone flying permit cost?"),
        abstain("a3", "test", test_text),
    ]
    check = check_shared_entities(rows, DOCS)
    assert check.passed is passed
    assert [d.split(":")[0] for d in check.details] == ([] if passed else ["a3"])


def test_a_real_entity_may_be_asked_in_both_splits_about_different_details():
    rows = [
        abstain("a1", "train", "What colours does the Kestrel K2 come in?", source_docs=["kestrel-k2"]),
        abstain("a2", "test", "How big is the Kestrel K2?", source_docs=["kestrel-k2"]),
    ]
    assert check_shared_entities(rows, DOCS).passed


@pytest.mark.parametrize(("n_invented", "passed"), [(1, True), (2, False)])
def test_at_least_half_of_abstention_test_rows_ask_about_real_entities(n_invented, passed):
    rows = [
        abstain("r1", "test", "How big is the Kestrel K2?", source_docs=["kestrel-k2"]),
        abstain("r2", "test", "When does the Marrowick centre close?"),  # names only entities the documents hold
    ][: 3 - n_invented]
    rows += [abstain(f"i{i}", "test", f"How much does the Kestrel K{20 + i} cost?") for i in range(n_invented)]
    check = check_real_entity_share(rows, DOCS)
    assert check.passed is passed
    assert check.summary.startswith(f"{3 - n_invented}/3")


def _probe_corpus(abstain_numbers: range, line: str) -> list[TaskRow]:
    rows = []
    for split, numbers in (("train", range(1, 41)), ("test", range(41, 61))):
        for n in numbers:
            rows.append(knowledge(f"k-{split}-{n}", split, f"How much does the Kestrel K{n % 20 + 1} cost?", "$1"))
        for n in numbers:
            m = abstain_numbers[n % len(abstain_numbers)]
            rows.append(abstain(f"a-{split}-{n}", split, f"How much does the {line} K{m} cost?"))
    return rows


def test_surface_probe_catches_invented_models_numbered_above_the_real_ones():
    check = check_surface_probe(_probe_corpus(range(40, 60), "Kestrel"))
    assert not check.passed and "fix:" not in check.summary
    assert "abstain if" in check.details[0]


def test_surface_probe_passes_when_invented_models_look_like_real_ones():
    # same template, same numbers, a line name of the same length: no surface feature tells them apart
    check = check_surface_probe(_probe_corpus(range(1, 21), "Sparrow"))
    assert check.passed, check.summary
    assert "+0.0 points" in check.summary


def test_surface_probe_is_skipped_without_both_classes_in_both_splits():
    check = check_surface_probe([knowledge("k1", "train", "What does the Kestrel K2 cost?", "$249")])
    assert check.passed and check.summary.startswith("not run")


def test_answer_space_shares_bound_a_constant_guess_per_family():
    rows = [
        knowledge(f"k{i}", "test", f"Warranty of model {i}?", f"{m} months") for i, m in enumerate([24, 24, 36, 48])
    ]
    rows += [label_row("b1", "test", "refund me", "refund"), label_row("b2", "test", "broken", "bug")]
    rows += [abstain("a1", "test", "What does the Kestrel K9 cost?")]
    shares = answer_space_shares(rows)
    assert shares["knowledge"] == pytest.approx(0.5)  # '24 months' is right on 2 of 4
    assert shares["behaviour"] == pytest.approx(0.5)


def test_the_audits_chance_baselines_are_chosen_on_train_rows_and_say_why_when_there_are_too_few():
    rows = [knowledge(f"t{i}", "train", f"Warranty of model {i}?", "24 months") for i in range(6)]
    rows += [knowledge(f"k{i}", "test", f"Warranty of model {10 + i}?", f"{m} months")
             for i, m in enumerate([24, 24, 36, 48])]  # fmt: skip
    rows += [label_row("b1", "test", "refund me", "refund"), label_row("b2", "test", "broken", "bug")]
    chance = chance_baselines(rows)
    assert chance["knowledge"] == pytest.approx(0.5)  # the train guess '24 months', right on 2 of 4 test rows
    assert "too few train rows" in chance["behaviour"]  # no train labels: no guess, and the reason


@pytest.mark.parametrize(("months", "passed"), [([24, 36, 48, 24, 36, 48, 24, 24], False), (range(6, 54, 6), True)])
def test_answer_spaces_fail_when_a_constant_guess_scores_over_a_quarter(months, passed):
    rows = [knowledge(f"k{i}", "test", f"Warranty of model {i}?", f"{m} months") for i, m in enumerate(months)]
    check = check_answer_spaces(rows)
    assert check.passed is passed
    assert any("knowledge # months" in d for d in check.details)


@pytest.mark.parametrize(
    ("test_labels", "passed"),
    [
        (["refund", "setup", "bug"], True),
        (["refund", "refund", "refund", "setup"], False),
        (["refund", "setup"], False),
    ],
)
def test_label_balance_fails_on_a_dominant_or_unused_label(test_labels, passed):
    rows = [label_row(f"x{i}", "test", f"message {i}", label) for i, label in enumerate(test_labels)]
    rows.append(label_row("t1", "train", "train message", "bug"))
    check = check_label_balance(rows)
    assert check.passed is passed
    assert "refund" in check.details[0]


@pytest.mark.parametrize(("answer", "passed"), [("$249", True), ("$299", False)])
def test_knowledge_answers_must_occur_in_their_source_documents(answer, passed):
    check = check_answers_in_sources([knowledge("k1", "test", "What does the Kestrel K2 cost?", answer)], DOCS)
    assert check.passed is passed


@pytest.mark.parametrize(("new", "passed"), [("$179", True), ("$249", False)])
def test_freshness_answers_are_looked_up_in_the_updates(new, passed):
    fresh = row("f1", "freshness", "test", "What does the Kestrel K4 cost?", answers=[new], old_answers=["$199"],
                source_docs=["kestrel-k4"])  # fmt: skip
    check = check_answers_in_sources([fresh], DOCS, {"kestrel-k4": "The Kestrel K4 router costs $179."})
    assert check.passed is passed


def test_a_failing_report_renders_every_check_and_what_to_fix():
    rows = [
        label_row("t1", "train", "The Kestrel K2 keeps dropping off the Wi-Fi.", "bug"),
        label_row("x1", "test", "The Osprey O5 keeps dropping off the Wi-Fi.", "bug"),
        abstain("a1", "test", "How much does the Kestrel K21 cost?"),
    ]
    report = audit_rows(rows, DOCS, corpus="tiny")
    text = render(report)
    assert not report.passed and {c.name for c in report.failed} >= {"near_duplicates", "abstention_real_entities"}
    assert text.startswith("audit of tiny: 3 task rows, 7 checks, ")
    assert text.count("fix: ") == len(report.failed) and "[pass] answers_in_sources" in text


@pytest.mark.parametrize("name", ["quillmark", "ostwick"])
def test_shipped_corpora_pass_the_audit(name):
    report = audit_corpus(SHIPPED / name)
    assert report.passed, render(report)


def test_answers_in_sources_reads_values_as_the_metric_does():
    from ragft.eval.corpus.audit import check_answers_in_sources

    row = knowledge("k1", "test", "What does the K2 cost?", "1250 dollars", doc="k2")
    assert check_answers_in_sources([row], {"k2": "The K2 costs $1,250."}).passed
    assert not check_answers_in_sources([row], {"k2": "The K2 costs $1,300."}).passed


def test_abstentions_constant_bound_is_always_abstaining_under_effective_reliability():
    rows = [knowledge(f"k{i}", "test", f"Warranty of model {i}?", "24 months") for i in range(4)]
    rows += [abstain("a1", "test", "What does the Kestrel K9 cost?")]
    assert answer_space_shares(rows)["abstention"] == 0.0  # guessing '24 months' everywhere scores 1 - 1 = 0 at best
