"""Artifact kinds: the trained things an arm can load, as a table of facts.

An arm names a kind (`Arm.adapter`); training, loading, the remote backend, the CLI and the
routes read these facts instead of comparing names. Adding a kind is one entry in `KINDS`
(plus, if it builds its examples in a new way, one function in `service/training_data.py`).

Example:
    >>> KINDS["rag_lora"].needs_index, KINDS["scratch"].full_model
    (True, True)
    >>> [k.name for k in KINDS.values() if k.remote_servable]
    ['lora', 'rag_lora']
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ragft.service import training_data


@dataclass(frozen=True, kw_only=True)
class Kind:
    name: str  # file-safe id: the artifact folder's name and the remote LoRA module's suffix
    full_model: bool  # a whole model trained from random weights (else a LoRA adapter on the base weights)
    needs_index: bool  # its training examples carry retrieved passages, so the corpus index must exist
    remote_servable: bool  # an OpenAI-compatible backend (vLLM --lora-modules) can serve it
    settings_group: str  # the `Settings` group that configures it beyond the shared training loop ("lora"), and so
    # how it trains (`ragft.service.finetune.RECIPES`: the model a run updates, the planned stream)
    with_documents: bool  # the corpus documents are mixed into its training stream as plain text
    scoped: bool  # one artifact per adapter group under lora.scope=per_family (else one for every row)
    examples: Callable[..., list[training_data.TrainingExample]]  # (rows, settings, retriever, forbidden)
    summary: str


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind(name="lora", full_model=False, needs_index=False, remote_servable=True, settings_group="lora",
             with_documents=True, scoped=True, examples=training_data.closed_book_for,
             summary="LoRA adapter, closed-book; the knowledge adapter also reads the documents as text"),
        Kind(name="rag_lora", full_model=False, needs_index=True, remote_servable=True, settings_group="lora",
             with_documents=False, scoped=True, examples=training_data.retrieval_for,
             summary="LoRA adapter trained RAFT-style on retrieved passages"),
        Kind(name="scratch", full_model=True, needs_index=False, remote_servable=False, settings_group="scratch",
             with_documents=True, scoped=False, examples=training_data.closed_book_for,
             summary="small model from random weights: the floor pre-training is measured against"),
    )
}  # fmt: skip


class UnknownKind(ValueError):
    pass


def parse_kind(name: str) -> Kind:
    """A kind by name, or an error listing the kinds there are."""
    if name not in KINDS:
        raise UnknownKind(f"unknown artifact kind '{name}'; choose from {', '.join(KINDS)}")
    return KINDS[name]
