"""Splitting documents into overlapping windows of embedder tokens.

Chunks are cut on the embedder's own tokens, so a chunk never exceeds what the embedder
reads (text past `max_seq_length` would be silently ignored), and keep character offsets
into the document so a passage can be traced back to its source.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ragft.service.documents import Document


@dataclass(frozen=True)
class Chunk:
    chunk_id: str  # "<doc_id>#<n>"
    doc_id: str
    text: str
    start_char: int
    end_char: int
    page: str | None = None  # where the chunk starts in a paged document: "p. 4", "slide 3"; None otherwise

    def stored(self) -> dict:
        """The chunk as a line of chunks.jsonl (no page key for unpaged documents: their lines stay as before)."""
        row = asdict(self)
        if self.page is None:
            del row["page"]
        return row


def chunk_document(doc: Document, tokenizer, chunk_tokens: int, overlap_tokens: int) -> list[Chunk]:
    """Windows of `chunk_tokens` tokens stepping by `chunk_tokens - overlap_tokens`; none for blank text."""
    if not doc.text.strip():
        return []
    offsets = tokenizer(doc.text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    if not offsets:
        return []
    step = chunk_tokens - overlap_tokens
    chunks = []
    for n, start in enumerate(range(0, len(offsets), step)):
        window = offsets[start : start + chunk_tokens]
        begin, end = window[0][0], window[-1][1]
        chunks.append(Chunk(f"{doc.doc_id}#{n}", doc.doc_id, doc.text[begin:end], begin, end, doc.page_label(begin)))
        if start + chunk_tokens >= len(offsets):
            break
    return chunks
