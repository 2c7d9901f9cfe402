"""Each metric pinned on cases computed by hand."""

import pytest

from eval.metrics import METRICS, ScoringContext, headline, report_families
from eval.metrics.abstention import abstained
from eval.metrics.behaviour import field_accuracy, macro_f1, parse_json, predicted_label, schema_valid, style_ok
from eval.metrics.knowledge import answer_contained, answer_sentences, exact_match, token_f1
from eval.store import Prediction, StoredPassage
from eval.tasks import TaskRow

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
        (exact_match, "It costs $249", ["$249"], 0.0),
        (answer_contained, "It costs $249, I think.", ["$249"], 1.0),
        (answer_contained, "It costs $2490", ["$249"], 0.0),
        (answer_contained, "Version 4.12.3 is current", ["4.12.3"], 1.0),
        (token_f1, "the price is 463 dollars", ["463 dollars"], 2 * (2 / 4) * 1 / (2 / 4 + 1)),
        (token_f1, "nothing relevant", ["463 dollars"], 0.0),
    ],
)
def test_string_metrics(fn, prediction, answers, expected):
    assert fn(prediction, answers) == pytest.approx(expected)


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
    assert parse_json('Sure! ```json\n{"a": 1, "b": "y"}\n```') == {"a": 1, "b": "y"}
    assert parse_json("no json {here") is None
    assert schema_valid(r, pred('{"a": 1}'), CTX) == 1.0
    assert schema_valid(r, pred('{"a": "one"}'), CTX) == 0.0
    assert field_accuracy(r, pred('{"a": 1, "b": "x", "c": 3}'), CTX) == pytest.approx(2 / 3)
    assert METRICS["behaviour_pass"].score(r, pred('{"a": 1, "b": "x", "c": 2}'), CTX) == 1.0
    assert METRICS["behaviour_pass"].score(r, pred('{"a": 1, "b": "x"}'), CTX) == 0.0


def test_labels_and_macro_f1():
    assert predicted_label("Category: billing.", ["billing", "shipping"]) == "billing"
    assert predicted_label("shipping", ["billing", "shipping"]) == "shipping"
    assert predicted_label("no idea", ["billing", "shipping"]) is None
    # label a: tp 1, fp 0, fn 1 -> F1 2/3; label b: tp 2, fp 1, fn 0 -> F1 4/5; macro = (2/3 + 4/5) / 2
    assert macro_f1([("a", "a"), ("a", "b"), ("b", "b"), ("b", "b")]) == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert macro_f1([("a", "<none>")]) == 0.0


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


def test_abstention_decision_on_both_kinds_of_row():
    unanswerable = row(family="abstention", answers=[])
    answerable = row()
    assert abstained(PHRASE, PHRASE) and abstained("Sorry, I do not know.", PHRASE) and not abstained("$249", PHRASE)
    acc = METRICS["abstention_accuracy"].score
    assert acc(unanswerable, pred(PHRASE), CTX) == 1.0 and acc(unanswerable, pred("$9"), CTX) == 0.0
    assert acc(answerable, pred("$249"), CTX) == 1.0 and acc(answerable, pred(PHRASE), CTX) == 0.0
    assert METRICS["abstention_rate"].score(answerable, pred(PHRASE), CTX) is None
    assert METRICS["false_abstention_rate"].score(answerable, pred(PHRASE), CTX) == 1.0


def test_freshness_new_versus_stale():
    r = row(family="freshness", answers=["$179"], old_answers=["$199"])
    assert METRICS["new_answer_rate"].score(r, pred("now $179"), CTX) == 1.0
    assert METRICS["stale_answer_rate"].score(r, pred("still $199"), CTX) == 1.0
    assert METRICS["stale_answer_rate"].score(r, pred("$179, was $199"), CTX) == 0.0


def test_every_family_has_exactly_one_headline():
    for family in report_families():
        assert sum(m.headline for m in METRICS.values() if m.family == family) == 1
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
