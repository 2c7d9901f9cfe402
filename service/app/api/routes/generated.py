"""Generated rows of the served corpus, for people to review (`ragft corpus generate` made them): list them per
family with the document span each rests on, and accept, edit or reject one item at a time, the reviewer's name
stored with the decision in tasks/generated.jsonl. The review page (/ui/review) reads only these routes.

A run counts a generated row once it is accepted or edited; pending rows only with --include-unreviewed.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi import Path as PathParam
from pydantic import BaseModel, Field
from ragft.eval.corpus.generation_rows import GENERATED_FILE, decide, read_generated, review_items
from ragft.eval.reporting.review import MAX_REVIEWER_CHARS
from ragft.service.app.api.deps import CORPUS_NAME_PATTERN, RuntimeDep, SettingsDep, errors
from starlette.concurrency import run_in_threadpool

router = APIRouter(prefix="/v1", tags=["generated rows"], responses=errors(404, 409))
Name = Annotated[str, PathParam(pattern=CORPUS_NAME_PATTERN, description="The served corpus's folder name.")]
Item = Annotated[str, PathParam(pattern=r"^gen-[a-z]-[0-9a-f]{10}$", description="A generated item's id.")]
STATUSES = ("pending", "accepted", "edited", "rejected")


class Decision(BaseModel):
    decision: Literal["accept", "edit", "reject"]
    reviewer: str = Field(min_length=1, max_length=MAX_REVIEWER_CHARS, description="Your name, stored as given.")
    edits: dict[str, Any] = Field(
        default_factory=dict,
        description="For 'edit': knowledge question, paraphrase, answer; abstention question; behaviour input, "
        "label, expected.",
    )


def _corpus(runtime, name: str):
    served = runtime.corpus.resolve()
    if name != served.name:
        raise HTTPException(404, f"this service serves corpus '{served.name}', not '{name}'")
    return runtime.corpus


def _item_out(item) -> dict:
    return {"item": item.item, "family": item.family, "status": item.status} | item.fields


@router.get("/corpora/{name}/generated")
def list_generated(
    name: Name,
    runtime: RuntimeDep,
    settings: SettingsDep,
    status: Annotated[Literal["pending", "accepted", "edited", "rejected"] | None, Query()] = "pending",
    family: Annotated[str | None, Query(max_length=40)] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict:
    """Generated items with `status` (default pending) of `family`, in file order, each with its document and the
    quoted span; `counts` gives every family's items per status."""
    corpus = _corpus(runtime, name)
    items = review_items(read_generated(corpus / "tasks" / GENERATED_FILE))
    counts: dict[str, dict[str, int]] = {}
    for i in items:
        counts.setdefault(i.family, dict.fromkeys(STATUSES, 0))[i.status] += 1
    chosen = [i for i in items if i.status == status and (family is None or i.family == family)]
    page = chosen[offset : offset + settings.api.max_page_size]
    return {"corpus": name, "counts": counts, "total": len(chosen), "items": [_item_out(i) for i in page]}


@router.put("/corpora/{name}/generated/{item}")
async def decide_generated(name: Name, item: Item, body: Decision, runtime: RuntimeDep) -> dict:
    """Accept, edit or reject one generated item (all its rows: a question and its paraphrase together); the
    decision, the reviewer's name and the time are stored in the row. An edit is checked as generation checks it."""
    corpus = _corpus(runtime, name)
    try:
        done = await run_in_threadpool(decide, corpus, item, body.decision, body.reviewer, body.edits)
    except KeyError as exc:
        raise HTTPException(404, f"no generated item '{item}' in corpus '{name}'") from exc
    except ValueError as exc:  # an edit that fails its check, or a row that no longer validates
        raise HTTPException(422, str(exc)) from exc
    return _item_out(done)
