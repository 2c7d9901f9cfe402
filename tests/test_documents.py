import pytest
from ragft.service.documents import DocumentError, html_to_text, load_documents


def test_loads_every_format_with_path_ids(corpus):
    (corpus / "documents" / "extra.jsonl").write_text(
        '{"id": "faq-1", "text": "Q and A"}\n\n{"id": "faq-2", "text": "more"}\n'
    )
    docs = {d.doc_id: d for d in load_documents(corpus)}
    assert set(docs) == {"kestrel-k2", "kestrel-k4", "camera", "faq-1", "faq-2"}
    assert "battery lasts 12 hours" in docs["camera"].text
    assert "x{}" not in docs["camera"].text  # style content dropped
    assert docs["faq-2"].source == "extra.jsonl:3"


def test_html_blocks_become_lines():
    assert html_to_text("<h1>T</h1><p>a <b>b</b></p><script>evil()</script><p>c</p>") == "T\na b\nc"


def test_non_utf8_bytes_are_replaced_not_fatal(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"price \xff\xfe $5")
    [doc] = load_documents(tmp_path)
    assert doc.text == "price \ufffd\ufffd $5"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("a.jsonl", '{"id": "x", "text": "ok"}\n{not json}\n', "a.jsonl:2: not valid JSON"),
        ("a.jsonl", '{"id": 3, "text": "ok"}\n', 'a.jsonl:1: each line must be an object with string fields "id"'),
    ],
)
def test_bad_jsonl_names_file_and_line(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(DocumentError, match=message):
        load_documents(tmp_path)


def test_duplicate_ids_and_empty_folders_are_refused(tmp_path):
    with pytest.raises(DocumentError, match="no documents found"):
        load_documents(tmp_path)
    (tmp_path / "a.md").write_text("one")
    (tmp_path / "a.txt").write_text("two")
    with pytest.raises(DocumentError, match="document id 'a' appears twice"):
        load_documents(tmp_path)
    with pytest.raises(DocumentError, match="no such folder"):
        load_documents(tmp_path / "missing")


def test_a_file_changed_away_between_listing_and_reading_is_skipped(tmp_path, monkeypatch):
    """A document PUT or DELETE renames files aside while a reader scores a run: a listed file may be gone when it is
    read (the two-server soak's reader got a 500 from it)."""
    from ragft.service import documents

    (tmp_path / "a.md").write_text("one")
    listed = documents._candidate_files
    monkeypatch.setattr(documents, "_candidate_files", lambda folder: [*listed(folder), folder / "gone.md"])
    assert [d.doc_id for d in load_documents(tmp_path)] == ["a"]
