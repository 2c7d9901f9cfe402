"""The retrieval index: embed chunks once, search them many times.

An index folder holds `manifest.json` (embedder, chunking parameters, one content hash per
document), `chunks.jsonl`, `embeddings.npy` and `index.faiss`. Rebuilding compares hashes,
so an unchanged corpus embeds nothing and an edited one embeds only the edited documents;
the FAISS structure itself is rebuilt from the stored vectors, which costs milliseconds for
a flat index. Vectors are L2-normalised, so inner product is cosine similarity.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError
from ragft.service import folders
from ragft.service.chunking import Chunk, chunk_document
from ragft.service.documents import Document
from ragft.service.settings import RetrievalSettings

FORMAT_VERSION = 1
INDEX_FILE = "index.faiss"
INDEX_MANIFEST = "manifest.json"


class IndexMissing(RuntimeError):
    """No usable index on disk; the message says which command builds one."""


@dataclass(frozen=True)
class Passage:
    chunk_id: str
    doc_id: str
    text: str
    score: float
    start_char: int
    end_char: int
    page: str | None = None  # "p. 4", "slide 3" in a paged document (PDF, slides); None otherwise

    @property
    def citation(self) -> str:
        """How answers and reports name the passage's source: 'report.pdf, p. 4', or the document id."""
        return f"{self.doc_id}, {self.page}" if self.page else self.doc_id


@dataclass
class IndexReport:
    """What one `build_index` call did, for the CLI and for cost accounting."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: int = 0
    chunks_embedded: int = 0
    chunks_total: int = 0
    seconds: float = 0.0
    full_rebuild_reason: str | None = None
    unreadable: list = field(default_factory=list)  # ragft.service.documents.Unreadable: files left out, with the fix
    kept: list[str] = field(default_factory=list)  # unreadable documents whose last readable version stays indexed

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.deleted or self.full_rebuild_reason)

    def summary(self) -> str:
        if not self.changed:
            done = f"index up to date: {self.unchanged} documents unchanged, 0 chunks re-embedded ({self.seconds:.1f}s)"
        else:
            why = f" ({self.full_rebuild_reason})" if self.full_rebuild_reason else ""
            done = (
                f"indexed{why}: {len(self.added)} added, {len(self.updated)} updated, {len(self.deleted)} deleted, "
                f"{self.unchanged} unchanged; {self.chunks_embedded} chunks embedded, "
                f"{self.chunks_total} in index ({self.seconds:.1f}s)"
            )
        if not self.unreadable:
            return done
        listed = "".join(
            f"\n  {u}" + (" [its last readable version stays indexed]" if u.file in self.kept else "")
            for u in self.unreadable
        )
        return f"{done}\n{len(self.unreadable)} file(s) not read this time:{listed}"


def _faiss_index(vectors: np.ndarray, settings: RetrievalSettings) -> faiss.Index:
    dim = vectors.shape[1]
    if settings.index_kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    elif settings.index_kind == "ivf":
        lists = max(1, min(settings.ivf_lists, len(vectors) // 39))  # faiss wants >= 39 points per cell
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
        index.nprobe = min(lists, 16)
    else:
        index = faiss.IndexFlatIP(dim)
    index.add(vectors)
    return index


def _embed(embedder, texts: list[str], batch_size: int) -> np.ndarray:
    vectors = embedder.encode(
        texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
    return np.ascontiguousarray(vectors, dtype=np.float32)


class IndexManifest(BaseModel):
    """What an index folder holds and how it was built: written by `build_index`, read by the retriever,
    the runner (cost of a full build) and readiness checks."""

    model_config = ConfigDict(extra="allow")

    embedder: str
    chunk_tokens: int
    chunk_overlap: int
    format_version: int
    index_kind: str = "flat"
    dim: int
    chunks: int
    documents: dict[str, str]  # doc id -> content hash
    source: str | None = None  # the corpus folder it was built from, so `ragft query` can find it again
    full_build_s: float | None = None  # what a from-scratch build of this corpus cost, for the cost table


def read_index_manifest(folder: Path) -> IndexManifest | None:
    """The manifest of the index in `folder`, or None when there is no readable one."""
    try:
        return IndexManifest.model_validate_json((Path(folder) / INDEX_MANIFEST).read_text())
    except (OSError, ValidationError):
        return None


def stored_indexes(indexes_dir: Path) -> dict[str, IndexManifest]:
    """Every complete index under `indexes_dir` by name (copies made for freshness runs left out)."""
    found = {}
    for folder in sorted(Path(indexes_dir).glob("*")):
        manifest = read_index_manifest(folder)
        if folder.is_dir() and "+" not in folder.name and manifest is not None and (folder / INDEX_FILE).is_file():
            found[folder.name] = manifest
    return found


def index_exists(folder: Path) -> bool:
    """Whether `folder` holds a complete index (manifest and FAISS file) a retriever can load."""
    return (Path(folder) / INDEX_FILE).is_file() and read_index_manifest(folder) is not None


def _read_manifest(folder: Path) -> dict | None:
    manifest = read_index_manifest(folder)
    return None if manifest is None else manifest.model_dump()


def _load_stored(folder: Path) -> tuple[list[Chunk], np.ndarray]:
    chunks = [Chunk(**json.loads(line)) for line in (folder / "chunks.jsonl").read_text().splitlines() if line]
    return chunks, np.load(folder / "embeddings.npy")


class _IndexLock:
    """One index build, swap or load at a time: a lock shared by every thread of this process (the API's
    runtime and the job worker's), plus an flock on `<folder>.lock` against another process (a `ragft index`
    beside a `ragft serve`). Re-entrant within a thread; the flock is taken by the outermost holder."""

    def __init__(self):
        self._lock = threading.RLock()
        self._depth = 0

    @contextmanager
    def held(self, folder: Path) -> Iterator[None]:
        with self._lock:
            fd = None
            self._depth += 1
            try:
                if self._depth == 1:
                    Path(folder).parent.mkdir(parents=True, exist_ok=True)
                    fd = os.open(Path(folder).with_name(f"{Path(folder).name}.lock"), os.O_CREAT | os.O_RDWR, 0o600)
                    fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                self._depth -= 1
                if fd is not None:
                    os.close(fd)  # releases the flock


index_lock = _IndexLock().held


def _complete(folder: Path) -> bool:
    # the manifest is written last, after every other file is on disk
    return (folder / INDEX_MANIFEST).is_file() and (folder / INDEX_FILE).is_file()


def recover_index(folder: Path) -> str | None:
    """Finish or undo an index swap that a crash interrupted, and remove the leftovers of dead builds
    (`ragft.service.folders.recover`); returns what was done, for the log."""
    with index_lock(folder):
        return folders.recover(Path(folder), _complete, "index")


def build_index(
    documents: list[Document],
    embedder,
    embedder_id: str,
    settings: RetrievalSettings,
    folder: Path,
    source: Path | None = None,
    keep: frozenset[str] = frozenset(),
) -> IndexReport:
    """Create or update the index in `folder`, embedding only new or changed documents.

    The new index is written beside the old one and swapped in at the end, so a crash or a
    bad document never destroys the index already stored; builds of one folder take turns (`index_lock`),
    so two of them never mix their files, and the second embeds only what the first did not. Documents in
    `keep` that the index holds stay as they were (a file that could not be read this time keeps its last
    readable version instead of vanishing from search).
    """
    with index_lock(folder):
        recover_index(folder)
        return _build_index(documents, embedder, embedder_id, settings, Path(folder), source, keep)


def _build_index(
    documents: list[Document],
    embedder,
    embedder_id: str,
    settings: RetrievalSettings,
    folder: Path,
    source,
    keep: frozenset[str] = frozenset(),
) -> IndexReport:
    started = time.perf_counter()
    folder = Path(folder)
    report = IndexReport()
    if embedder.max_seq_length and settings.chunk_tokens > embedder.max_seq_length - 2:
        raise ValueError(
            f"retrieval.chunk_tokens={settings.chunk_tokens} exceeds what the embedder reads "
            f"({embedder.max_seq_length} tokens incl. 2 special tokens); lower RAGFT_RETRIEVAL__CHUNK_TOKENS."
        )
    params = {
        "embedder": embedder_id,
        "chunk_tokens": settings.chunk_tokens,
        "chunk_overlap": settings.chunk_overlap,
        "format_version": FORMAT_VERSION,
    }
    old = _read_manifest(folder)
    old_hashes: dict[str, str] = {}
    kept_chunks: dict[str, list[tuple[Chunk, np.ndarray]]] = {}
    if old is None:
        report.full_rebuild_reason = "new index" if not folder.exists() else "no readable manifest"
    elif {k: old.get(k) for k in params} != params:
        differs = [k for k in params if old.get(k) != params[k]]
        report.full_rebuild_reason = "changed " + ", ".join(differs)
    else:
        old_hashes = old["documents"]
        chunks, vectors = _load_stored(folder)
        for chunk, vector in zip(chunks, vectors, strict=True):
            kept_chunks.setdefault(chunk.doc_id, []).append((chunk, vector))

    new_hashes = {doc.doc_id: doc.content_hash for doc in documents}
    to_embed: list[Chunk] = []
    for doc in documents:
        if old_hashes.get(doc.doc_id) == doc.content_hash:
            report.unchanged += 1
            continue
        (report.updated if doc.doc_id in old_hashes else report.added).append(doc.doc_id)
        to_embed.extend(chunk_document(doc, embedder.tokenizer, settings.chunk_tokens, settings.chunk_overlap))
    report.kept = sorted((set(keep) & set(old_hashes)) - set(new_hashes))  # unreadable now: last version stays
    new_hashes.update({doc_id: old_hashes[doc_id] for doc_id in report.kept})
    report.deleted = sorted(set(old_hashes) - set(new_hashes))

    fresh = _embed(embedder, [c.text for c in to_embed], settings.embed_batch_size) if to_embed else None
    fresh_by_doc: dict[str, list[tuple[Chunk, np.ndarray]]] = {}
    for i, chunk in enumerate(to_embed):
        fresh_by_doc.setdefault(chunk.doc_id, []).append((chunk, fresh[i]))
    report.chunks_embedded = len(to_embed)

    changed = set(report.added) | set(report.updated)
    rows: list[tuple[Chunk, np.ndarray]] = []
    for doc_id in [d.doc_id for d in documents] + report.kept:  # a fixed order: the same corpus, the same index
        rows.extend(fresh_by_doc.get(doc_id, []) if doc_id in changed else kept_chunks.get(doc_id, []))
    if not rows:
        raise ValueError("The documents hold no text to index (all empty or whitespace). Add text and index again.")
    report.chunks_total = len(rows)

    if report.changed or not (folder / INDEX_FILE).is_file() or old.get("index_kind") != settings.index_kind:
        vectors = np.stack([v for _, v in rows]).astype(np.float32)
        manifest = {
            **params,
            "index_kind": settings.index_kind,
            "dim": int(vectors.shape[1]),
            "chunks": len(rows),
            "documents": new_hashes,
            "source": str(Path(source).resolve()) if source else (old or {}).get("source"),
            # what a from-scratch build of this corpus cost, for the report's cost table
            "full_build_s": round(time.perf_counter() - started, 3)
            if report.full_rebuild_reason or old is None
            else old.get("full_build_s"),
        }
        _write_atomically(folder, [c for c, _ in rows], vectors, _faiss_index(vectors, settings), manifest)
    report.seconds = time.perf_counter() - started
    return report


def _write_atomically(folder: Path, chunks: list[Chunk], vectors: np.ndarray, index, manifest: dict) -> None:
    """Write the new index to a temp folder unique to this build and swap it in (`ragft.service.folders`); the
    manifest is written last, so a temp folder with one is complete."""
    tmp = folders.new_build(folder)
    try:
        (tmp / "chunks.jsonl").write_text("".join(json.dumps(c.stored(), ensure_ascii=False) + "\n" for c in chunks))
        np.save(tmp / "embeddings.npy", vectors)
        faiss.write_index(index, str(tmp / INDEX_FILE))
        (tmp / INDEX_MANIFEST).write_text(IndexManifest.model_validate(manifest).model_dump_json(indent=2))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    folders.swap_in(tmp, folder)


class Retriever:
    """A loaded index: dense FAISS search, optionally fused with BM25."""

    def __init__(self, folder: Path, embedder, embedder_id: str, settings: RetrievalSettings):
        folder = Path(folder)
        with index_lock(folder):  # a consistent set of files, never half of a swap
            recover_index(folder)
            self._load(folder, embedder, embedder_id, settings)

    def _load(self, folder: Path, embedder, embedder_id: str, settings: RetrievalSettings) -> None:
        manifest = _read_manifest(folder)
        if manifest is None or not (folder / INDEX_FILE).is_file():
            raise IndexMissing(f"No index at {folder}. Build it with: ragft index <corpus folder>")
        if manifest["embedder"] != embedder_id:
            raise IndexMissing(
                f"The index at {folder} was built with embedder '{manifest['embedder']}' but '{embedder_id}' "
                "is configured. Re-run `ragft index <corpus folder>` to rebuild it."
            )
        self.folder = folder
        self.manifest = manifest
        self.settings = settings
        self.embedder = embedder
        self.chunks, _ = _load_stored(folder)
        self.index = faiss.read_index(str(folder / INDEX_FILE))
        self._bm25 = self._build_bm25() if settings.hybrid else None

    def _build_bm25(self):
        import bm25s

        bm25 = bm25s.BM25()
        bm25.index(
            bm25s.tokenize([c.text for c in self.chunks], stopwords="en", show_progress=False), show_progress=False
        )
        return bm25

    def search(self, queries: list[str], top_k: int) -> list[list[Passage]]:
        """The `top_k` best passages for each query, best first."""
        if not queries:
            return []
        k = min(top_k, len(self.chunks))
        pool = min(len(self.chunks), k * 4) if self._bm25 is not None else k
        scores, ids = self.index.search(_embed(self.embedder, queries, self.settings.embed_batch_size), pool)
        results = [
            [(int(i), float(s)) for i, s in zip(row_ids, row_scores, strict=True) if i >= 0]  # -1: fewer hits than k
            for row_ids, row_scores in zip(ids, scores, strict=True)
        ]
        if self._bm25 is not None:
            results = self._fuse_with_bm25(queries, results, pool)
        return [[self._passage(i, s) for i, s in ranked[:k]] for ranked in results]

    def _fuse_with_bm25(self, queries: list[str], dense: list[list[tuple[int, float]]], pool: int):
        import bm25s

        ids, _ = self._bm25.retrieve(
            bm25s.tokenize(queries, stopwords="en", show_progress=False), k=pool, show_progress=False
        )
        fused = []
        for qi, ranked in enumerate(dense):
            score: dict[int, float] = {}
            for rank_list in ([i for i, _ in ranked], [int(i) for i in ids[qi]]):
                for rank, i in enumerate(rank_list):
                    score[i] = score.get(i, 0.0) + 1.0 / (self.settings.rrf_k + rank + 1)
            fused.append(sorted(score.items(), key=lambda kv: (-kv[1], kv[0])))
        return fused

    def _passage(self, i: int, score: float) -> Passage:
        c = self.chunks[i]
        return Passage(c.chunk_id, c.doc_id, c.text, score, c.start_char, c.end_char, c.page)
