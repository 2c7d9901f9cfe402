"""Converting a team's real files (tests/data/team_files: PDF, Word, PowerPoint written by others) to text."""

from pathlib import Path

import pytest
from ragft.service import conversion
from ragft.service.conversion import ConversionCache, DocumentLimits, UnreadableFile, convert_file
from ragft.service.documents import DocumentError, load_documents, scan_documents

FILES = Path(__file__).parent / "data" / "team_files"


@pytest.fixture
def team_folder(tmp_path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    for name in ("2305.03393v1-pg9.pdf", "multi_page.pdf", "word_sample.docx", "powerpoint_sample.pptx"):
        (folder / name).write_bytes((FILES / name).read_bytes())
    return folder


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch):
    """Each test converts afresh (the process-wide cache would carry conversions between tests)."""
    monkeypatch.setattr(conversion, "_cache", ConversionCache())


def test_pdf_keeps_reading_order_spacing_and_pages():
    converted = convert_file(FILES / "2305.03393v1-pg9.pdf")
    # words stay apart (markitdown ran them together: "highlydiversesetoftables"), lines in reading order
    assert "highly diverse set of tables" in converted.text
    assert converted.text.index("5.1 Hyper Parameter Optimization") < converted.text.index("Table 1. HPO performed")
    multi = convert_file(FILES / "multi_page.pdf")
    assert multi.page_unit == "p." and len(multi.pages) == 5 and multi.pages[0] == 0
    assert list(multi.pages) == sorted(multi.pages)


def test_word_and_slides_convert_with_slide_numbers():
    word = convert_file(FILES / "word_sample.docx")
    assert "Swimming in the lake" in word.text and word.pages == ()  # Word files carry no page numbers
    deck = convert_file(FILES / "powerpoint_sample.pptx")
    assert deck.page_unit == "slide" and len(deck.pages) == 3
    assert "Test Table Slide" in deck.text[: deck.pages[1]]


def test_passages_cite_file_and_page(team_folder):
    docs = {d.doc_id: d for d in load_documents(team_folder)}
    assert set(docs) == {"2305.03393v1-pg9.pdf", "multi_page.pdf", "word_sample.docx", "powerpoint_sample.pptx"}
    report = docs["multi_page.pdf"]
    at = report.text.index("WordPerfect")
    assert report.page_label(at) == f"p. {1 + sum(1 for start in report.pages if start <= at) - 1}"
    assert report.page_label(0) == "p. 1" and report.page_label(len(report.text) - 1) == "p. 5"
    assert docs["powerpoint_sample.pptx"].page_label(docs["powerpoint_sample.pptx"].pages[2]) == "slide 3"
    assert docs["word_sample.docx"].page_label(10) is None


def test_every_unreadable_file_is_listed_with_a_fix_and_the_rest_is_read(team_folder):
    (team_folder / "scan.pdf").write_bytes((FILES / "ocr_test.pdf").read_bytes())
    (team_folder / "broken.pdf").write_bytes(b"%PDF-1.4\nthis is not a pdf body")
    (team_folder / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (team_folder / "old.doc").write_bytes(b"\xd0\xcf\x11\xe0")
    (team_folder / "notes.bin").write_bytes(b"\x00\x01")
    (team_folder / ".DS_Store").write_bytes(b"\x00")  # hidden: not a document
    scan = scan_documents(team_folder)
    assert len(scan.documents) == 4
    reasons = {u.file: (u.reason, u.fix) for u in scan.unreadable}
    assert set(reasons) == {"scan.pdf", "broken.pdf", "photo.png", "old.doc", "notes.bin"}
    assert "without a text layer" in reasons["scan.pdf"][0] and "OCR" in reasons["scan.pdf"][1]
    assert "not a readable PDF" in reasons["broken.pdf"][0]
    assert "image" in reasons["photo.png"][0]
    assert ".docx" in reasons["old.doc"][1]
    assert "unknown type '.bin'" in reasons["notes.bin"][0]


def test_a_folder_of_nothing_readable_is_an_error_naming_each_file(tmp_path):
    (tmp_path / "scan.pdf").write_bytes((FILES / "ocr_test.pdf").read_bytes())
    with pytest.raises(DocumentError, match=r"no documents found(.|\n)*scan.pdf: a PDF without a text layer"):
        load_documents(tmp_path)


def test_size_and_page_limits_are_settings_with_clear_errors(team_folder):
    with pytest.raises(UnreadableFile, match=r"over the 0.01 MB limit.*RAGFT_DOCUMENTS__MAX_FILE_MB"):
        convert_file(team_folder / "multi_page.pdf", DocumentLimits(max_file_mb=0.01))
    with pytest.raises(UnreadableFile, match=r"5 pages, over the 4 page limit.*RAGFT_DOCUMENTS__MAX_PAGES"):
        convert_file(team_folder / "multi_page.pdf", DocumentLimits(max_pages=4))


def test_an_unchanged_folder_is_converted_once_even_across_processes(team_folder, tmp_path, monkeypatch):
    calls = []
    real = conversion._convert
    monkeypatch.setattr(conversion, "_convert", lambda *a: calls.append(a[0].name) or real(*a))
    conversion.configure(DocumentLimits(), tmp_path / "conversions")
    first = scan_documents(team_folder).documents
    assert sorted(calls) == sorted(p.name for p in team_folder.iterdir())
    calls.clear()
    conversion._cache = ConversionCache(tmp_path / "conversions")  # a new process: only the disk cache is left
    again = scan_documents(team_folder).documents
    assert calls == [] and again == first
    (team_folder / "word_sample.docx").write_bytes((FILES / "word_sample.docx").read_bytes() + b"\0")
    convert_file(team_folder / "word_sample.docx")  # changed bytes (a trailing byte a zip reader ignores)
    assert calls == ["word_sample.docx"]  # ... are converted again, the rest is not
    conversion.configure(DocumentLimits(), None)


def test_a_one_page_pdf_cites_its_page():
    [doc] = [d for d in load_documents(FILES) if d.doc_id == "2305.03393v1-pg9.pdf"]
    assert doc.page_label(100) == "p. 1"


def test_a_file_that_turns_unreadable_keeps_its_last_indexed_version(settings, team_folder):
    from ragft.service.runtime import Runtime

    corpus = team_folder.parent
    (corpus / "docs").rename(corpus / "documents")
    runtime = Runtime(settings, corpus)
    first = runtime.index()
    assert "multi_page.pdf" in first.added and not first.unreadable
    (corpus / "documents" / "multi_page.pdf").write_bytes(b"%PDF-1.4\ntruncated by a bad sync")
    again = runtime.index()
    assert [u.file for u in again.unreadable] == ["multi_page.pdf"] and again.kept == ["multi_page.pdf"]
    assert again.deleted == [] and "its last readable version stays indexed" in again.summary()
    [found] = runtime.retriever().search(["Who patented the typewriter in 1868?"], 5)
    assert "multi_page.pdf" in {p.doc_id for p in found}
