import pytest
from ragft.service.chunking import chunk_document
from ragft.service.documents import Document
from transformers import AutoTokenizer


@pytest.fixture
def tokenizer(tiny_models):
    return AutoTokenizer.from_pretrained(tiny_models[1].with_name(tiny_models[1].name + "-bert"))


@pytest.mark.parametrize("text", ["", "   \n\t  "])
def test_blank_documents_give_no_chunks(tokenizer, text):
    assert chunk_document(Document("d", text, "d.md"), tokenizer, 8, 2) == []


def test_one_huge_line_is_split_with_overlap_and_offsets(tokenizer):
    words = [f"w{i}" for i in range(100)]  # unknown words: one token each
    doc = Document("big", " ".join(words), "big.txt")
    chunks = chunk_document(doc, tokenizer, 10, 3)
    assert [c.chunk_id for c in chunks[:2]] == ["big#0", "big#1"]
    for c in chunks:
        assert doc.text[c.start_char : c.end_char] == c.text
        assert len(c.text.split()) <= 10
    assert chunks[0].text.split()[-3:] == chunks[1].text.split()[:3]  # 3 tokens of overlap
    assert chunks[-1].text.split()[-1] == "w99"  # nothing lost at the end
    assert sum(len(c.text.split()) for c in chunks) - 3 * (len(chunks) - 1) == 100


def test_short_document_is_one_chunk(tokenizer):
    [chunk] = chunk_document(Document("s", "the router costs $249 .", "s.md"), tokenizer, 50, 10)
    assert (chunk.start_char, chunk.end_char) == (0, len("the router costs $249 ."))
