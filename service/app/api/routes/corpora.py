"""Corpora over HTTP: list them, make one from uploaded files (`POST /v1/corpora`, as `ragft corpus init` does), and
put or delete one document of the served corpus, re-indexed at once.

The index updates incrementally (only that document is embedded) and is swapped in whole, so
a query running meanwhile searches the old index or the new one, never a half-built one. The
new text is written beside the old and renamed into place; a document that cannot be written
or indexed is rolled back (on any error), so a failed request loses nothing stored.
"""

from __future__ import annotations

import base64
import binascii
import shutil
import uuid
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, HTTPException, Request
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field
from ragft.service.app.api.deps import CORPUS_NAME, CORPUS_NAME_PATTERN, RuntimeDep, SettingsDep, errors
from ragft.service.documents import SUFFIXES, DocumentError, SharedDocumentFile, change_document, document_files
from ragft.service.retrieval import index_lock
from starlette.concurrency import run_in_threadpool

router = APIRouter(prefix="/v1", tags=["corpora"], responses=errors(404, 409, 429, 507))
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


@router.get("/corpora")
def list_corpora(runtime: RuntimeDep) -> list[dict]:
    """Corpora next to the served one, with their document count and whether this service serves them."""
    served = runtime.corpus.resolve()
    out = []
    for folder in sorted(p for p in served.parent.iterdir() if (p / "documents").is_dir()):
        documents = [p for p in (folder / "documents").rglob("*") if p.suffix.lower() in SUFFIXES]
        out.append({"name": folder.name, "served": folder == served, "document_files": len(documents),
                    "index_present": folder == served and runtime.index_ready})  # fmt: skip
    return out


def _reindex(runtime) -> dict:
    report = runtime.index()
    return {"added": report.added, "updated": report.updated, "deleted": report.deleted,
            "chunks_embedded": report.chunks_embedded, "chunks_total": report.chunks_total,
            "seconds": round(report.seconds, 3),
            "unreadable": [{"file": u.file, "reason": u.reason, "fix": u.fix} for u in report.unreadable]}  # fmt: skip


def _apply(runtime, doc_id: str, text: str | None) -> dict:
    """Write (or delete, when `text` is None) the document and re-index; any error puts the old files back.

    The index lock is held from the file change to its re-index, so no other build reads the corpus in
    between; the model lock is not taken, so queries keep generating while the document is embedded."""
    folder = _served(runtime, runtime.corpus.resolve().name)
    runtime.embedder()  # loaded before the index lock: loading takes the model lock, which a search holds first
    try:
        with index_lock(runtime.index_dir), change_document(folder, doc_id, text):
            return _reindex(runtime)
    except SharedDocumentFile as exc:  # the id names a file of several documents, or a row of one
        raise HTTPException(409, f"document '{doc_id}' was not applied: {exc}") from exc
    except (ValueError, RuntimeError) as exc:  # indexing refused it (e.g. no text left to index)
        raise HTTPException(422, f"document '{doc_id}' was not applied: {exc}") from exc
    except OSError as exc:  # a full disk or a file-size limit: the old files are back in place
        raise HTTPException(
            507, f"document '{doc_id}' was not stored ({exc.strerror or type(exc).__name__}); nothing changed"
        ) from exc


@router.put("/corpora/{name}/documents/{doc_id}")
async def put_document(
    name: Name, doc_id: DocId, body: DocumentIn, request: Request, runtime: RuntimeDep, settings: SettingsDep
) -> dict:
    """Add or replace a document (stored as documents/<doc_id>.md); the next query sees it."""
    _served(runtime, name)
    size, limit = len(body.text.encode("utf-8")), settings.api.max_document_bytes
    if size > limit:
        raise HTTPException(413, f"the document is {size} bytes; the limit is {limit} (api.max_document_bytes)")
    return await _admitted(request, settings, _apply, runtime, doc_id, body.text)


async def _admitted(request: Request, settings, fn, *args) -> dict:
    """Run a document change in a worker thread if fewer than api.max_document_changes are in flight, else 429:
    changes wait for each other on the index lock, and each waiting one holds a worker thread."""
    slots = request.app.state.document_changes
    if not slots.acquire(blocking=False):
        raise HTTPException(
            429, f"{settings.api.max_document_changes} document changes are already waiting for the index "
            "(api.max_document_changes); retry later", headers={"Retry-After": "5"},
        )  # fmt: skip
    try:
        return await run_in_threadpool(fn, *args)
    finally:
        slots.release()


@router.delete("/corpora/{name}/documents/{doc_id}")
async def delete_document(
    name: Name, doc_id: DocId, request: Request, runtime: RuntimeDep, settings: SettingsDep
) -> dict:
    folder = _served(runtime, name)
    try:
        files = document_files(folder, doc_id)
    except SharedDocumentFile as exc:
        raise HTTPException(409, f"document '{doc_id}' was not deleted: {exc}") from exc
    if not files:
        raise HTTPException(404, f"no document '{doc_id}' in corpus '{name}'")
    return await _admitted(request, settings, _apply, runtime, doc_id, None)


class UploadedFile(BaseModel):
    name: str = Field(pattern=r"^[^/\\.][^/\\]{0,199}$", description="The file's name, no folders (e.g. 'report.pdf').")
    content_base64: str = Field(description="The file's bytes, base64-encoded.")

    def write_to(self, folder: Path) -> Path:
        try:
            data = base64.b64decode(self.content_base64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise HTTPException(422, f"file '{self.name}': content_base64 is not valid base64") from exc
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / self.name
        path.write_bytes(data)
        return path


class CorpusUpload(BaseModel):
    """What `ragft corpus init` reads, uploaded: the whole request is bounded by api.max_body_bytes."""

    # a corpus needs rows: a question sheet, an example sheet, or both (said in the schema, checked in the route)
    model_config = ConfigDict(json_schema_extra={"anyOf": [{"required": ["questions"]}, {"required": ["examples"]}]})

    name: str = Field(pattern=CORPUS_NAME_PATTERN, description="The new corpus's folder name, beside the served one.")
    documents: list[UploadedFile] = Field(min_length=1, max_length=1000, description="The team's files.")
    questions: UploadedFile | None = Field(None, description="Questions with short answers (CSV, TSV, XLSX, JSONL).")
    examples: UploadedFile | None = Field(None, description="Examples, input -> expected (CSV, TSV, XLSX, JSONL).")
    keep_unlocated: bool = Field(False, description="Keep questions whose answer no document states.")
    test_share: float = Field(0.3, gt=0, lt=1, description="Least share of examples per label held out for test.")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed of the train/test split.")


@router.post("/corpora", status_code=201, responses=errors(409, 413, 422))
async def create_corpus(body: CorpusUpload, runtime: RuntimeDep, settings: SettingsDep) -> dict:
    """Make a corpus from uploaded files and sheets, as `ragft corpus init` does: documents converted, answers
    located, rows and splits made. The folder appears whole or not at all; an existing name is a 409."""
    target = runtime.corpus.resolve().parent / body.name
    if target.exists():
        raise HTTPException(409, f"corpus '{body.name}' already exists; choose another name")
    return await run_in_threadpool(_create_corpus, body, target, settings)


def _create_corpus(body: CorpusUpload, target: Path, settings) -> dict:
    from ragft.eval.corpus.corpus_import import SheetError, plan_corpus, summary, write_corpus

    names = [f.name for f in body.documents]
    if len(set(names)) != len(names):
        raise HTTPException(422, "two uploaded documents share a name; rename one")
    upload = settings.data_dir / "uploads" / uuid.uuid4().hex
    try:
        for f in body.documents:
            f.write_to(upload / "documents")
        sheets = {k: getattr(body, k).write_to(upload / k) if getattr(body, k) else None
                  for k in ("questions", "examples")}  # fmt: skip
        plan = plan_corpus(upload / "documents", sheets["questions"], sheets["examples"],
                           keep_unlocated=body.keep_unlocated, test_share=body.test_share, seed=body.seed)  # fmt: skip
        write_corpus(plan, target)
    except (SheetError, DocumentError) as exc:
        raise HTTPException(422, str(exc).replace(str(upload), "<upload>")) from exc
    finally:
        shutil.rmtree(upload, ignore_errors=True)
    return {
        "name": body.name,
        "rows": len(plan.rows),
        "unreadable": [{"file": u.file, "reason": u.reason, "fix": u.fix} for u in plan.scan.unreadable],
        "unlocated": plan.unlocated,
        "schema": plan.schema,
        "summary": [line.replace(str(upload), "<upload>") for line in summary(plan)],
    }
