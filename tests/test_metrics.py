"""Each metric pinned on cases computed by hand."""

import json
from pathlib import Path

import pytest
from ragft.eval.scoring.metrics import METRICS, ScoringContext, headline, report_families
from ragft.eval.scoring.metrics.abstention import Outcome, abstained, outcome
from ragft.eval.scoring.metrics.behaviour import (
    field_accuracy,
    macro_f1,
    parse_json,
    predicted_label,
    schema_valid,
    style_ok,
    template_cluster,
)
from ragft.eval.scoring.metrics.knowledge import (
    answer_contained,
    answer_sentences,
    corpus_answers,
    exact_match,
    token_f1,
)
from ragft.eval.scoring.metrics.values import short_answer
from ragft.eval.store import Prediction, StoredPassage
from ragft.eval.tasks import TaskRow
from ragft.service.prompts import build_messages
from ragft.service.retrieval import Passage

PHRASE = "I don't know based on the provided documents."
CTX = ScoringContext(PHRASE)


def pred(text, passages=(), arm="rag"):
    stored = tuple(StoredPassage(f"{d}#0", d, t) for d, t in passages)
    return Prediction(arm, "r", "main", text, stored, 10, 5, 100.0, 2.0, 4)


def row(**kw):
    base = {"id": "r", "family": "knowledge", "split": "test", "question": "q?", "answers": ["$249"]}
    return TaskRow.model_validate(base | kw)


@pytest.mark.parametrize(
    ("fn", "prediction", "answers", "expected"),
    [
        (exact_match, "The $249.", ["$249"], 1.0),
        (exact_match, "USD 249.00", ["$249"], 1.0),
        (exact_match, "It costs $249", ["$249"], 0.0),
        (answer_contained, "It costs $249, I think.", ["$249"], 1.0),
        (answer_contained, "It costs $2490", ["$249"], 0.0),
        (answer_contained, "Version 4.12.3 is current", ["4.12.3"], 1.0),
        (
            token_f1,
            "the price is 463 dollars",
            ["463 dollars"],
            2 * (1 / 3) * 1 / (1 / 3 + 1),
        ),  # "463 dollars": 1 token
        (token_f1, "nothing relevant", ["463 dollars"], 0.0),
    ],
)
def test_string_metrics(fn, prediction, answers, expected):
    assert fn(prediction, answers) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("reply", "answer"),
    [
        ("463 dollars", "$463"), ("$463.00", "$463"), ("USD 463", "$463"), ("It is 463 USD.", "$463"),
        ("It costs 163 pounds.", "£163"), ("1,234 g", "1234g"), ("1234g", "1,234 g"), ("It weighs 995 grams.", "995 g"),
        ("8:30", "08:30"), ("It opens at 8:30 a.m.", "08:30"), ("Doors open at 7pm.", "19:00"),
        ("15 percent", "15%"), ("A 15% fee applies.", "15 percent"), ("2 years", "24 months"),
        ("It has a 24-month warranty.", "2 years"), ("Firmware v7.12.2.", "7.12.2"), ("Feb. 2023", "February 2023"),
        ("It was released on February 14, 2023.", "February 2023"), ("Call 555-1721.", "+1-555-1721"),
        ("3-5 business days", "3 to 5 business days"), ("24", "twenty-four"), ("Water freezes at 0 degrees Celsius.", "0°C"),
        ("The limit is 40 mph.", "40"), ("It is closed on Saturdays.", "Saturday"), ("Use Form QW-7.", "form QW-7"),
        ("The Heron H18.", "Heron H18"), ("The radio module is overheating.", "the radio module is overheating"),
    ],
)  # fmt: skip
def test_normalised_variants_score_one(reply, answer):
    assert answer_contained(reply, [answer]) == 1.0


@pytest.mark.parametrize(
    ("reply", "answer"),
    [
        ("$100, $200, $300, $400, $463 or $500", "$463"),  # listing candidates
        ("100, 200, 300, 400, 463 or 500 dollars", "$463"),  # bare numbers are candidates for a price
        ("12 or 24 months", "24 months"), ("It is either 12 months or 2 years.", "24 months"),
        ("08:30 or 09:00", "08:30"), ("7.12.2 or 7.12.3", "7.12.2"), ("Monday to Saturday", "Saturday"),
        ("It costs $2490.", "$249"), ("24 weeks", "24 months"), ("8:30 pm", "08:30"),
        ("It is the Kestrel K2. It costs $463 and weighs 1 kg.", "$463"),  # the answer only after the first sentence
        ("Heron H10 or Heron H18", "Heron H18"),  # rival phrases from the corpus (below)
    ],
)  # fmt: skip
def test_guessing_and_buried_answers_score_zero(reply, answer):
    space = ("Heron H10", "Heron H11", "Heron H18", "$463", "24 months")
    assert answer_contained(reply, [answer], space) == 0.0


@pytest.mark.parametrize(
    ("reply", "answer"),
    [
        ("It is not $463.", "$463"), ("The price isn't $463.", "$463"), ("It doesn't cost 463 dollars.", "$463"),
        ("Never $463.", "$463"), ("There is no 24-month warranty.", "24 months"), ("It is not Paris.", "Paris"),
        ("It is not the Heron H18.", "Heron H18"),
    ],
)  # fmt: skip
def test_a_negated_answer_scores_zero(reply, answer):
    """Issue 33: "It is not $463." scored 1 on knowledge."""
    assert answer_contained(reply, [answer]) == 0.0


@pytest.mark.parametrize(
    ("reply", "answer"),
    [
        ("Paris or Marseille", "Paris"), ("Either Paris or maybe Lyon.", "Paris"), ("Paris, Lyon or Marseille.", "Paris"),
        ("It was built at Swindon Works or Crewe Works.", "Swindon Works"), ("Blue or green.", "blue"),
        ("It means the battery cell is out of balance or the fuse has blown.", "the battery cell is out of balance"),
        ("Marseille or Paris.", "Paris"), ("The Heron H18/Heron H12.", "Heron H18"),
    ],
)  # fmt: skip
def test_offering_alternatives_no_document_names_scores_zero(reply, answer):
    """Issue 33: "Paris or Marseille" scored 1 when Marseille is in no document (so not among the rival answers)."""
    assert answer_contained(reply, [answer], ("Paris", "Heron H18", "blue")) == 0.0


@pytest.mark.parametrize(
    ("reply", "answer"),
    [
        ("No, it costs $463.", "$463"), ("It cannot exceed 40 mph.", "40"), ("It does not open before 08:30.", "08:30"),
        ("The temperature sensor is not responding.", "the temperature sensor is not responding"),
        ("Paris, or so I think.", "Paris"), ("The sky is blue, or so they say.", "blue"), ("It is $463 or so.", "$463"),
        ("Cash or card.", "cash or card"),  # the answer's own "or"
        ("Masterman Ready, or the Wreck of the Pacific, is a novel by Frederick Marryat.", "Frederick Marryat"),
        ("P. D. Ouspensky wrote it.", "P. D. Ouspensky"),  # initials end no sentence
    ],
)  # fmt: skip
def test_bounds_fillers_and_other_ors_still_name_the_answer(reply, answer):
    assert answer_contained(reply, [answer]) == 1.0


def test_two_accepted_answers_side_by_side_are_no_hedge():
    """The rule fails a reply that offers candidates when one is accepted; where both are, naming both is right."""
    assert answer_contained("Paris or Marseille", ["Paris", "Marseille"]) == 1.0
    assert answer_contained("Heron H10 or Heron H18", ["Heron H18", "Heron H10"], ("Heron H10", "Heron H18")) == 1.0
    assert answer_contained("Heron H10 or Heron H18", ["Heron H18"], ("Heron H10", "Heron H18")) == 0.0


def test_no_answer_bearing_document_sentence_reads_as_negated_or_hedged():
    """A reply that quotes its document names the answer: no answer-bearing sentence of the shipped corpora (1,169,
    titles with "or" in them included) reads as negating its answer or offering an alternative to it."""
    from ragft.eval.scoring.metrics.knowledge import _asserted, _offers_alternative
    from ragft.eval.scoring.metrics.values import canonical, single_value
    from ragft.eval.tasks import load_tasks
    from ragft.service.documents import load_documents

    checked = 0
    for corpus in ("quillmark", "ostwick", "entityq"):
        folder = Path(__file__).parents[1] / "corpora" / corpus
        rows = load_tasks(folder)
        docs = {d.doc_id: d.text for d in load_documents(folder / "documents")}
        for r in (r for r in rows if r.family == "knowledge"):
            for sentence in (s for d in r.source_docs for s in answer_sentences(docs.get(d, ""), r.answers)):
                for answer in r.answers:
                    gold = single_value(answer)
                    if gold is not None:
                        assert _asserted(
                            sentence, lambda v, gold=gold: v.same(gold), None
                        ) or gold.token not in canonical(sentence)
                    elif f" {canonical(answer)} " in f" {canonical(sentence)} ":
                        assert _asserted(sentence, None, canonical(answer)), (sentence, answer)
                        assert not _offers_alternative(sentence, answer), (sentence, answer)
                checked += 1
    assert checked > 1000


def test_short_answer_is_the_first_sentence():
    assert short_answer("The K2 costs $249. It weighs 1 kg.") == "The K2 costs $249."
    assert short_answer("Answer:\nIt opens at 8 a.m. on weekdays.") == "Answer: It opens at 8 am on weekdays."
    long = "The Kestrel range spans many models and prices. " * 3 + "The K2 costs $249."
    assert answer_contained(long, ["$249"]) == 0.0


@pytest.mark.parametrize("corpus", ["quillmark", "ostwick", "entityq"])
def test_every_reference_answer_scores_one_against_its_corpus(corpus):
    from ragft.eval.tasks import load_tasks

    rows = load_tasks(Path(__file__).parents[1] / "corpora" / corpus)
    ctx = ScoringContext(PHRASE, corpus_answers=corpus_answers(rows))
    for r in rows:
        top = {"knowledge": "answer_contained", "freshness": "new_answer_rate", "general": "general_accuracy"}
        if r.family in top:
            assert METRICS[top[r.family]].score(r, pred(r.answers[0]), ctx) == 1.0, (r.id, r.answers[0])
            assert not abstained(r.answers[0], PHRASE), r.id
        if r.family == "behaviour" and r.style is not None and r.answers:
            assert METRICS["behaviour_pass"].score(r, pred(r.answers[0]), ctx) == 1.0, r.id


def test_rival_phrases_come_from_the_corpus_answers_of_the_same_shape():
    rows = [row(id="a", answers=["Heron H10"]), row(id="b", answers=["Heron H18"]), row(id="c", answers=["$9"])]
    ctx = ScoringContext(PHRASE, corpus_answers=corpus_answers(rows))
    assert ctx.corpus_answers["knowledge"] == ("$9", "Heron H10", "Heron H18")
    score = METRICS["answer_contained"].score
    assert score(rows[1], pred("The Heron H18 dock."), ctx) == 1.0
    assert score(rows[1], pred("The Heron H18 dock, not the Heron H10."), ctx) == 0.0
    assert score(rows[1], pred("The Heron H18 dock costs $9."), ctx) == 1.0  # a price is no rival to a dock


def test_knowledge_is_split_into_paraphrase_and_unseen():
    para, unseen = row(kind="paraphrase"), row(kind="unseen")
    assert METRICS["answer_contained_paraphrase"].score(para, pred("$249"), CTX) == 1.0
    assert METRICS["answer_contained_paraphrase"].score(unseen, pred("$249"), CTX) is None
    assert METRICS["answer_contained_unseen"].score(unseen, pred("$9"), CTX) == 0.0


def test_ragas_string_metrics_run_for_real():
    r = row(answers=["the k2 costs $249"])
    assert METRICS["rouge_l"].score(r, pred("the k2 costs $249"), CTX) == pytest.approx(1.0)
    assert METRICS["rouge_l"].score(r, pred("unrelated words"), CTX) == 0.0
    same = METRICS["string_similarity"].score(r, pred("the k2 costs $249"), CTX)
    near = METRICS["string_similarity"].score(r, pred("the k2 costs $248"), CTX)
    assert same == pytest.approx(1.0) and 0.9 < near < 1.0  # one edit in 17 characters
    embed = lambda texts: [[1.0, 0.0] if "249" in t else [0.0, 1.0] for t in texts]  # noqa: E731
    ctx = ScoringContext(PHRASE, embed=embed)
    assert METRICS["semantic_similarity"].score(r, pred("it is 249"), ctx) == pytest.approx(1.0)
    assert METRICS["semantic_similarity"].score(r, pred("no idea"), ctx) == pytest.approx(0.0)


def test_retrieval_metrics_use_source_docs():
    r = row(source_docs=["k2"])
    p = pred("x", [("k9", "a"), ("k2", "The K2 costs $249."), ("k2", "b")])
    assert METRICS["recall_at_k"].score(r, p, CTX) == 1.0
    assert METRICS["mrr"].score(r, p, CTX) == pytest.approx(0.5)
    assert METRICS["mrr"].score(r, pred("x", [("k9", "a")]), CTX) == 0.0
    gold = answer_sentences("Intro line. The K2 costs $249. It is blue.", ["$249"])
    assert gold == ["The K2 costs $249."]
    ctx = ScoringContext(PHRASE, gold_contexts={"r": gold})
    assert METRICS["context_recall"].score(r, p, ctx) == 1.0
    long = pred("x", [("k2", "The K2 is a router. " * 20 + "The K2 costs $249. It ships in May.")])
    assert METRICS["context_recall"].score(r, long, ctx) == 1.0  # the gold sentence inside a long passage
    assert METRICS["context_recall"].score(r, pred("x", [("k9", "Unrelated text about cameras.")]), ctx) == 0.0


def test_json_schema_and_fields():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string"}}, "required": ["a"]}
    r = row(
        family="behaviour", answers=[], input="x", question=None, schema=schema, expected={"a": 1, "b": "x", "c": 2}
    )
    assert parse_json('```json\n{"a": 1, "b": "y"}\n```') == {"a": 1, "b": "y"}
    assert parse_json("no json {here") is None
    assert schema_valid(r, pred('{"a": 1}'), CTX) == 1.0
    assert schema_valid(r, pred('{"a": "one"}'), CTX) == 0.0
    assert field_accuracy(r, pred('{"a": 1, "b": "x", "c": 3}'), CTX) == pytest.approx(2 / 3)
    assert METRICS["behaviour_pass"].score(r, pred('{"a": 1, "b": "x", "c": 2}'), CTX) == 1.0
    assert METRICS["behaviour_pass"].score(r, pred('{"a": 1, "b": "x"}'), CTX) == 0.0


TICKET_SCHEMA = {"type": "object", "properties": {"category": {"type": "string"}}, "required": ["category"]}


@pytest.mark.parametrize(
    ("reply", "passes"),
    [
        ('{"category": "billing"}', True), ('  {"category": "billing"}\n', True),
        ('```json\n{"category": "billing"}\n```', True), ('```\n{"category": "billing"}\n```', True),
        ('Sure! Here is the JSON: {"category": "billing"}', False),  # the first object anywhere passed before
        ('```json\n{"category": "billing"}\n```\nLet me know if you need more.', False),
        ('{"category": "billing"} {"category": "returns"}', False), ('[{"category": "billing"}]', False),
        ('The ticket is about billing, so {"category": "billing"}.', False),
    ],
)  # fmt: skip
def test_the_json_object_must_be_the_reply(reply, passes):
    """Issue 33: behaviour passed the first JSON object anywhere in a chatty reply."""
    r = row(
        family="behaviour", answers=[], input="x", question=None, schema=TICKET_SCHEMA, expected={"category": "billing"}
    )
    assert METRICS["behaviour_pass"].score(r, pred(reply), CTX) == float(passes)
    assert METRICS["json_valid"].score(r, pred(reply), CTX) == float(passes)


@pytest.mark.parametrize(
    ("reply", "label"),
    [
        ("billing", "billing"), ("Billing.", "billing"), ("**billing**", "billing"), ("Label: billing", "billing"),
        ("The category is billing.", "billing"), ("billing - the customer was charged twice", "billing"),
        ("`refund request`", "refund_request"), ("Billing department.", "billing"), ("Classification: billing", "billing"),
        ("My billing statement shows the wrong amount for my order.", None),  # the input repeated
        ("Input: My billing statement shows the wrong amount for my order.\nbilling", None),
        ("billing\nshipping", None), ("billing, shipping or refund_request", None),  # listing is not choosing
        ("I think this is billing", None), ("This ticket is about billing.", None),
    ],
)  # fmt: skip
def test_the_label_must_be_the_reply_not_an_echo(reply, label):
    """Issue 33: a label echoed from the input passed (the one label word the reply mentioned counted)."""
    labels = ["billing", "shipping", "refund_request"]
    ticket = "My billing statement shows the wrong amount for my order."
    assert predicted_label(reply, labels, ticket) == label
    r = row(family="behaviour", answers=[], input=ticket, question=None, labels=labels, label="billing")
    assert METRICS["behaviour_pass"].score(r, pred(reply), CTX) == float(label == "billing")


def test_a_style_without_rules_is_refused_and_never_passes():
    """Issue 33: a style row without rules always passed."""
    from pydantic import ValidationError

    for empty in ({}, {"cite_source": False}):
        with pytest.raises(ValidationError, match="'style' needs a rule"):
            row(family="behaviour", answers=["Yes."], style=empty)
    assert style_ok("anything at all", {}, []) == 0.0
    assert style_ok("Yes.", {"first_word_in": ["Yes"]}, []) == 1.0


def test_rows_from_one_template_share_a_cluster_key():
    """Issue 33: ticket_json rows from ~10 templates counted as 40 independent rows."""
    from ragft.eval.tasks import load_tasks

    rows = load_tasks(Path(__file__).parents[1] / "corpora" / "quillmark")
    test = [r for r in rows if r.family == "behaviour" and r.split == "test"]
    keys = {kind: {template_cluster(r.kind, r.text) for r in test if r.kind == kind} for kind in {r.kind for r in test}}
    assert {k: len(v) for k, v in keys.items()} == {"ticket_json": 10, "intent_label": 15, "house_style": 5}
    # the same template with another product and another priority cue: one key
    a = template_cluster(
        "ticket_json", "Take your time with this one. Out of the box, my Heron H4 smells of burning plastic."
    )
    b = template_cluster(
        "ticket_json",
        "Drop everything: we need help immediately! Out of the box, my Sparrow S12 smells of burning plastic.",
    )
    assert a == b != template_cluster("intent_label", "Out of the box, my Heron H4 smells of burning plastic.")


def test_labels_and_macro_f1():
    assert predicted_label("Category: billing.", ["billing", "shipping"]) == "billing"
    assert predicted_label("shipping", ["billing", "shipping"]) == "shipping"
    assert predicted_label("no idea", ["billing", "shipping"]) is None
    assert predicted_label("billing or shipping", ["billing", "shipping"]) is None  # listing is not choosing
    # label a: tp 1, fp 0, fn 1 -> F1 2/3; label b: tp 2, fp 1, fn 0 -> F1 4/5; macro = (2/3 + 4/5) / 2
    assert macro_f1([("a", "a"), ("a", "b"), ("b", "b"), ("b", "b")]) == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert macro_f1([("a", "<none>")]) == 0.0


def test_label_accuracy_and_macro_f1_read_the_same_label():
    labels = ["refund_request", "complaint"]
    r = row(family="behaviour", answers=[], input="x", question=None, labels=labels, label="refund_request")
    for text, right in [("Label: refund_request", 1.0), ("refund_request", 1.0), ("complaint", 0.0),
                        ("refund_request or complaint", 0.0)]:  # fmt: skip
        p = pred(text)
        assert METRICS["label_accuracy"].score(r, p, CTX) == right
        assert (METRICS["label_macro_f1"].score(r, p, CTX)[1] == "refund_request") == bool(right)
        assert METRICS["behaviour_pass"].score(r, p, CTX) == right


def test_house_style_checks_the_verdict_word():
    rules = {"max_words": 25, "first_word_in": ["Yes", "No", "Partly"], "cite_source": True}
    r = row(family="behaviour", answers=["No, its warranty lasts 12 months. [lark-l1]"], source_docs=["lark-l1"],
            style=rules)  # fmt: skip
    assert METRICS["style_compliance"].score(r, pred("No, it lasts 12 months. [lark-l1]"), CTX) == 1.0
    assert METRICS["style_compliance"].score(r, pred("Yes, it lasts 12 months. [lark-l1]"), CTX) == 0.0
    assert METRICS["behaviour_pass"].score(r, pred("Yes, it lasts 12 months. [lark-l1]"), CTX) == 0.0
    no_reference = row(family="behaviour", answers=[], source_docs=["lark-l1"], style=rules)
    assert METRICS["style_compliance"].score(no_reference, pred("Yes, it does. [lark-l1]"), CTX) == 1.0


def test_rag_prompt_for_instruction_tasks_neither_restricts_nor_abstains():
    passages = [Passage("k2#0", "k2", "The K2 costs $249.", 1.0, 0, 18)]
    task = build_messages("Ticket text", instruction="Reply with JSON.", passages=passages, abstention_phrase=PHRASE)
    system = task[0]["content"]
    assert PHRASE not in system and "only" not in system and "The K2 costs $249." in system
    assert task[-1]["content"] == "Reply with JSON.\n\nTicket text"
    question = build_messages("What does the K2 cost?", passages=passages, abstention_phrase=PHRASE)[0]["content"]
    assert PHRASE in question and "only the passages" in question


@pytest.mark.parametrize(
    ("text", "rules", "expected"),
    [
        ("Yes, it pairs with the dock. [tern-t14]", {"max_words": 25, "first_word_in": ["Yes", "No"], "cite_source": True}, 1.0),
        ("It pairs with the dock. [tern-t14]", {"first_word_in": ["Yes", "No"]}, 0.0),
        ("Yes, " + "word " * 30, {"max_words": 25}, 0.0),
        ("Yes, it pairs. [other-doc]", {"cite_source": True}, 0.0),
        ("Yes, it pairs.", {"cite_source": True}, 0.0),
    ],
)  # fmt: skip
def test_style_rules(text, rules, expected):
    assert style_ok(text, rules, ["tern-t14"]) == expected


@pytest.mark.parametrize(
    ("reply", "abstains"),
    [
        ("The passages do not contain the answer.", True), ("I'm not sure.", True),
        ("The documents don't mention the K20's weight.", True), ("That is not in the provided documents.", True),
        ("The K20 costs $249. I do not know its weight.", False), ("No, it does not support the H9 dock.", False),
        ("I'm not sure, but it costs $249.", False), ("Sorry. The documents do not say.", True),
    ],
)  # fmt: skip
def test_abstention_detector_on_the_issue_cases(reply, abstains):
    assert abstained(reply, PHRASE) == abstains


def test_abstention_detector_precision_and_recall_on_labelled_replies():
    rows = [json.loads(line) for line in (Path(__file__).parent / "data" / "abstention_replies.jsonl").open()]
    assert len(rows) >= 80 and 0.3 < sum(r["abstains"] for r in rows) / len(rows) < 0.7
    said = [(abstained(r["reply"], PHRASE), r["abstains"]) for r in rows]
    tp = sum(got and gold for got, gold in said)
    precision = tp / sum(got for got, _ in said)
    recall = tp / sum(gold for _, gold in said)
    print(f"abstention detector on {len(rows)} labelled replies: precision {precision:.3f}, recall {recall:.3f}")
    assert precision >= 0.95 and recall >= 0.95


def test_three_outcomes_per_answer():
    unanswerable, answerable = row(family="abstention", answers=[]), row()
    assert outcome(answerable, pred("$249"), CTX) is Outcome.CORRECT
    assert outcome(answerable, pred("$9"), CTX) is Outcome.WRONG
    assert outcome(answerable, pred(PHRASE), CTX) is Outcome.ABSTAINED
    assert outcome(unanswerable, pred("$9"), CTX) is Outcome.WRONG
    assert outcome(unanswerable, pred("I'm not sure."), CTX) is Outcome.ABSTAINED


def _family_figures(replies: dict[str, str]) -> dict[str, float]:
    """Each abstention metric's mean over two unanswerable and two answerable rows."""
    rows = [row(id="u1", family="abstention", answers=[]), row(id="u2", family="abstention", answers=[]),
            row(id="a1", answers=["$249"]), row(id="a2", answers=["$9"])]  # fmt: skip
    out = {}
    for metric in (m for m in METRICS.values() if m.family == "abstention"):
        values = [v for r in rows if (v := metric.score(r, pred(replies.get(r.id, PHRASE)), CTX)) is not None]
        out[metric.name] = sum(values) / len(values) if values else None
    return out


def test_never_and_always_abstaining_arms_separate():
    always = _family_figures({})
    never_right = _family_figures({"u1": "$5", "u2": "$7", "a1": "$249", "a2": "$9"})
    never_wrong = _family_figures({"u1": "$5", "u2": "$7", "a1": "$1", "a2": "$2"})
    ideal = _family_figures({"a1": "$249", "a2": "$9"})
    # row means here (two rows per half, so balanced and row-weighted agree): +1 right, 0 declined, -1 wrong
    assert always["effective_reliability"] == 0.0 and never_right["effective_reliability"] == 0.0
    assert never_wrong["effective_reliability"] == -1.0 and ideal["effective_reliability"] == 0.5
    assert always["coverage_answerable"] == 0.0 and never_right["coverage_unanswerable"] == 1.0
    assert always["selective_accuracy"] is None and never_wrong["selective_accuracy"] == 0.0
    assert never_wrong["hallucination_rate"] == 1.0 and never_right["hallucination_rate"] == 0.5
    assert always["hallucination_rate"] == 0.0 and never_wrong["hallucination_rate_answerable"] == 1.0


def test_declining_an_answerable_row_is_not_scored_like_a_hallucination():
    """Issue 33: declining an answerable row scored 0, like a wrong answer. Three-way now: right > declined > wrong."""
    score = METRICS["effective_reliability"].score
    answerable, unanswerable = row(), row(family="abstention", answers=[])
    right, declined, wrong = (score(answerable, pred(t), CTX) for t in ("$249", PHRASE, "$9"))
    assert right > declined > wrong and (right, declined, wrong) == (1.0, 0.0, -1.0)
    assert score(unanswerable, pred(PHRASE), CTX) == 0.0 and score(unanswerable, pred("$9"), CTX) == -1.0
    # an arm that declines the answerable rows it would get wrong beats one that answers them wrongly
    careful = _family_figures({"a1": "$249"})  # a2 declined
    reckless = _family_figures({"a1": "$249", "a2": "$2"})
    assert careful["effective_reliability"] > reckless["effective_reliability"]


def test_always_abstaining_scores_zero_and_an_arm_beats_it_by_net_right_answers():
    """Issue 33: always abstaining scored exactly 0.5 by construction, so beating it needed abstention rate plus
    knowledge accuracy past 1. Now it scores 0 (saying nothing) and an arm with a few more right answers than
    wrong ones beats it, whatever its accuracy."""
    from ragft.eval.scoring.metrics import balanced

    metric = METRICS["effective_reliability"]
    rows = {f"k{i}": row(id=f"k{i}") for i in range(20)} | {
        f"a{i}": row(id=f"a{i}", family="abstention", answers=[]) for i in range(20)
    }

    def figure(replies: dict[str, str]) -> float:
        values = {i: metric.score(r, pred(replies.get(i, PHRASE)), CTX) for i, r in rows.items()}
        weighted = balanced(metric, values, rows)
        return sum(weighted.values()) / len(weighted)

    assert figure({}) == 0.0
    # 30% right, 10% wrong, the rest declined, every unanswerable row declined: 0.5 * (6 - 2) / 20 = 0.1 above
    # always abstaining; two hallucinations on unanswerable rows take 0.05 of it back
    modest = {f"k{i}": "$249" for i in range(6)} | {f"k{i}": "$9" for i in range(6, 8)}
    assert figure(modest) == pytest.approx(0.5 * (6 - 2) / 20)
    assert figure(modest | {"a0": "$5", "a1": "$6"}) == pytest.approx(0.5 * (6 - 2) / 20 - 0.5 * 2 / 20)


def test_freshness_new_versus_stale():
    r = row(family="freshness", answers=["$179"], old_answers=["$199"])
    assert METRICS["new_answer_rate"].score(r, pred("now $179"), CTX) == 1.0
    assert METRICS["stale_answer_rate"].score(r, pred("still $199"), CTX) == 1.0
    assert METRICS["stale_answer_rate"].score(r, pred("$179, was $199"), CTX) == 0.0
    assert METRICS["new_answer_rate"].score(r, pred("$179 or $199"), CTX) == 0.0  # naming both is not knowing
    # denying the old value is not believing it (both scored 1 as stale before)
    assert METRICS["stale_answer_rate"].score(r, pred("It no longer costs $199."), CTX) == 0.0
    assert METRICS["stale_answer_rate"].score(r, pred("It isn't $199 any more."), CTX) == 0.0


def test_every_family_names_a_headline_of_its_own():
    from ragft.eval.families import FAMILIES

    for family in report_families():
        assert FAMILIES[family].headline in METRICS  # the family entry names its deciding metric
        assert headline(family).family == family


class FakeJudge:
    """A ragas instructor LLM that fills any requested response model, every verdict set to `verdict`
    (the role ragas' own tests give EchoLLM); lets the judge wiring run without an endpoint."""

    def __new__(cls, verdict: int):
        import typing

        from pydantic import BaseModel
        from ragas.llms.base import InstructorBaseRagasLLM

        def fill(model):
            values = {}
            for name, field in model.model_fields.items():
                values[name] = value_for(field.annotation)
            return model.model_validate(values)

        def value_for(annotation):
            origin, args = typing.get_origin(annotation), typing.get_args(annotation)
            if origin in (list, typing.List):  # noqa: UP006
                return [value_for(args[0])]
            if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
                return value_for(next(a for a in args if a is not type(None)))
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                return fill(annotation)
            if annotation is int:
                return verdict
            if annotation is float:
                return float(verdict)
            if annotation is bool:
                return bool(verdict)
            return "The K2 costs $249."

        class Judge(InstructorBaseRagasLLM):
            calls = 0

            def generate(self, prompt, response_model):
                Judge.calls += 1
                return fill(response_model)

            async def agenerate(self, prompt, response_model):
                return self.generate(prompt, response_model)

        return Judge()


@pytest.mark.parametrize("verdict", [1, 0])
def test_judge_metrics_are_wired_to_ragas(verdict):
    judge = FakeJudge(verdict)
    ctx = ScoringContext(PHRASE, judge=judge)
    r = row(source_docs=["k2"])
    p = pred("The K2 costs $249.", [("k2", "The K2 costs $249.")])
    assert METRICS["judge_faithfulness"].score(r, p, ctx) == float(verdict)
    assert METRICS["judge_context_precision"].score(r, p, ctx) == pytest.approx(float(verdict), abs=1e-6)
    assert 0.0 <= METRICS["judge_answer_correctness"].score(r, p, ctx) <= 1.0
    assert type(judge).calls > 0
    assert METRICS["judge_faithfulness"].score(r, p, CTX) is None  # no judge configured: metric absent


def test_abstention_halves_weigh_the_same_however_many_rows_each_has():
    """76 answerable rows answered right and 20 unanswerable ones answered anyway: row-weighted (76 - 20) / 96 = 0.58,
    balanced 0.5 - 0.5 = 0, what always abstaining scores; the balanced values' mean is the mean of the two halves'
    means."""
    from ragft.eval.scoring.metrics import balanced

    metric = METRICS["effective_reliability"]
    rows = {f"k{i}": row(id=f"k{i}") for i in range(76)}
    rows |= {f"a{i}": row(id=f"a{i}", family="abstention", answers=[]) for i in range(20)}
    never = {i: 1.0 if i.startswith("k") else -1.0 for i in rows}
    careful = {i: 1.0 if i in ("k0", "k1") else 0.0 for i in rows}  # two right answers, everything else declined
    assert sum(never.values()) / len(never) == pytest.approx(56 / 96)
    weighted = balanced(metric, never, rows)
    assert sum(weighted.values()) / len(weighted) == pytest.approx(0.0)
    weighted = balanced(metric, careful, rows)
    assert sum(weighted.values()) / len(weighted) == pytest.approx(0.5 * 2 / 76)
    assert balanced(METRICS["answer_contained"], never, rows) == never  # a metric without groups is unchanged


def test_the_freshness_headline_says_adapters_were_not_retrained():
    """Issue 33: "use RAG" on freshness is true by construction when adapters never see the update; the headline's
    note, which the report prints under the family, says so."""
    from ragft.eval.scoring.metrics.freshness import ADAPTERS_RETRAINED

    assert ADAPTERS_RETRAINED is False
    assert "not retrained" in headline("freshness").note
    assert "0 is what always abstaining scores" in headline("abstention").note
    assert headline("abstention").refusal == 0.0 and headline("knowledge").refusal is None
    assert headline("abstention").figure_range == (-1.0, 0.5) and headline("knowledge").figure_range == (0.0, 1.0)
