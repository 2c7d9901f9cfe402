"""Turning the files teams keep (PDF, Word, slides, spreadsheets, e-books, e-mail) into text with page marks.

kreuzberg converts (pdfium for PDF, its own readers for the Office formats; one wheel, no model downloads,
no OCR here): on real papers, reports, decks and Word files it kept reading order and word spacing where
markitdown ran two-column pages together, ran 14x faster, and installs in a quarter of the space
(docs/decisions/document-converter.md has the measurements). Each converted file keeps where its pages
(or slides) start, so a passage can cite "report p. 4".

A file that cannot be made into text raises `UnreadableFile` with the reason and the fix; the caller lists it
and goes on with the rest. Conversions are cached by the file's content hash (in memory, and on disk when the
CLI or the server configures a folder), so re-indexing an unchanged folder converts nothing.

Example:
    >>> from ragft.service.conversion import DocumentLimits, convert_file
    >>> converted = convert_file(Path("report.pdf"), DocumentLimits())  # doctest: +SKIP
    >>> converted.page_unit, converted.pages[:3]  # doctest: +SKIP
    ('p.', (0, 2371, 5120))
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

# What each converted suffix is called in messages, and what its page unit is (None: it has none).
CONVERTED: dict[str, tuple[str, str | None]] = {
    ".pdf": ("PDF", "p."),
    ".docx": ("Word document", None),  # Word pages are laid out by the reader: the file has no page numbers
    ".pptx": ("PowerPoint deck", "slide"),
    ".xlsx": ("Excel workbook", None),
    ".csv": ("CSV table", None),
    ".tsv": ("TSV table", None),
    ".odt": ("OpenDocument text", None),
    ".epub": ("EPUB book", None),
    ".eml": ("e-mail", None),
    ".rtf": ("RTF document", None),
}

# Bump when the text a file converts to changes for the same bytes: cached conversions are then made again.
CONVERSION_VERSION = 2  # 2: a one-page PDF or one-slide deck cites its page too


class UnreadableFile(ValueError):
    """A file that cannot be made into text: `reason` says why, `fix` what to do. The rest of the folder goes on."""

    def __init__(self, path: Path | str, reason: str, fix: str):
        self.path, self.reason, self.fix = str(path), reason, fix
        super().__init__(f"{path}: {reason}; {fix}")


@dataclass(frozen=True)
class DocumentLimits:
    """How large a file ragft converts (`documents.*` settings); a bigger one is listed as unreadable."""

    max_file_mb: float = 50.0
    max_pages: int = 2000
    timeout_s: float = 120.0


@dataclass(frozen=True)
class Converted:
    """A file's text, and the character offset where each of its pages (or slides) starts."""

    text: str
    pages: tuple[int, ...] = ()
    page_unit: str | None = None  # "p." or "slide"; None when the format has no pages


@dataclass
class ConversionCache:
    """Conversions by content hash: always in memory, and on disk under `folder` when one is given."""

    folder: Path | None = None
    _memory: dict[str, Converted] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, key: str) -> Converted | None:
        with self._lock:
            if key in self._memory:
                return self._memory[key]
        if self.folder is None:
            return None
        try:
            data = json.loads((self.folder / f"{key}.json").read_text(encoding="utf-8"))
            found = Converted(data["text"], tuple(data["pages"]), data["page_unit"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        with self._lock:
            self._memory[key] = found
        return found

    def put(self, key: str, converted: Converted) -> None:
        with self._lock:
            self._memory[key] = converted
        if self.folder is None:
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = self.folder / f".{key}.{os.getpid()}.{threading.get_ident()}.tmp"
            tmp.write_text(json.dumps({"text": converted.text, "pages": list(converted.pages),
                                       "page_unit": converted.page_unit}), encoding="utf-8")  # fmt: skip
            os.replace(tmp, self.folder / f"{key}.json")
        except OSError as exc:  # a read-only or full disk costs a conversion next time, never the index
            log.warning("could not cache a conversion in %s: %s", self.folder, exc)


_settings_lock = threading.Lock()
_limits = DocumentLimits()
_cache = ConversionCache()


def configure(limits: DocumentLimits, cache_folder: Path | None) -> None:
    """Set the limits and the on-disk cache every later conversion in this process uses (CLI and app start-up)."""
    global _limits, _cache
    with _settings_lock:
        _limits = limits
        if _cache.folder != cache_folder:
            _cache = ConversionCache(cache_folder)


def configure_from(settings) -> None:
    """`configure` from the settings object (its `documents` group and data folder)."""
    configure(settings.documents.limits(), settings.conversions_dir if settings.documents.cache else None)


def _converter_version() -> str:
    from importlib.metadata import version

    return f"kreuzberg-{version('kreuzberg')}-{CONVERSION_VERSION}"


def convert_file(path: Path, limits: DocumentLimits | None = None) -> Converted:
    """The text of one file in a CONVERTED format (cached by content), or UnreadableFile with the fix."""
    limits = limits or _limits
    path = Path(path)
    name, _ = CONVERTED[path.suffix.lower()]
    size_mb = path.stat().st_size / 1e6
    if size_mb > limits.max_file_mb:
        raise UnreadableFile(
            path, f"{size_mb:.1f} MB, over the {limits.max_file_mb:g} MB limit",
            "split it, or raise the limit (RAGFT_DOCUMENTS__MAX_FILE_MB)",
        )  # fmt: skip
    data = path.read_bytes()
    key = f"{hashlib.sha256(data).hexdigest()}-{_converter_version()}"
    cached = _cache.get(key)
    if cached is None:
        cached = _convert(path, name, limits)
        _cache.put(key, cached)
    if len(cached.pages) > limits.max_pages:
        raise UnreadableFile(
            path, f"{len(cached.pages)} pages, over the {limits.max_pages} page limit",
            "split it, or raise the limit (RAGFT_DOCUMENTS__MAX_PAGES)",
        )  # fmt: skip
    return cached


def _convert(path: Path, name: str, limits: DocumentLimits) -> Converted:
    import kreuzberg

    config = kreuzberg.ExtractionConfig(
        use_cache=False,  # ragft caches by content hash itself; kreuzberg's own cache would grow ~/.cache
        disable_ocr=True,  # no OCR engine ships here: a scan is reported, never guessed at
        pages=kreuzberg.PageConfig(extract_pages=True),
        extraction_timeout_secs=max(1, int(limits.timeout_s)),
    )
    try:
        result = kreuzberg.extract_file_sync(str(path), config=config)
    except Exception as exc:  # kreuzberg's errors (parsing, password, timeout, unknown format) are all per file
        raise _unreadable(path, name, exc) from exc
    text = result.content or ""
    if not text.strip():
        if path.suffix.lower() == ".pdf":
            raise UnreadableFile(
                path, "a PDF without a text layer (a scan?)",
                "run OCR on it first (e.g. `ocrmypdf in.pdf out.pdf`) and put the result in documents/",
            )  # fmt: skip
        raise UnreadableFile(path, f"this {name} holds no text", "remove it, or export its text to a .txt file")
    pages, unit = _page_starts(text, result.metadata or {}), CONVERTED[path.suffix.lower()][1]
    return Converted(text, pages if unit else (), unit if pages else None)


def _page_starts(text: str, metadata: dict) -> tuple[int, ...]:
    """Character offsets where each page starts, from kreuzberg's byte boundaries (UTF-8 offsets into `text`)."""
    bounds = ((metadata.get("pages") or {}).get("boundaries")) or []
    if not bounds:
        return ()
    raw = text.encode("utf-8")
    starts = []
    for b in sorted(bounds, key=lambda b: b["page_number"]):
        starts.append(len(raw[: int(b["byte_start"])].decode("utf-8", errors="ignore")))
    return tuple(starts)


def _unreadable(path: Path, name: str, exc: Exception) -> UnreadableFile:
    message = str(exc).split("\n")[0]
    lowered = message.lower()
    if "password" in lowered or "encrypt" in lowered:
        return UnreadableFile(path, f"a password-protected {name}", "save a copy without the password and use that")
    if "timeout" in lowered or "timed out" in lowered:
        return UnreadableFile(
            path, f"converting it took over the time limit ({message})",
            "split it, or raise RAGFT_DOCUMENTS__TIMEOUT_S",
        )  # fmt: skip
    return UnreadableFile(
        path, f"not a readable {name} ({type(exc).__name__}: {message[:200]})",
        f"open it and save it again as {name}, or export it to PDF; if it is not a {name}, fix its suffix",
    )  # fmt: skip
