"""`ragft corpus init`: a team's real files and spreadsheets in, a valid corpus out (or nothing, with the fix)."""

import json
from pathlib import Path

import pytest
from ragft.eval.corpus.corpus_import import (
    SheetError,
    assign_splits,
    infer_schema,
    plan_corpus,
    read_sheet,
    write_corpus,
)
from ragft.eval.tasks import load_tasks
from ragft.service.app.cli import app
from typer.testing import CliRunner

FILES = Path(__file__).parent / "data" / "team_files"

QUESTIONS = """Question,Answer,Source
In what year was the typewriter patented?,1868,multi_page.pdf
Who patented the typewriter?,Christopher Latham Sholes,
Which data set was used for hyper-parameter optimization?,PubTabNet,
How much faster is OTSL inference than HTML?,2x,
Which activity does the summer document start with?,Swimming in the lake,word_sample.docx
What is the title of the first slide?,Test Table Slide,
When did IBM introduce the electric typewriter?,"1935 | nineteen thirty-five",
What does the Kestrel K9 cost?,,
Who founded the Wang 1200 division?,Jane Doe,
"""


@pytest.fixture
def team(tmp_path) -> Path:
    """A team's folder: three real PDFs/Word/PowerPoint files, a scan, and a questions sheet."""
    docs = tmp_path / "team" / "docs"
    docs.mkdir(parents=True)
    for name in (
        "2305.03393v1-pg9.pdf",
        "multi_page.pdf",
        "word_sample.docx",
        "powerpoint_sample.pptx",
        "ocr_test.pdf",
    ):
        (docs / name).write_bytes((FILES / name).read_bytes())
    (tmp_path / "team" / "questions.csv").write_text(QUESTIONS)
    return tmp_path / "team"


def test_questions_become_located_knowledge_and_abstention_rows(team):
    plan = plan_corpus(team / "docs", questions=team / "questions.csv")
    rows = {r.id: r for r in plan.rows}
    assert [u.file for u in plan.scan.unreadable] == ["ocr_test.pdf"]
    patented = rows["q-0002"]
    assert patented.family == "knowledge" and patented.split == "test" and patented.kind == "unseen"
    assert patented.source_docs == ["multi_page.pdf"] and patented.answers == ["1868"]
    assert rows["q-0004"].source_docs == ["2305.03393v1-pg9.pdf"]  # located without a source cell
    assert rows["q-0006"].source_docs == ["word_sample.docx"]
    assert rows["q-0007"].source_docs == ["powerpoint_sample.pptx"]
    assert rows["q-0008"].answers == ["1935", "nineteen thirty-five"]  # several answers in one cell
    assert rows["a-0009"].family == "abstention" and not rows["a-0009"].answers  # no answer: abstention
    assert "q-0010" not in rows and "Jane Doe" in plan.unlocated[0]  # in no document: listed, left out
    kept = plan_corpus(team / "docs", questions=team / "questions.csv", keep_unlocated=True)
    assert "q-0010" in {r.id for r in kept.rows}


def test_init_writes_a_corpus_that_validates_audits_and_cites_pages(team, settings):
    result = CliRunner().invoke(
        app, ["corpus", "init", str(team / "corpus"), "--documents", str(team / "docs"),
              "--questions", str(team / "questions.csv"), "--set", f"data_dir={settings.data_dir}"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "answers located in the documents: 7 of 8 (88%)" in result.output
    assert "ocr_test.pdf: a PDF without a text layer" in result.output
    assert "validate: OK" in result.output and "audit of" in result.output
    assert "next: ragft index" in result.output
    corpus = team / "corpus"
    rows = load_tasks(corpus)
    assert len(rows) == 8 and (corpus / "DATA_CARD.md").read_text().count("Jane Doe") == 1
    assert sorted(p.name for p in (corpus / "documents").iterdir()) == sorted(p.name for p in (team / "docs").iterdir())


def test_init_on_a_folder_that_exists_or_bad_input_writes_nothing(team):
    (team / "taken").mkdir()
    runner = CliRunner()
    result = runner.invoke(app, ["corpus", "init", str(team / "taken"), "--documents", str(team / "docs"),
                                 "--questions", str(team / "questions.csv")])  # fmt: skip
    assert result.exit_code == 2 and "already exists" in result.output
    (team / "dupes.csv").write_text("question,answer\nWho patented it?,Sholes\nwho patented it,Sholes\n")
    result = runner.invoke(app, ["corpus", "init", str(team / "new"), "--documents", str(team / "docs"),
                                 "--questions", str(team / "dupes.csv")])  # fmt: skip
    assert result.exit_code == 2 and "dupes.csv:3: the question repeats row 2" in result.output
    assert not (team / "new").exists() and not list(team.glob(".new.init-*"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("query text,reply\nWhat?,x\n", r"no question column; name one of question, query.*columns found: query_text"),
        ("question,answer\n,1868\n", r"bad.csv:2: column 'question' is empty"),
        ("question,answer,split\nWhen?,1868,later\n", r"bad.csv:2: column 'split' says 'later'"),
        ("question,answer\nWhen?," + "x" * 5000 + "\n", r"bad.csv:2: column 'answer' holds 5000 characters"),
        ("question,answer,source\nWhen?,1868,missing.pdf\n", r"bad.csv:2: column 'source' names 'missing.pdf'"),
        ("", r"bad.csv: the sheet is empty"),
    ],
)
def test_bad_sheets_name_file_row_and_column(team, content, message):
    (team / "bad.csv").write_text(content)
    with pytest.raises(SheetError, match=message):
        plan_corpus(team / "docs", questions=team / "bad.csv")


def test_a_named_column_and_an_xlsx_sheet_are_read(team):
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "FAQ"
    sheet.append(["Frage", "Antwort"])
    sheet.append(["Who patented the typewriter?", "Christopher Latham Sholes"])
    book.save(team / "faq.xlsx")
    plan = plan_corpus(team / "docs", questions=team / "faq.xlsx", sheet="FAQ",
                       columns={"question": "Frage", "answer": "Antwort"})  # fmt: skip
    assert [r.source_docs for r in plan.rows] == [["multi_page.pdf"]]
    with pytest.raises(SheetError, match="no sheet 'Sheet9'; its sheets are: FAQ"):
        read_sheet(team / "faq.xlsx", sheet="Sheet9")


def test_examples_become_label_json_or_style_rows_with_stratified_splits(team):
    labels = "input,expected\n" + "".join(
        f"message {i} about money,{'refund' if i % 3 else 'setup'}\n" for i in range(30)
    )
    (team / "labels.csv").write_text(labels)
    plan = plan_corpus(team / "docs", examples=team / "labels.csv", test_share=0.3, seed=1)
    assert plan.behaviour_kind == "labels"
    rows = plan.rows
    assert {r.labels[0] for r in rows} == {"refund"} and rows[0].instruction.startswith("Classify the input")
    for label in ("refund", "setup"):
        tests = [r for r in rows if r.label == label and r.split == "test"]
        assert len(tests) >= 0.3 * sum(r.label == label for r in rows) and len(tests) < sum(
            r.label == label for r in rows
        )
    again = plan_corpus(team / "docs", examples=team / "labels.csv", test_share=0.3, seed=1)
    assert [r.split for r in again.rows] == [r.split for r in rows]  # seeded

    objects = [{"priority": "high" if i % 2 else "low", "team": "billing", "count": i} for i in range(8)]
    (team / "json.jsonl").write_text("".join(json.dumps({"input": f"ticket {i}", "expected": json.dumps(o)}) + "\n"
                                             for i, o in enumerate(objects)))  # fmt: skip
    plan = plan_corpus(team / "docs", examples=team / "json.jsonl")
    assert plan.behaviour_kind == "json" and plan.schema["properties"]["priority"]["enum"] == ["high", "low"]
    assert plan.schema["properties"]["count"] == {"type": "integer"} and plan.rows[0].expected == objects[0]

    free = "input,output\n" + "".join(f"question {i},A free answer number {i}.\n" for i in range(6))
    (team / "free.csv").write_text(free)
    with pytest.raises(SheetError, match="free text.*--max-words"):
        plan_corpus(team / "docs", examples=team / "free.csv")
    plan = plan_corpus(team / "docs", examples=team / "free.csv", style={"max_words": 12})
    assert plan.behaviour_kind == "style" and plan.rows[0].style.max_words == 12


def test_splits_keep_given_values_and_hold_out_at_least_the_share():
    splits = assign_splits(["a"] * 10 + ["b"] * 3, [None] * 12 + ["train"], 0.3, seed=0)
    assert splits[12] == "train"
    assert splits[:10].count("test") == 3 and splits[10:12].count("test") == 1


def test_schema_inference_marks_optional_fields():
    schema = infer_schema([{"a": "x", "b": 1}, {"a": "y"}])
    assert schema["required"] == ["a"] and schema["properties"]["b"] == {"type": "integer"}


def test_write_refuses_an_existing_folder(team):
    plan = plan_corpus(team / "docs", questions=team / "questions.csv")
    write_corpus(plan, team / "out")
    with pytest.raises(SheetError, match="already exists"):
        write_corpus(plan, team / "out")
