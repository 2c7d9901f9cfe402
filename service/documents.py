"""Reading a corpus's documents from disk into plain-text records.

Document ids are the file path relative to the documents folder, without its suffix for text files
(`products/kestrel-k2`) and with it for converted ones (`reports/annual-2025.pdf`), or the `id` field of a
`.jsonl` row; task rows cite them in
`source_docs`, so they must be stable and unique. Markdown, text, HTML and `.jsonl` are read here;
PDF, Word, slides, spreadsheets, EPUB and e-mail are converted by `ragft.service.conversion`, keeping where
their pages start. A file that cannot be read is listed with its reason and fix (`DocumentScan.unreadable`)
and the rest is read; hidden files (a leading dot: editors' and ragft's own staging files) are not documents.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from ragft.service.conversion import CONVERTED, UnreadableFile, convert_file
from ragft.service.folders import sync_folder

TEXT_SUFFIXES = (".md", ".txt", ".html", ".htm", ".jsonl")
SUFFIXES = TEXT_SUFFIXES + tuple(CONVERTED)
log = logging.getLogger(__name__)


class DocumentError(ValueError):
    """A document file that cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class Document:
    doc_id: str
    text: str
    source: str  # file (and line, for jsonl) the text came from
    pages: tuple[int, ...] = ()  # character offsets where each page (or slide) starts; () for unpaged formats
    page_unit: str | None = None  # "p." or "slide"

    @property
    def content_hash(self) -> str:
        digest = hashlib.sha256(self.text.encode("utf-8"))
        if self.pages:  # unpaged documents keep the hash of their text alone, as indexes stored it
            digest.update(json.dumps([self.page_unit, *self.pages]).encode())
        return digest.hexdigest()

    def page_label(self, char: int) -> str | None:
        """Where character `char` sits, for citations: 'p. 4', 'slide 3', or None for unpaged documents."""
        if not self.pages:
            return None
        return f"{self.page_unit} {max(1, bisect.bisect_right(self.pages, char))}"


@dataclass(frozen=True)
class Unreadable:
    """A file under documents/ that was not read, why, and what to do about it."""

    file: str
    reason: str
    fix: str

    def __str__(self) -> str:
        return f"{self.file}: {self.reason} (fix: {self.fix})"


@dataclass(frozen=True)
class DocumentScan:
    """What a documents folder yielded: the documents, and every file that could not be read."""

    documents: list[Document]
    unreadable: list[Unreadable] = field(default_factory=list)


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


_IMAGES = {".png", ".jpg", ".jpeg", ".gif", ".tif", ".tiff", ".bmp", ".webp", ".heic"}
_LEGACY = {".doc": "Word 97-2003", ".ppt": "PowerPoint 97-2003", ".xls": "Excel 97-2003"}


def _unknown_type(path: Path, rel: str) -> UnreadableFile:
    suffix = path.suffix.lower()
    if suffix in _IMAGES:
        return UnreadableFile(rel, "an image: ragft reads text, not pictures", "run OCR on it and add the text as .txt, or remove it")  # fmt: skip
    if suffix in _LEGACY:
        return UnreadableFile(rel, f"a {_LEGACY[suffix]} file", f"save it as {suffix}x (or PDF) and add that instead")
    return UnreadableFile(
        rel, f"unknown type '{suffix or '(no suffix)'}'",
        f"convert it to one of {', '.join(SUFFIXES)}, or move it out of the documents folder",
    )  # fmt: skip


def read_document_file(path: Path, root: Path) -> list[Document]:
    """All documents in one file (several for .jsonl); UnreadableFile when it cannot be made into text."""
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
    if suffix in CONVERTED:
        try:
            converted = convert_file(path)
        except UnreadableFile as exc:
            raise UnreadableFile(rel, exc.reason, exc.fix) from exc
        # a converted file's id keeps its suffix ("report.pdf"): citations name the file a team knows, and
        # report.pdf beside report.docx (one document exported twice) are two documents, not a clash
        return [Document(rel, converted.text, rel, converted.pages, converted.page_unit)]
    raise _unknown_type(path, rel)


def _document_folder(folder: Path) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise DocumentError(f"{folder}: no such folder. Give a corpus folder or its documents/ folder.")
    return folder / "documents" if (folder / "documents").is_dir() else folder


def _candidate_files(folder: Path) -> list[Path]:
    """Every file under `folder` that is not hidden (nor inside a hidden folder)."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def scan_documents(folder: Path) -> DocumentScan:
    """Every readable document under `folder` (a corpus or its documents/), sorted by id, and every file that
    could not be read with its reason and fix; refuses duplicate ids and a folder with nothing readable."""
    folder = _document_folder(folder)
    docs: dict[str, Document] = {}
    unreadable: list[Unreadable] = []
    for path in _candidate_files(folder):
        try:
            found = read_document_file(path, folder)
        except FileNotFoundError:  # renamed aside by a document change between listing and reading: not a document
            continue  # now (a reader scoring a run beside a DELETE got a 500 in the 10-minute two-server soak)
        except UnreadableFile as exc:
            unreadable.append(Unreadable(path.relative_to(folder).as_posix(), exc.reason, exc.fix))
            continue
        for doc in found:
            if doc.doc_id in docs:
                raise DocumentError(
                    f"document id '{doc.doc_id}' appears twice: {docs[doc.doc_id].source} and {doc.source}. "
                    "Rename one of them."
                )
            docs[doc.doc_id] = doc
    if not docs:
        listed = "".join(f"\n  {u}" for u in unreadable)
        raise DocumentError(f"{folder}: no documents found (looked for {', '.join(SUFFIXES)} files).{listed}")
    return DocumentScan([docs[k] for k in sorted(docs)], unreadable)


def load_documents(folder: Path) -> list[Document]:
    """Every readable document under `folder`, sorted by id (files that cannot be read are logged and left out:
    `scan_documents` lists them, and `ragft index` prints them)."""
    scan = scan_documents(folder)
    for u in scan.unreadable:
        if (str(folder), u) not in _warned:  # once per process: validation, audit and a run each read the folder
            _warned.add((str(folder), u))
            log.warning("document not read: %s", u)
    return scan.documents


_warned: set[tuple[str, Unreadable]] = set()


class SharedDocumentFile(DocumentError):
    """A document id that names, or lives in, a file holding other documents too: a PUT or DELETE of it would
    replace them all, so it is refused; the message names the file to edit instead."""


def _named_files(folder: Path, doc_id: str) -> list[Path]:
    """The files in `folder` named `doc_id` plus a document suffix."""
    return [folder / f"{doc_id}{suffix}" for suffix in SUFFIXES if (folder / f"{doc_id}{suffix}").is_file()]


def document_files(folder: Path, doc_id: str) -> list[Path]:
    """The files that hold document `doc_id` and nothing else (what a PUT or DELETE of `doc_id` replaces).

    Matched on document ids, not file names: `faq.jsonl` holding rows `faq-1` and `faq-2` is no document `faq`,
    and row `faq-1` cannot be replaced without the file's other rows. Both raise SharedDocumentFile."""
    folder = Path(folder)
    named = _named_files(folder, doc_id)
    for path in sorted({*named, *(p for p in folder.rglob("*.jsonl") if p.is_file())}):
        ids = [d.doc_id for d in read_document_file(path, folder)]
        rel = path.relative_to(folder).as_posix()
        if path in named and ids != [doc_id]:
            raise SharedDocumentFile(
                f"'{doc_id}' names the file {rel}, which holds {len(ids)} documents ({', '.join(ids[:5])}"
                f"{', ...' if len(ids) > 5 else ''}), not one document '{doc_id}'; address a document by its id, "
                f"or edit {rel} in the corpus folder and re-index"
            )
        if path not in named and doc_id in ids:
            raise SharedDocumentFile(
                f"document '{doc_id}' is one of {len(ids)} rows of {rel}; replacing or deleting it alone would "
                f"rewrite that file: edit {rel} in the corpus folder and re-index (ragft index)"
            )
    return named


def write_synced(path: Path, data: bytes) -> None:
    """Write `path` and fsync it: once this returns, its content is on disk."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


# A change in flight stages files beside the documents under hidden names whose suffix is no document
# suffix, so no reader takes them for documents: ".<doc_id>.md.new-<tag>", ".<old name>.old-<tag>".
_NEW, _OLD = ".new-", ".old-"


@contextmanager
def change_document(folder: Path, doc_id: str, text: str | None) -> Iterator[None]:
    """Store `text` as `<doc_id>.md` in `folder` (delete the document when `text` is None) for the block.

    The new text is written and fsynced beside the old files, which are renamed aside, then renamed into
    place; if the block or any step raises (a full disk, a file-size limit, indexing refusing the text), the
    old files are put back. After the block the old files are removed. A crash part-way leaves the staged
    files, which `recover_document_changes` finishes or undoes at the next start.
    """
    folder = Path(folder)
    tag = uuid.uuid4().hex[:12]
    target = folder / f"{doc_id}.md"
    staged = folder / f".{doc_id}.md{_NEW}{tag}"
    aside: list[tuple[Path, Path]] = []
    placed = False
    try:
        if text is not None:
            write_synced(staged, text.encode("utf-8"))
        for path in document_files(folder, doc_id):
            moved = folder / f".{path.name}{_OLD}{tag}"
            os.rename(path, moved)
            aside.append((path, moved))
        if text is not None:
            os.rename(staged, target)
            placed = True
        sync_folder(folder)
        yield
    except BaseException:
        if placed:
            target.unlink(missing_ok=True)
        staged.unlink(missing_ok=True)
        for path, moved in reversed(aside):
            os.rename(moved, path)
        sync_folder(folder)
        raise
    for _, moved in aside:
        moved.unlink()
    sync_folder(folder)


def recover_document_changes(folder: Path, indexed: dict[str, str] | None) -> list[str]:
    """Finish or undo document changes a crash interrupted; returns the ids it touched.

    `indexed` maps doc ids to the content hashes the index holds. A change the index already reflects
    is finished (its old files removed); any other is undone (the old files put back), so the documents
    and the index agree again. Staged new files that never replaced anything are removed.
    """
    folder = Path(folder)
    for staged in folder.glob(f".*{_NEW}*"):
        staged.unlink()
    changes: dict[tuple[str, str], list[Path]] = {}
    for moved in folder.glob(f".*{_OLD}*"):
        name, tag = moved.name[1:].rsplit(_OLD, 1)
        changes.setdefault((name.rsplit(".", 1)[0], tag), []).append(moved)
    for (doc_id, _), moved_files in sorted(changes.items()):
        current = [d for p in _named_files(folder, doc_id) for d in read_document_file(p, folder) if d.doc_id == doc_id]
        now = current[0].content_hash if current else None
        if indexed is None or indexed.get(doc_id) != now:  # the index still holds the old text: undo
            for path in _named_files(folder, doc_id):
                path.unlink()
            for moved in moved_files:
                os.rename(moved, folder / moved.name[1:].rsplit(_OLD, 1)[0])
        else:
            for moved in moved_files:
                moved.unlink()
    if changes:
        sync_folder(folder)
    return sorted({doc_id for doc_id, _ in changes})
