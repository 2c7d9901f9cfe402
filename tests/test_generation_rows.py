"""`ragft corpus generate` through a scripted OpenAI-compatible server on a team's real files: rows that validate,
pass the audit's leak check, wait for review, and count in a run only once accepted."""

from __future__ import annotations

import json
import random
import re
import threading
from collections import Counter
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from ragft.eval.corpus.audit import audit_corpus, check_generated_leaks
from ragft.eval.corpus.corpus_import import plan_corpus, write_corpus
from ragft.eval.corpus.generation_rows import (
    GENERATED_FILE,
    Budget,
    GenerationError,
    OpenAIGenerator,
    decide,
    generate_rows,
    parse_json_object,
    read_generated,
    review_items,
    write_generated,
)
from ragft.eval.tasks import TaskRow, check_corpus, load_tasks, row_origin, unreviewed_note
from ragft.service.app.cli import app
from typer.testing import CliRunner

FILES = Path(__file__).parent / "data" / "team_files"
QUESTIONS = """Question,Answer
In what year was the typewriter patented?,1868
When did IBM introduce the electric typewriter?,1935
Which data set was used for hyper-parameter optimization?,PubTabNet
What does the Kestrel K9 cost?,
"""
EXAMPLES = "input,expected\n" + "".join(
    f"{text},{label}\n"
    for text, label in [
        ("The PDF will not open on my laptop", "bug"), ("Please add a dark mode to the editor", "feature"),
        ("How do I export my notes to Word?", "question"), ("Saving crashes the app every time", "bug"),
        ("Could you support LaTeX equations?", "feature"), ("Where are my old drafts kept?", "question"),
        ("Spell check marks every word as wrong", "bug"), ("I would like templates for invoices", "feature"),
        ("Can two people edit one file at once?", "question"),
    ]
)  # fmt: skip

# What the scripted generator answers, by document: good items and items each check must reject.
KNOWLEDGE = {
    "multi_page.pdf": [
        {
            "question": "What did the IBM MT/ST combine with IBM's Selectric typewriter?",
            "answer": "magnetic tape storage",
            "span": "this machine combined IBM's Selectric typewriter with magnetic tape storage",
            "paraphrase": "Alongside the Selectric typewriter, which kind of storage did IBM's MT/ST machine use?",
        },
        {
            "question": "For which operating system was WordStar developed?",
            "answer": "CP/M",
            "span": "Developed for the CP/M operating system, WordStar was one of the first widely used word processing programs.",
            "paraphrase": "WordStar was written to run on which operating system?",
        },
        {
            "question": "In which year did Microsoft launch Word for MS-DOS?",
            "answer": "1983",
            "span": "Microsoft launched Word for MS-DOS in 1983",  # line break in the PDF: whitespace is squashed
            "paraphrase": "When did Word for MS-DOS first come out from Microsoft?",
        },
        {
            "question": "Who patented the typewriter in 1868?",
            "answer": "Christopher Latham Sholes",
            "span": "Patented in 1868 by Sir Christopher Sholes",
            "paraphrase": "Which inventor patented the typewriter?",
        },
        {
            "question": "When did IBM bring out the electric typewriter?",
            "answer": "1935",
            "span": "the electric typewriter (introduced by IBM in 1935)",
            "paraphrase": "In what year was the electric typewriter introduced by IBM?",
        },  # the sheet's fact: a duplicate
        {
            "question": "Which company made the Wang 1200?",
            "answer": "Wang Laboratories",
            "span": "These devices, like the Wang 1200, featured small screens and floppy",
            "paraphrase": "Who built the Wang 1200?",
        },  # the answer is not in the span
    ],
    "2305.03393v1-pg9.pdf": [
        {
            "question": "On which CPU were the inference timing results obtained?",
            "answer": "AMD EPYC 7763",
            "span": "single core with AMD EPYC 7763 CPU @2.45 GHz",
            "paraphrase": "The inference timings were measured on what processor?",
        },
        {
            "question": "What speed-up in inference runtime does OTSL yield over HTML?",
            "answer": "2x",
            "span": "However OTSL yields a 2x speed up in the inference runtime over HTML.",
            "paraphrase": "How much faster is inference with OTSL than with HTML?",
        },
    ],
    "word_sample.docx": [
        {
            "question": "How many calories does a portion of grain have?",
            "answer": "200",
            "span": "Grain Corn, Buckwheat, Barley 200",
            "paraphrase": "A portion of grain holds how many calories?",
        },
    ],
}
ABSTENTION = {
    "multi_page.pdf": [
        {
            "question": "What did the Wang 1200 cost when it was launched?",
            "entity": "Wang 1200",
            "detail": "launch price",
        },
        {"question": "In which year was the typewriter patented?", "entity": "typewriter", "detail": "year patented"},
        {"question": "How much did the Zorblax 9000 weigh?", "entity": "Zorblax 9000", "detail": "weight"},
    ],
}
BEHAVIOUR = [
    {"input": "The PDF will not open on my laptop", "label": "bug"},  # a seed example again: a duplicate
    {"input": "Fonts turn blurry after the latest update", "label": "urgent"},  # not in the label set
    {"input": "The toolbar vanishes when I resize the window", "label": "bug"},
    {"input": "Please let me pin favourite documents to the sidebar", "label": "feature"},
    {"input": "Is there a keyboard shortcut for printing?", "label": "question"},
    {"input": "Add an option to export slides as images", "label": "feature"},
]


class Scripted(BaseHTTPRequestHandler):
    """A chat-completions endpoint answering from the tables above; `structured` False answers 400 to a JSON Schema
    response format (as an endpoint without structured output does), and the first reply of each kind is prose."""

    structured = True
    status = 200  # another status answers every call with it (a 413 for a prompt too long, a 503)
    prose = False  # every reply the same prose, as a greedy model that writes no JSON answers
    disable_nagle_algorithm = True
    seen: dict = {}
    calls: list = []

    def log_message(self, *args):  # quiet
        pass

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).calls.append(body)
        if "response_format" in body and not type(self).structured:
            return self._send(400, {"error": {"message": "response_format is not supported", "type": "invalid"}})
        if type(self).status != 200:
            return self._send(type(self).status, {"error": {"message": "scripted refusal", "type": "scripted"}})
        prompt = body["messages"][-1]["content"]
        doc = re.search(r"^Document: (.+)$", prompt, re.M)
        if "questions a reader could answer" in prompt:
            kind, items = "knowledge", KNOWLEDGE.get(doc.group(1), [])
        elif "does NOT state" in prompt:
            kind, items = "abstention", ABSTENTION.get(doc.group(1), [])
        else:
            kind, items = "behaviour", BEHAVIOUR
        first = kind not in type(self).seen
        type(self).seen[kind] = True
        text = "Sure! Here are some." if first else f"Here you go:\n```json\n{json.dumps({'items': items})}\n```"
        if "response_format" in body and not first:
            text = json.dumps({"items": items})
        if type(self).prose:
            text = "The passage is about typewriters."
        self._send(200, {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                         "choices": [{"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": text}}],
                         "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150}})  # fmt: skip

    def _send(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def endpoint():
    Scripted.structured, Scripted.status, Scripted.prose, Scripted.seen, Scripted.calls = True, 200, False, {}, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()


@pytest.fixture(scope="module")
def team_corpus(tmp_path_factory) -> Path:
    """A corpus made by `ragft corpus init` from the real files, a question sheet and a labelled example sheet."""
    root = tmp_path_factory.mktemp("team")
    docs = root / "docs"
    docs.mkdir()
    for name in ("2305.03393v1-pg9.pdf", "multi_page.pdf", "word_sample.docx", "powerpoint_sample.pptx"):
        (docs / name).write_bytes((FILES / name).read_bytes())
    (root / "questions.csv").write_text(QUESTIONS)
    (root / "examples.csv").write_text(EXAMPLES)
    plan = plan_corpus(docs, questions=root / "questions.csv", examples=root / "examples.csv")
    return write_corpus(plan, root / "corpus")


@pytest.fixture
def corpus(team_corpus, tmp_path) -> Path:
    import shutil

    return Path(shutil.copytree(team_corpus, tmp_path / "corpus"))


def test_generate_through_an_endpoint_without_structured_output_checks_every_item(corpus, endpoint):
    Scripted.structured = False
    report = generate_rows(corpus, {"knowledge": 6, "abstention": 4, "behaviour": 3},
                           OpenAIGenerator(endpoint, "scripted", retries=2), unseen_share=0)  # fmt: skip
    rows = {r.id: r for r in report.rows}
    assert report.accepted["knowledge"] == 6
    assert report.rejected[("knowledge", "span_not_in_document")] >= 1
    assert report.rejected[("knowledge", "answer_not_in_span")] >= 1
    assert report.rejected[("knowledge", "duplicate_fact")] >= 1  # the sheet already asks when IBM made it
    assert report.rejected[("abstention", "entity_not_in_document")] >= 1
    assert report.rejected[("abstention", "answer_retrievable")] >= 1  # the patent year is in the document
    assert report.rejected[("behaviour", "label_not_in_set")] >= 1
    assert report.rejected[("behaviour", "duplicate")] >= 1
    # the first reply of each kind was prose: asked again, then parsed out of a code fence
    assert not [k for k in report.rejected if k[1] == "invalid_json"]
    assert "response_format" in Scripted.calls[0] and "response_format" not in Scripted.calls[-1]
    sholes = [r for r in rows.values() if r.answers == ["CP/M"]]
    train, test = sorted(sholes, key=lambda r: r.split, reverse=True)
    assert train.split == "train" and test.kind == "paraphrase" and test.paraphrase_of == train.id
    assert test.source_docs == train.source_docs == ["multi_page.pdf"]
    assert train.generated.model == "scripted" and "CP/M operating system" in train.generated.span
    assert train.review.status == "pending" and row_origin(train) == "generated, pending"
    kinds = {r.kind for r in rows.values() if r.family == "abstention"}
    assert kinds == {"missing_detail", "near_miss"}
    assert {r.split for r in rows.values() if r.family == "abstention"} == {"train", "test"}
    assert {r.label for r in rows.values() if r.family == "behaviour"} == {"bug", "feature", "question"}
    assert check_generated_leaks(report.rows + load_tasks(corpus)).passed
    assert report.tokens > 0 and report.calls >= 3


def test_generated_rows_validate_pass_the_leak_check_and_count_only_once_accepted(corpus, endpoint):
    before = load_tasks(corpus)
    report = generate_rows(corpus, {"knowledge": 4, "abstention": 2}, OpenAIGenerator(endpoint, "scripted"))
    write_generated(corpus, report.rows)
    rows, problems = check_corpus(corpus)
    assert not problems and len(rows) == len(before) + len(report.rows)
    assert [r.id for r in load_tasks(corpus)] == [r.id for r in before]  # pending rows do not count
    assert len(load_tasks(corpus, include_unreviewed=True)) == len(rows)
    audit = audit_corpus(corpus, include_unreviewed=True)
    leaks = next(c for c in audit.checks if c.name == "generated_leaks")
    assert leaks.passed, leaks.details
    assert next(c for c in audit.checks if c.name == "answers_in_sources").passed


def test_a_leak_is_the_same_fact_across_the_split_except_the_paraphrase_it_restates():
    meta = {"generated": {"model": "m", "prompt_version": "knowledge-1", "item": "g1", "source_doc": "d",
                          "span": "It costs $249."}, "review": {"status": "pending"}}  # fmt: skip
    train = TaskRow.model_validate({"id": "g1", "family": "knowledge", "split": "train", "question": "What does X cost?",
                                    "answers": ["$249"], "source_docs": ["d"], **meta})  # fmt: skip
    para = train.model_copy(update={"id": "g1-p", "split": "test", "kind": "paraphrase", "paraphrase_of": "g1",
                                    "question": "How much is X?"})  # fmt: skip
    assert check_generated_leaks([train, para]).passed
    unseen = para.model_copy(update={"id": "g2", "kind": "unseen", "paraphrase_of": None})
    check = check_generated_leaks([train, unseen])
    assert not check.passed and "g2: asks the fact train row g1 teaches" in check.details[0]
    elsewhere = unseen.model_copy(update={"generated": unseen.generated.model_copy(update={"span": "Y costs $249."})})
    assert check_generated_leaks([train, elsewhere]).passed  # the same answer in another sentence: another fact


def test_without_an_endpoint_near_misses_are_made_and_checked_absent(corpus):
    report = generate_rows(corpus, {"knowledge": 5, "abstention": 4})
    assert report.accepted == {"abstention": 4} and not report.accepted["knowledge"]
    text = "\n".join(p.read_text(errors="replace") for p in (corpus / "documents").iterdir() if p.suffix == ".md")
    for row in report.rows:
        assert row.kind == "near_miss" and row.generated.model == "none" and row.review.status == "pending"
        real = row.generated.span
        assert real.lower() not in row.text.lower()  # the question names the near miss, not the real entity
    assert any("An endpoint adds knowledge questions" in n for n in report.notes)
    # the sheet's one abstention test row names no real entity: a near miss in test would lower that share further
    assert {r.split for r in report.rows} == {"train"}
    del text


def test_near_misses_vary_a_real_name_once_each_and_never_a_date():
    from ragft.eval.corpus.generation_rows import document_entities, near_misses
    from ragft.service.documents import Document

    docs = [Document("a", "The Heron H4 costs $90. The Heron H5 shipped in January 2022. See Larkspur Freight.", "a"),
            Document("b", "Ask Osprey Labs about the Heron H4 today.", "b")]  # fmt: skip
    entities = document_entities(docs)
    assert "January 2022" not in entities and entities[:2] == ["Heron H4", "Heron H5"]
    text = " ".join(d.text for d in docs).lower()
    pairs = list(near_misses(entities, text, random.Random(0)))
    misses = [m for _, m in pairs]
    assert len(set(misses)) == len(misses) and all(m.lower() not in text for m in misses)
    assert ("Larkspur Freight", "Larkspur Labs") in pairs  # two real names crossed


def test_behaviour_items_for_a_json_schema_must_satisfy_it_and_be_new():
    from ragft.eval.corpus.generation_rows import _Known, behaviour_row

    schema = {"type": "object", "properties": {"priority": {"enum": ["low", "high"]}}, "required": ["priority"],
              "additionalProperties": False}  # fmt: skip
    seed = TaskRow.model_validate({"id": "b1", "family": "behaviour", "split": "train", "kind": "ticket_json",
                                   "instruction": "Triage.", "input": "The printer in room 4 is on fire",
                                   "schema": schema, "expected": {"priority": "high"}})  # fmt: skip
    known = _Known([], [seed])
    rows, reason = behaviour_row(
        {"input": "Toner is low on floor 2", "expected": {"priority": "low"}}, seed, known, "m"
    )
    assert reason is None and rows[0].expected == {"priority": "low"} and rows[0].kind == "ticket_json"
    assert behaviour_row({"input": "Paper jam", "expected": {"priority": "urgent"}}, seed, known, "m")[1] == (
        "expected_fails_schema")  # fmt: skip
    assert behaviour_row({"input": "The printer in room 9 is on fire", "expected": {"priority": "high"}}, seed,
                         known, "m")[1] == "near_duplicate"  # another number in the same template  # fmt: skip


def test_passages_cut_a_document_without_line_breaks():
    from ragft.eval.corpus.generation_rows import PASSAGE_CHARS, _passages
    from ragft.service.documents import Document

    text = " ".join(f"Sentence {i} says the unit weighs {i} grams." for i in range(400))  # one line, 16,000 chars
    windows = [w for _, w in _passages([Document("d", text, "d")], random.Random(0))]
    assert len(windows) > 5 and max(len(w) for w in windows) <= PASSAGE_CHARS + 60


def test_a_budget_stops_the_run_and_says_which(corpus, endpoint):
    report = generate_rows(corpus, {"knowledge": 50}, OpenAIGenerator(endpoint, "scripted"), Budget(tokens=200))
    assert report.stopped == "token budget of 200 reached (300 used)" or report.stopped.startswith("token budget")
    assert report.calls <= 3


def test_structured_output_asks_for_the_row_schema_and_the_setting_decides_a_refusal(corpus, endpoint):
    import jsonschema
    from ragft.eval.corpus.generation_rows import ABSTENTION_SCHEMA, KNOWLEDGE_SCHEMA, _at_most, _choosing, _squash
    from ragft.service.documents import load_documents

    report = generate_rows(corpus, {"knowledge": 2, "abstention": 1}, OpenAIGenerator(endpoint, "scripted"))
    assert report.accepted["knowledge"] == 2 and not [k for k in report.rejected if k[1] == "invalid_json"]
    asked = {call["response_format"]["json_schema"]["schema"] is not None for call in Scripted.calls}
    assert asked == {True}  # every call, the first prose reply's repeat included
    knowledge = next(c for c in Scripted.calls if "questions a reader could answer" in c["messages"][-1]["content"])
    abstention = next(c for c in Scripted.calls if "does NOT state" in c["messages"][-1]["content"])
    documents = {d.doc_id: _squash(d.text) for d in load_documents(corpus / "documents")}
    for call, schema, n, quoted in ((knowledge, KNOWLEDGE_SCHEMA, 2, "span"), (abstention, ABSTENTION_SCHEMA, 1,
                                                                                  "entity")):  # fmt: skip
        prompt = call["messages"][-1]["content"]
        assert f"Write {n} questions" in prompt
        sent = call["response_format"]["json_schema"]["schema"]
        choices = sent["properties"]["items"]["items"]["properties"][quoted]["enum"]  # quoted from the passage
        doc = re.search(r"^Document: (.+)$", prompt, re.M).group(1)
        assert choices and all(_squash(c) in documents[doc] and _squash(c) in _squash(prompt) for c in choices)
        assert call["response_format"] == {"type": "json_schema",
                                           "json_schema": {"name": "rows", "strict": True,
                                                           "schema": _choosing(_at_most(schema, n),
                                                                               {quoted: choices})}}  # fmt: skip
        assert sent["properties"]["items"]["maxItems"] == n
    jsonschema.Draft202012Validator.check_schema(KNOWLEDGE_SCHEMA)
    for item in KNOWLEDGE["multi_page.pdf"]:  # what a constrained reply holds
        jsonschema.validate({"items": [item]}, KNOWLEDGE_SCHEMA)
    jsonschema.validate({"items": ABSTENTION["multi_page.pdf"]}, ABSTENTION_SCHEMA)
    with pytest.raises(jsonschema.ValidationError):  # a missing field or an extra one is outside the grammar
        jsonschema.validate({"items": [{"question": "q", "answer": "a", "span": "s"}]}, KNOWLEDGE_SCHEMA)
    endless = {"question": "What? " * 50, "answer": "a", "span": "s", "paraphrase": "p"}
    with pytest.raises(jsonschema.ValidationError, match="is too long"):  # a string repeated until the token limit
        jsonschema.validate({"items": [endless]}, KNOWLEDGE_SCHEMA)
    assert "a JSON Schema response format asked on every call" in "\n".join(report.summary())

    Scripted.structured, Scripted.calls = False, []  # an endpoint without structured output
    fallback = OpenAIGenerator(endpoint, "scripted")
    report = generate_rows(corpus, {"knowledge": 1}, fallback)
    assert report.accepted["knowledge"] == 1 and not fallback.structured and "400" in fallback.refused
    assert [("response_format" in c) for c in Scripted.calls][:2] == [True, False]
    assert "refused by the endpoint (400" in "\n".join(report.summary())
    with pytest.raises(GenerationError, match="--structured-output on needs an endpoint"):
        OpenAIGenerator(endpoint, "scripted", structured="on").ask("s", "u", KNOWLEDGE_SCHEMA)
    Scripted.structured, Scripted.calls = True, []
    OpenAIGenerator(endpoint, "scripted", structured="off").ask("s", "u", KNOWLEDGE_SCHEMA)
    assert Scripted.calls and not any("response_format" in c for c in Scripted.calls)
    with pytest.raises(ValueError, match="use auto, on, off"):
        OpenAIGenerator(endpoint, "scripted", structured="json")


def test_a_repeated_reply_is_not_asked_again_and_endpoint_errors_are_bounded(endpoint):
    Scripted.prose = True  # greedy decoding: asking again repeats the reply
    reply = OpenAIGenerator(endpoint, "scripted", retries=3).ask("s", "u", {})
    assert reply.data is None and reply.error == "invalid_json" and reply.attempts == 2 and len(Scripted.calls) == 2
    Scripted.prose, Scripted.status, Scripted.calls = False, 503, []
    reply = OpenAIGenerator(endpoint, "scripted", retries=2).ask("s", "u", {})
    assert reply.error == "endpoint_error: 503" and len(Scripted.calls) >= 3  # the client's own retry may add some
    Scripted.status = 413
    with pytest.raises(GenerationError, match="api.max_question_chars"):
        OpenAIGenerator(endpoint, "scripted").ask("s", "u", {})


def test_lenient_parse_takes_the_object_out_of_prose_and_fences():
    assert parse_json_object('Sure:\n```json\n{"items": [1]}\n```\nBye') == {"items": [1]}
    assert parse_json_object("no object {here") is None
    assert parse_json_object('[1, 2] then {"a": {"b": 1}}') == {"a": {"b": 1}}


def test_cli_generate_writes_pending_rows_and_prints_rejections(corpus, endpoint):
    result = CliRunner().invoke(app, ["corpus", "generate", str(corpus), "--generator-url", endpoint,
                                      "--generator-model", "scripted", "--families", "knowledge,abstention",
                                      "--count", "3"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "knowledge: 3 item(s) kept of " in result.output and "rejected" in result.output
    assert "review them: ragft corpus review" in result.output
    card = (corpus / "DATA_CARD.md").read_text()
    assert "## Generated rows" in card and "model `scripted`" in card and "- knowledge: 3 item(s) kept" in card
    rows = read_generated(corpus / "tasks" / GENERATED_FILE)
    assert rows and all(r.review.status == "pending" for r in rows)
    again = CliRunner().invoke(app, ["corpus", "generate", str(corpus), "--families", "abstention", "--count", "2"])
    assert again.exit_code == 0, again.output
    assert "no --generator-url" in again.output
    assert len(read_generated(corpus / "tasks" / GENERATED_FILE)) > len(rows)  # added; the first rows kept
    validated = CliRunner().invoke(app, ["corpus", "validate", str(corpus)])
    assert (
        validated.exit_code == 0
        and "generated rows: " in validated.output
        and " pending, 0 accepted" in validated.output
    )
    audited = CliRunner().invoke(app, ["corpus", "audit", str(corpus), "--include-unreviewed"])
    assert "[pass] generated_leaks" in audited.output


@pytest.fixture
def generated(corpus, endpoint) -> Path:
    """The team corpus with generated knowledge and abstention rows written, all pending."""
    report = generate_rows(corpus, {"knowledge": 3, "abstention": 2}, OpenAIGenerator(endpoint, "scripted"),
                           unseen_share=0)  # fmt: skip
    write_generated(corpus, report.rows)
    return corpus


def test_an_unseen_share_of_knowledge_items_are_test_rows_no_train_row_teaches(corpus, endpoint):
    report = generate_rows(corpus, {"knowledge": 6}, OpenAIGenerator(endpoint, "scripted"), unseen_share=0.5)
    unseen = [r for r in report.rows if r.kind == "unseen"]
    pairs = [r for r in report.rows if r.kind != "unseen"]
    assert unseen and pairs and len(unseen) + len(pairs) // 2 == 6
    assert all(r.split == "test" and r.generated.item == r.id and r.paraphrase_of is None for r in unseen)
    assert check_generated_leaks(report.rows + load_tasks(corpus)).passed


def _test_rows(corpus: Path, **kwargs) -> set[str]:
    """The test rows a run answers (the runner's own selection)."""
    from ragft.eval.running.runner import select_rows

    chosen = select_rows(load_tasks(corpus, **kwargs), ["knowledge", "abstention"], None, 0, {})
    return {r.id for rows in chosen.values() for r in rows}


def test_review_decisions_change_what_a_run_counts(generated):
    path = generated / "tasks" / GENERATED_FILE
    knowledge = review_items(read_generated(path), "pending", "knowledge")
    assert len(knowledge) == 3 and all(len(i.rows) == 2 for i in knowledge)  # a question and its paraphrase
    base = _test_rows(generated)
    assert not any(i.startswith("gen-") for i in base)
    accepted, edited, rejected = knowledge
    decide(generated, accepted.item, "accept", "Ada")
    span = accepted.fields["span"]
    paraphrase = "Put another way: " + edited.fields["paraphrase"]
    decide(generated, edited.item, "edit", " Grace  Hopper ", {"paraphrase": paraphrase})
    decide(generated, rejected.item, "reject", "Ada")
    counted = _test_rows(generated) - base
    assert counted == {f"{accepted.item}-p", f"{edited.item}-p"}  # the accepted and edited paraphrases, no more
    assert _test_rows(generated, include_unreviewed=True) - base - counted  # pending abstention rows, when asked
    rows = {r.id: r for r in read_generated(path)}
    assert rows[accepted.item].review.status == "accepted" and rows[accepted.item].review.reviewer == "Ada"
    assert rows[f"{edited.item}-p"].text == paraphrase and rows[edited.item].review.reviewer == "Grace Hopper"
    assert rows[f"{edited.item}-p"].review.status == "edited" and row_origin(rows[edited.item]) == "generated, edited"
    assert rows[rejected.item].review.status == "rejected" and rows[accepted.item].generated.span == span
    assert {r.id for r in load_tasks(generated)} >= {accepted.item, edited.item}
    assert rejected.item not in {r.id for r in load_tasks(generated, include_unreviewed=True)}
    assert unreviewed_note(load_tasks(generated)) is None
    note = unreviewed_note(load_tasks(generated, include_unreviewed=True))
    assert note.startswith("Unreviewed rows: 2 of the ") and "--include-unreviewed" in note
    origins = Counter(row_origin(r) for r in load_tasks(generated, include_unreviewed=True))
    assert origins["generated, accepted"] == 2 and origins["generated, edited"] == 2 and origins["imported"] > 0
    audit = {c.name: c for c in audit_corpus(generated).checks}  # a corpus this small fails others: not our rows
    assert not check_corpus(generated)[1] and audit["generated_leaks"].passed and audit["answers_in_sources"].passed


def test_an_edit_is_checked_like_a_generated_row(generated):
    item = review_items(read_generated(generated / "tasks" / GENERATED_FILE), "pending", "knowledge")[0]
    with pytest.raises(ValueError, match="is not in multi_page.pdf|is not in"):
        decide(generated, item.item, "edit", "Ada", {"answer": "a made-up answer"})
    with pytest.raises(ValueError, match="repeats the question"):
        decide(generated, item.item, "edit", "Ada", {"paraphrase": item.fields["question"] + "!"})
    with pytest.raises(ValueError, match="reviewer"):
        decide(generated, item.item, "accept", "  ")
    with pytest.raises(ValueError, match="U\+202E"):
        decide(generated, item.item, "accept", "Ada\u202e")
    with pytest.raises(KeyError):
        decide(generated, "gen-k-nothing", "accept", "Ada")
    assert review_items(read_generated(generated / "tasks" / GENERATED_FILE), "pending", "knowledge")[0] == item


def test_cli_review_accepts_edits_and_rejects_in_the_terminal(generated):
    items = review_items(read_generated(generated / "tasks" / GENERATED_FILE), "pending", "knowledge")
    keys = "a\ne\nNew question about it?\n\n\nr\nq\n"  # accept; edit the question, keep the rest; reject; quit
    result = CliRunner().invoke(app, ["corpus", "review", str(generated), "--reviewer", "Ada",
                                      "--family", "knowledge"], input=keys)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "span: " in result.output and "1 accepted, 1 edited, 1 rejected" in result.output
    rows = {r.id: r for r in read_generated(generated / "tasks" / GENERATED_FILE)}
    assert rows[items[1].item].text == "New question about it?" and rows[items[1].item].review.reviewer == "Ada"
    assert [rows[i.item].review.status for i in items] == ["accepted", "edited", "rejected"]


def test_smoke_through_ragft_serve_with_the_tiny_model(settings, team_corpus, tmp_path):
    """`ragft serve`'s own arm as the endpoint: it ignores the response format and answers the one user message; a
    tiny untrained model writes no JSON, so every call is asked again within the bound and counted, nothing hangs."""
    import shutil

    from ragft.service.app.api.main import create_app

    from tests.app.test_ui import serve

    corpus = Path(shutil.copytree(team_corpus, tmp_path / "served"))
    for url in serve(create_app(settings, corpus)):
        generator = OpenAIGenerator(f"{url}/v1", "base", retries=1, max_tokens=64)
        report = generate_rows(corpus, {"knowledge": 1}, generator, Budget(seconds=120))
        assert report.rows == [] and report.rejected[("knowledge", "invalid_json")] == report.calls == 4  # 4 per item
        assert generator.structured  # ragft serve accepts the field (and ignores it): no 400 to fall back on
        with pytest.raises(GenerationError, match="not found|refused"):
            OpenAIGenerator(f"{url}/v1", "no-such-arm").ask("s", "u", {})
        with pytest.raises(GenerationError, match="max-reply-tokens"):
            OpenAIGenerator(f"{url}/v1", "base", max_tokens=100_000).ask("s", "u", {})


# ---------------------------------------------------------------------------------------------- real servers

VLLM_PYTHON = Path(__file__).resolve().parents[1] / ".venv-vllm" / "bin" / "python"


@contextmanager
def started(command: list[str], url: str, log: Path, env: dict | None = None, timeout_s: float = 600):
    """A server started as its own process group, yielded once `url`/models answers, stopped with its children."""
    import os
    import signal
    import subprocess
    import time

    import httpx

    with log.open("w") as out:
        proc = subprocess.Popen(command, env=os.environ | (env or {}), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    try:
        start = time.perf_counter()
        while True:
            if proc.poll() is not None:
                pytest.fail(f"{command[0]} exited ({proc.returncode}):\n{log.read_text()[-4000:]}")
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.perf_counter() - start > timeout_s:
                pytest.fail(f"{command[0]} did not answer within {timeout_s} s:\n{log.read_text()[-4000:]}")
            time.sleep(1)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def generate_and_check(corpus: Path, url: str, *options: str) -> str:
    """`ragft corpus generate` through `url` (two items a family): it must end cleanly, print every rejection by
    reason, and write rows that validate, pass the audit's leak check and fail no check that passed before."""
    before = {c.name: c.passed for c in audit_corpus(corpus).checks}
    result = CliRunner().invoke(app, ["corpus", "generate", str(corpus), "--generator-url", url,
                                      "--generator-model", "base", "--count", "2", "--max-seconds", "300",
                                      *options], catch_exceptions=False)  # fmt: skip
    assert result.exit_code == 0, result.output
    rows, problems = check_corpus(corpus)
    assert not problems, problems[:3]
    generated = read_generated(corpus / "tasks" / GENERATED_FILE)
    assert generated and all(r.review.status == "pending" and r.generated for r in generated)
    kept = sum(int(n) for n in re.findall(r"^\w+: (\d+) item\(s\) kept", result.output, re.M))
    rejected = sum(int(n) for n in re.findall(r"^  rejected \w+ \w+: (\d+)$", result.output, re.M))
    assert kept >= 1 and kept + rejected >= 6  # near misses at least; every other item kept or counted rejected
    after = {c.name: c for c in audit_corpus(corpus, include_unreviewed=True).checks}
    assert after["generated_leaks"].passed and after["answers_in_sources"].passed, after["generated_leaks"].details
    assert [n for n, passed in before.items() if passed and not after[n].passed] == []  # no new shortcut
    return result.output


@pytest.mark.slow
def test_smoke_through_ragft_serve_with_the_embedded_model(team_corpus, tmp_path):
    """`ragft serve` on the embedded SmolLM2-135M (nothing downloads) as the endpoint: it takes the JSON Schema
    response format and ignores it, so a 135M model's prose and broken JSON reach the checks, which reject it by
    reason; a greedy repeat is not asked again, and the run ends within its budget."""
    import shutil
    import sys

    corpus = Path(shutil.copytree(team_corpus, tmp_path / "served"))
    port = free_port()
    ragft = str(Path(sys.executable).parent / "ragft")
    command = [ragft, "serve", "--corpus", str(corpus), "--port", str(port),
               "--set", "api.max_question_chars=8000"]  # a passage and its instructions are one user message  # fmt: skip
    env = {"RAGFT_DATA_DIR": str(tmp_path / "data"), "HF_HUB_OFFLINE": "1"}
    with started(command, f"http://127.0.0.1:{port}/v1", tmp_path / "serve.log", env) as url:
        output = generate_and_check(corpus, url, "--retries", "1", "--max-reply-tokens", "128")
        assert "rejected knowledge " in output and "asked on every call" in output


@pytest.mark.slow
@pytest.mark.skipif(not VLLM_PYTHON.exists(), reason="no .venv-vllm: `bench/vllm_cpu.sh install` makes it")
def test_vllm_structured_output_keeps_the_embedded_models_json_valid(team_corpus, tmp_path):
    """vLLM's CPU build on the embedded model's float32 copy: the JSON Schema response format is taken (on: a
    refusal would fail the run) and decoding under it gives JSON that parses, so no reply is rejected as invalid."""
    import shutil

    from ragft.service import models
    from ragft.service.settings import Settings

    corpus = Path(shutil.copytree(team_corpus, tmp_path / "vllm"))
    settings = Settings()
    folder = models.servable_folder(settings.models, settings.artifact_dir)
    port = free_port()
    command = [str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", folder,
               "--served-model-name", "base", "--dtype", "float32", "--host", "127.0.0.1", "--port", str(port),
               "--enforce-eager"]  # fmt: skip
    env = {"VLLM_CPU_KVCACHE_SPACE": "1", "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1"}
    with started(command, f"http://127.0.0.1:{port}/v1", tmp_path / "vllm.log", env) as url:
        output = generate_and_check(corpus, url, "--structured-output", "on")
        assert "invalid_json" not in output, output
