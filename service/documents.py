"""Reading a corpus's documents from disk into plain-text records.

Document ids are the file path relative to the documents folder, without its suffix
(`products/kestrel-k2`), or the `id` field of a `.jsonl` row; task rows cite them in
`source_docs`, so they must be stable and unique.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

SUFFIXES = (".md", ".txt", ".html", ".htm", ".jsonl")


class DocumentError(ValueError):
    """A document file that cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class Document:
    doc_id: str
    text: str
    source: str  # file (and line, for jsonl) the text came from

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


class _TextExtractor(HTMLParser):
    """Keeps visible text, drops script/style, and breaks lines at block elements."""

    BLOCKS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "section", "article"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")
        elif tag in ("td", "th"):
            self.parts.append(" | ")

    def handle_endtag(self, tag):
        if tag in ("script", "style") and self._skip:
            self._skip -= 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    parser = _TextExtractor()
    parser.feed(html)
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return "\n".join(line for line in lines if line)


def _read_text(path: Path) -> str:
    """Decode as UTF-8; stray bytes become U+FFFD rather than failing a whole corpus."""
    return path.read_bytes().decode("utf-8", errors="replace")


def read_document_file(path: Path, root: Path) -> list[Document]:
    """All documents in one file (several for .jsonl)."""
    rel = path.relative_to(root).as_posix()
    stem_id = rel.rsplit(".", 1)[0]
    suffix = path.suffix.lower()
    if suffix in (".md", ".txt"):
        return [Document(stem_id, _read_text(path), rel)]
    if suffix in (".html", ".htm"):
        return [Document(stem_id, html_to_text(_read_text(path)), rel)]
    if suffix == ".jsonl":
        docs = []
        for lineno, line in enumerate(_read_text(path).splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DocumentError(f"{path}:{lineno}: not valid JSON ({exc.msg}).") from exc
            if not isinstance(row, dict) or not isinstance(row.get("id"), str) or not isinstance(row.get("text"), str):
                raise DocumentError(f'{path}:{lineno}: each line must be an object with string fields "id" and "text".')
            docs.append(Document(row["id"], row["text"], f"{rel}:{lineno}"))
        return docs
    raise DocumentError(f"{path}: unsupported suffix '{path.suffix}'; use one of {', '.join(SUFFIXES)}.")


def load_documents(folder: Path) -> list[Document]:
    """Every supported document under `folder`, sorted by id; refuses duplicate ids and empty corpora."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DocumentError(f"{folder}: no such folder. Give a corpus folder or its documents/ folder.")
    if (folder / "documents").is_dir():
        folder = folder / "documents"
    docs: dict[str, Document] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES):
        for doc in read_document_file(path, folder):
            if doc.doc_id in docs:
                raise DocumentError(
                    f"document id '{doc.doc_id}' appears twice: {docs[doc.doc_id].source} and {doc.source}. "
                    "Rename one of them."
                )
            docs[doc.doc_id] = doc
    if not docs:
        raise DocumentError(f"{folder}: no documents found (looked for {', '.join(SUFFIXES)} files).")
    return [docs[k] for k in sorted(docs)]
