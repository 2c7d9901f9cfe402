import json
import shutil
from pathlib import Path

import pytest
from ragft.eval.tasks import (
    CorpusError,
    TaskRow,
    check_corpus,
    example_key,
    fewshot_examples,
    load_tasks,
    normalise_text,
    reference_output,
)

SHIPPED = Path(__file__).parent.parent / "corpora"
GOOD = {
    "id": "k9",
    "family": "knowledge",
    "split": "test",
    "question": "Price of the K2?",
    "answers": ["$249"],
    "source_docs": ["kestrel-k2"],
}


def _with_rows(corpus, *lines):
    (corpus / "tasks" / "extra.jsonl").write_text("\n".join(lines) + "\n")
    return check_corpus(corpus)[1]


def test_the_fixture_corpus_is_valid(corpus):
    assert len(load_tasks(corpus)) == 3


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{oops", "extra.jsonl:1: not valid JSON"),
        ("[1, 2]", "extra.jsonl:1: a task row must be a JSON object"),
        (json.dumps(GOOD | {"family": "trivia"}), "extra.jsonl:1: unknown family 'trivia'"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "split"}), "extra.jsonl:1: split: Field required"),
        (json.dumps(GOOD | {"answers": []}), "needs 'answers'"),
        (json.dumps(GOOD | {"input": "also"}), "exactly one of 'question' or 'input'"),
        (json.dumps(GOOD | {"source_docs": ["nope"]}), "source_docs id 'nope' is not a document"),
        (json.dumps(GOOD | {"id": "k1"}), "duplicate id 'k1' (first at tasks/"),
        (json.dumps(GOOD | {"question": "What does the Kestrel K2 cost??"}), "test row repeats train row 'k1' (leak)"),
        (json.dumps(GOOD | {"paraphrase_of": "k2"}), "paraphrase_of 'k2' is not a train row id"),
        (json.dumps(GOOD | {"colour": "red"}), "colour: Extra inputs are not permitted"),
        (json.dumps({"id": "b", "family": "behaviour", "split": "test", "input": "x"}), "needs 'schema'+'expected'"),
        (
            json.dumps(
                {"id": "b", "family": "behaviour", "split": "test", "input": "x", "labels": ["a", "b"], "label": "c"}
            ),
            "label 'c' is not in labels",
        ),
        (
            json.dumps(
                {
                    "id": "b",
                    "family": "behaviour",
                    "split": "test",
                    "input": "x",
                    "schema": {"type": "object", "required": ["p"]},
                    "expected": {},
                }
            ),
            "expected does not satisfy its schema",
        ),
        (
            json.dumps(
                {"id": "b", "family": "behaviour", "split": "test", "input": "x", "schema": {"type": 5}, "expected": {}}
            ),
            "schema is not a valid JSON Schema",
        ),
        (
            json.dumps({"id": "f", "family": "freshness", "split": "test", "question": "x", "answers": ["new"]}),
            "needs 'answers' (after the update) and 'old_answers'",
        ),
        (
            json.dumps({"id": "a", "family": "abstention", "split": "test", "question": "x", "answers": ["y"]}),
            "must not have 'answers'",
        ),
    ],
)
def test_each_kind_of_error_is_reported_with_file_and_line(corpus, line, message):
    problems = _with_rows(corpus, line)
    assert any(message in str(p) for p in problems), [str(p) for p in problems]


def test_errors_on_later_lines_keep_their_line_numbers(corpus):
    problems = _with_rows(corpus, json.dumps(GOOD), "", "{bad")
    assert [str(p) for p in problems] == [
        "tasks/extra.jsonl:3: not valid JSON (Expecting property name enclosed in double quotes at column 2)"
    ]


def test_missing_parts_and_load_tasks_raises_with_all_problems(tmp_path):
    (tmp_path / "c").mkdir()
    problems = check_corpus(tmp_path / "c")[1]
    assert {str(p) for p in problems} == {
        "documents/: missing: a corpus needs a documents/ folder",
        "tasks/: no task files: add tasks/*.jsonl",
    }
    with pytest.raises(CorpusError, match="2 problem"):
        load_tasks(tmp_path / "c")


def test_reference_output_and_fewshot_pools(corpus):
    rows = load_tasks(corpus)
    abstain = next(r for r in rows if r.family == "abstention")
    assert reference_output(abstain, "IDK") == "IDK"
    pools = fewshot_examples(rows, 3, seed=0, abstention_phrase="IDK")
    assert list(pools) == ["questions"] and pools["questions"][0].answer == "$249"  # only train rows are examples
    assert fewshot_examples(rows, 3, seed=0, abstention_phrase="IDK") == pools


@pytest.mark.parametrize("name", ["quillmark", "ostwick"])
def test_shipped_corpora_validate_and_never_leak(name):
    rows, problems = check_corpus(SHIPPED / name)
    assert problems == []
    train = {normalise_text(r.text) for r in rows if r.split == "train"}
    assert not [r.id for r in rows if r.split == "test" and normalise_text(r.text) in train]


@pytest.mark.parametrize("name", ["quillmark", "ostwick"])
def test_every_answer_occurs_in_its_source_document(name):
    from ragft.service.documents import load_documents

    docs = {d.doc_id: d.text.lower() for d in load_documents(SHIPPED / name)}
    updates = (
        {d.doc_id: d.text.lower() for d in load_documents(SHIPPED / name / "updates")} if name == "quillmark" else {}
    )
    for row in load_tasks(SHIPPED / name):
        if row.family == "knowledge":
            assert any(row.answers[0].lower() in docs[d] for d in row.source_docs), row.id
        if row.family == "freshness":
            assert row.old_answers[0].lower() in docs[row.source_docs[0]], row.id
            assert row.answers[0].lower() in updates[row.source_docs[0]], row.id


def test_corpus_one_meets_the_minimum_counts():
    from collections import Counter

    from ragft.service.documents import load_documents

    rows = load_tasks(SHIPPED / "quillmark")
    n = Counter((r.family, r.split) for r in rows)
    kinds = Counter(r.kind for r in rows if r.family == "knowledge" and r.split == "test")
    assert len(load_documents(SHIPPED / "quillmark")) >= 60
    assert len({a for r in rows if r.family == "knowledge" for a in [r.paraphrase_of or r.id]}) >= 300  # distinct facts
    assert n["knowledge", "train"] >= 300 and n["knowledge", "test"] >= 150
    assert kinds["paraphrase"] > 0 and kinds["unseen"] > 0
    assert n["abstention", "test"] >= 40 and n["abstention", "train"] > 0
    assert n["behaviour", "train"] >= 200 and n["behaviour", "test"] >= 100
    assert {r.kind for r in rows if r.family == "behaviour"} == {"ticket_json", "intent_label", "house_style"}
    assert n["freshness", "test"] >= 30 and n["general", "test"] >= 50
    assert len(load_documents(SHIPPED / "ostwick")) >= 25


def test_regeneration_is_byte_identical(tmp_path):
    from ragft.corpora.generate import generate

    for folder in generate(tmp_path):
        shipped = SHIPPED / folder.name
        made = sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
        committed = sorted(p.relative_to(shipped) for p in shipped.rglob("*") if p.is_file())
        assert made == [p for p in committed if p.name != "DATA_CARD.md"]  # the data card is written by hand
        for rel in made:
            assert (folder / rel).read_bytes() == (shipped / rel).read_bytes(), rel


def test_a_broken_copy_of_a_shipped_corpus_fails_validation(tmp_path):
    copy = shutil.copytree(SHIPPED / "ostwick", tmp_path / "ostwick")
    path = copy / "tasks" / "knowledge.jsonl"
    lines = path.read_text().splitlines()
    lines[4] = lines[4].replace('"family": "knowledge"', '"family": "knowlege"')
    path.write_text("\n".join(lines) + "\n")
    assert [str(p) for p in check_corpus(copy)[1]] == [
        "tasks/knowledge.jsonl:5: unknown family 'knowlege'; use one of knowledge, behaviour, abstention, freshness, general"
    ]


def test_one_question_pool_for_every_family_mixes_in_an_abstention(full_corpus):
    rows = load_tasks(full_corpus)
    pools = fewshot_examples(rows, 3, seed=0, abstention_phrase="IDK")
    assert set(pools) == {"questions", "behaviour:label"}
    answers = [e.answer for e in pools["questions"]]
    assert len(answers) == 3 and answers.count("IDK") == 1  # two answerable, one unanswerable, shuffled
    by_family = {r.family: example_key(r) for r in rows if r.split == "test"}
    assert {by_family[f] for f in ("knowledge", "abstention", "freshness", "general")} == {"questions"}
    assert by_family["behaviour"].startswith("behaviour:")


def test_behaviour_fewshot_pools_show_different_labels_and_field_values():
    ticket = {"type": "object"}
    rows = [
        TaskRow.model_validate(
            {"id": f"t{i}", "family": "behaviour", "split": "train", "kind": "ticket", "input": f"ticket {i}",
             "schema": ticket, "expected": {"priority": "medium" if i else "urgent", "category": "billing"}}
        )
        for i in range(12)
    ] + [
        TaskRow.model_validate(
            {"id": f"l{i}", "family": "behaviour", "split": "train", "kind": "label", "input": f"message {i}",
             "labels": ["a", "b", "c"], "label": "a" if i < 10 else "bc"[i - 10]}
        )
        for i in range(12)
    ]  # fmt: skip
    pools = fewshot_examples(rows, 3, seed=0, abstention_phrase="IDK")
    assert sorted(e.answer for e in pools["behaviour:label"]) == ["a", "b", "c"]  # 10 of 12 train rows are 'a'
    priorities = [json.loads(e.answer)["priority"] for e in pools["behaviour:ticket"]]
    assert "urgent" in priorities and len(priorities) == 3  # the one urgent ticket among eleven medium ones
    assert fewshot_examples(rows, 3, seed=0, abstention_phrase="IDK") == pools
