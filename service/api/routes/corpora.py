"""Live corpus updates: list corpora, put or delete one document of the served corpus, re-index at once.

The index updates incrementally (only that document is embedded) and is swapped in whole, so
a query running meanwhile searches the old index or the new one, never a half-built one. A
document that cannot be indexed is rolled back, so a bad request loses nothing stored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, HTTPException
from fastapi import Path as PathParam
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from service.api.deps import CORPUS_NAME, CORPUS_NAME_PATTERN, RuntimeDep, errors
from service.documents import SUFFIXES

router = APIRouter(prefix="/v1", tags=["corpora"], responses=errors(404, 409))
Name = Annotated[str, PathParam(pattern=CORPUS_NAME_PATTERN, description="The served corpus's folder name.")]
DocId = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$", description="Document id.")]


class DocumentIn(BaseModel):
    text: str = Field(min_length=1, pattern=r"\S", description="The document's text (Markdown or plain text).")


def _served(runtime, name: str) -> Path:
    if not CORPUS_NAME.match(name):
        raise HTTPException(422, f"'{name}' is not a corpus name")
    if name != runtime.corpus.resolve().name:
        raise HTTPException(404, f"this service serves corpus '{runtime.corpus.resolve().name}', not '{name}'")
    folder = runtime.corpus / "documents"
    if not folder.is_dir():
        raise HTTPException(409, f"corpus '{name}' has no documents/ folder")
    return folder


def _existing(folder: Path, doc_id: str) -> list[Path]:
    return [folder / f"{doc_id}{suffix}" for suffix in SUFFIXES if (folder / f"{doc_id}{suffix}").is_file()]


@router.get("/corpora")
def list_corpora(runtime: RuntimeDep) -> list[dict]:
    """Corpora next to the served one, with their document count and whether this service serves them."""
    served = runtime.corpus.resolve()
    out = []
    for folder in sorted(p for p in served.parent.iterdir() if (p / "documents").is_dir()):
        documents = [p for p in (folder / "documents").rglob("*") if p.suffix.lower() in SUFFIXES]
        out.append({"name": folder.name, "served": folder == served, "document_files": len(documents),
                    "index_present": folder == served and (runtime.index_dir / "index.faiss").is_file()})  # fmt: skip
    return out


def _reindex(runtime) -> dict:
    report = runtime.index()
    return {"added": report.added, "updated": report.updated, "deleted": report.deleted,
            "chunks_embedded": report.chunks_embedded, "chunks_total": report.chunks_total,
            "seconds": round(report.seconds, 3)}  # fmt: skip


def _apply(runtime, doc_id: str, text: str | None) -> dict:
    """Write (or delete, when `text` is None) the document, re-index, and roll back if indexing fails."""
    folder = _served(runtime, runtime.corpus.resolve().name)
    with runtime.lock:
        old = {p: p.read_bytes() for p in _existing(folder, doc_id)}
        for path in old:
            path.unlink()
        if text is not None:
            target = folder / f"{doc_id}.md"
            tmp = folder / f".{doc_id}.md.tmp"
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(target)
        try:
            return _reindex(runtime)
        except (ValueError, RuntimeError) as exc:
            if text is not None:
                (folder / f"{doc_id}.md").unlink(missing_ok=True)
            for path, content in old.items():
                path.write_bytes(content)
            raise HTTPException(422, f"document '{doc_id}' was not applied: {exc}") from exc


@router.put("/corpora/{name}/documents/{doc_id}")
async def put_document(name: Name, doc_id: DocId, body: DocumentIn, runtime: RuntimeDep) -> dict:
    """Add or replace a document (stored as documents/<doc_id>.md); the next query sees it."""
    _served(runtime, name)
    return await run_in_threadpool(_apply, runtime, doc_id, body.text)


@router.delete("/corpora/{name}/documents/{doc_id}")
async def delete_document(name: Name, doc_id: DocId, runtime: RuntimeDep) -> dict:
    folder = _served(runtime, name)
    if not _existing(folder, doc_id):
        raise HTTPException(404, f"no document '{doc_id}' in corpus '{name}'")
    return await run_in_threadpool(_apply, runtime, doc_id, None)
