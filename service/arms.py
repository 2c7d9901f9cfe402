"""The arms under comparison, as a table of facts read by one function.

Adding an arm is one line in `ARMS`: the runner, the HTTP validation, the CLI choices and
the report columns all loop over it. Every arm shares one interface,
`answer(arm, runtime, queries) -> list[Answer]`.

Example:
    >>> ARMS["rag"].retrieve, ARMS["rag_lora"].adapter
    (True, 'rag_lora')
    >>> parse_arm("rag+lora").name
    'rag_lora'
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, MutableMapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator, Field
from ragft.service.prompts import PromptText, build_messages
from ragft.service.retrieval import Passage


@dataclass(frozen=True)
class Arm:
    name: str  # URL- and file-safe id
    label: str  # for reports
    retrieve: bool  # passages from the index go into the prompt
    fewshot: bool  # worked examples go into the prompt
    adapter: str | None  # None (base weights) or an artifact kind in `ragft.service.kinds.KINDS`
    summary: str
    # Recommendation tie-break, lower first: what the arm costs to run and keep current (no training and short
    # prompts first). An explicit fact, so the order of this table is only the order reports show arms in.
    cost_rank: int = 100
    external: bool = False  # answers made elsewhere and scored by `ragft score`: never run, never a default
    asked_by_default: bool = False  # a query (`ragft query`, POST /v1/query, the page's ask form) naming no arms
    # runs it: the two that answer without training, so a first question needs no adapter
    in_default_curve: bool = False  # a curve naming no arms runs it: the prompting arms beside the adapter that
    # learns from the train rows, so the crossover is visible


class ArmTable(MutableMapping[str, Arm]):
    """The arms ragft ships (an extension adds one with `ARMS[arm.name] = arm`), then the external arms of the
    runs read in the current context (`external_arm`: a thread, a request, a job). Those stay with the context
    that registered them: reading a run scored by `ragft score` never adds its arm to what the server answers as
    (`/v1/models`), nor to another request's table. Iterating takes a snapshot, so it never sees the table change."""

    def __init__(self, arms: dict[str, Arm]):
        self._shipped = dict(arms)

    def __getitem__(self, name: str) -> Arm:
        arm = self._shipped.get(name)
        return arm if arm is not None else _RUN_ARMS.get()[name]

    def __iter__(self) -> Iterator[str]:
        shipped = list(self._shipped)
        return iter([*shipped, *(name for name in _RUN_ARMS.get() if name not in self._shipped)])

    def __len__(self) -> int:
        return len(list(iter(self)))

    def __setitem__(self, name: str, arm: Arm) -> None:
        if arm.external:  # copied, never changed in place: another context may hold the old table
            _RUN_ARMS.set({**_RUN_ARMS.get(), name: arm})
        else:
            self._shipped[name] = arm

    def __delitem__(self, name: str) -> None:
        if name in self._shipped:
            del self._shipped[name]
        else:
            run_arms = dict(_RUN_ARMS.get())
            del run_arms[name]
            _RUN_ARMS.set(run_arms)


_RUN_ARMS: ContextVar[dict[str, Arm]] = ContextVar("ragft_run_arms", default={})  # noqa: B039 (never mutated)

ARMS = ArmTable({
    a.name: a
    for a in (
        Arm("base", "Base", False, False, None, "base model, zero-shot", 0, asked_by_default=True,
            in_default_curve=True),
        Arm("fewshot", "Few-shot", False, True, None, "base model with worked examples from the train split", 10,
            in_default_curve=True),
        Arm("rag", "RAG", True, False, None, "retrieved passages feeding the base model", 20, asked_by_default=True,
            in_default_curve=True),
        Arm("lora", "LoRA", False, False, "lora", "LoRA adapter trained closed-book on the train split", 30,
            in_default_curve=True),
        Arm("rag_lora", "RAG + LoRA", True, False, "rag_lora", "adapter trained to read retrieved passages", 40),
        Arm("scratch", "Scratch", False, False, "scratch", "same architecture trained from random weights", 50),
    )
})  # fmt: skip


EXTERNAL_COST_RANK = 1000  # a system scored from its predictions: its running cost is unknown to ragft


def external_arm(name: str, retrieve: bool) -> Arm:
    """The arm standing for a system ragft did not run (`ragft score`): a ragft arm of that name keeps its facts,
    any other name is registered, in the current context only (`ArmTable`), with what its predictions show
    (passages given: it retrieves)."""
    key = arm_key(name)
    if key in ARMS:
        return ARMS[key]
    if not EXTERNAL_NAME.match(key):
        raise UnknownArm(f"arm name '{name}' must be 1-64 letters, digits, '_' or '-' (it names files and URLs)")
    arm = Arm(key, name, retrieve, False, None, "predictions scored by ragft score", EXTERNAL_COST_RANK, True)
    ARMS[key] = arm
    return arm


def runnable() -> list[str]:
    """The arms ragft can run itself, in table order: every arm but those scored from a predictions file."""
    return [name for name, arm in ARMS.items() if not arm.external]


def asked_by_default() -> list[str]:
    """The arms a query naming none runs, in table order (`Arm.asked_by_default`)."""
    return [name for name, arm in ARMS.items() if arm.asked_by_default]


def curve_defaults() -> list[str]:
    """The arms a curve naming none runs, in table order (`Arm.in_default_curve`)."""
    return [name for name, arm in ARMS.items() if arm.in_default_curve]


def by_cost(names) -> list[str]:
    """Arm names cheapest first (ties in table order): the order recommendations prefer."""
    order = list(ARMS)
    return sorted(names, key=lambda n: (ARMS[n].cost_rank, order.index(n)))


def break_even_reference(names) -> str | None:
    """Of `names`, the arm a trained arm's one-off training time is weighed against in the cost table: the cheapest
    that answers from the documents with the base weights (rag), or None when none does."""
    readers = [n for n in names if ARMS[n].retrieve and ARMS[n].adapter is None and not ARMS[n].external]
    return by_cost(readers)[0] if readers else None


class UnknownArm(ValueError):
    pass


EXTERNAL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def arm_key(name: str) -> str:
    """The id an arm name stands for: lower case, '+' and '-' read as '_' ('rag+lora' is 'rag_lora')."""
    return name.strip().lower().replace("+", "_").replace("-", "_")


def parse_arm(name: str) -> Arm:
    """Look an arm up by id, accepting the spelling 'rag+lora'."""
    key = arm_key(name)
    if key not in ARMS:
        raise UnknownArm(f"unknown arm '{name}'; choose from {', '.join(ARMS)} ('rag+lora' also accepted)")
    return ARMS[key]


def parse_arms(names: str | list[str]) -> list[Arm]:
    """Arms from a comma-separated string or a list, duplicates dropped, order kept."""
    items = names.split(",") if isinstance(names, str) else names
    arms = [parse_arm(n) for n in items if n.strip()]
    if not arms:
        raise UnknownArm(f"no arm given; choose from {', '.join(ARMS)}")
    return list(dict.fromkeys(arms))


def trainable() -> list[str]:
    """The arms with something to train (an artifact kind), in table order."""
    return [name for name, arm in ARMS.items() if arm.adapter and not arm.external]


def parse_trainable(name: str) -> Arm:
    """An arm that has an artifact to train, or an error listing those that do."""
    arm = parse_arm(name)
    if arm.adapter is None:
        raise UnknownArm(f"arm '{arm.name}' has nothing to train; choose from {', '.join(trainable())}")
    return arm


def spellings(names: list[str]) -> list[str]:
    """The names, then the '+' spelling of each that has a '_' ('rag+lora' for rag_lora), as `arm_key` reads them."""
    return [*names, *(name.replace("_", "+") for name in names if "_" in name)]


def _arm_enum(schema: dict) -> None:
    """The arms as they are when the schema is built, so an arm added to ARMS at run time is documented too."""
    schema["enum"] = spellings(runnable())


def _trainable_enum(schema: dict) -> None:
    schema["enum"] = trainable()


def _distinct(names: list[str]) -> list[str]:
    return list(dict.fromkeys(names))


# The one validation of arm names at every boundary (RunSpec, HTTP request bodies): an id from ARMS ('rag+lora'
# accepted, stored as 'rag_lora'), duplicates dropped, the schema's enum read from ARMS when it is built.
ArmName = Annotated[PromptText, AfterValidator(lambda name: parse_arm(name).name), Field(json_schema_extra=_arm_enum)]
ArmNames = Annotated[list[ArmName], AfterValidator(_distinct)]
TrainableArmName = Annotated[
    PromptText, AfterValidator(lambda name: parse_trainable(name).name), Field(json_schema_extra=_trainable_enum)
]
TrainableArmNames = Annotated[list[TrainableArmName], AfterValidator(_distinct)]


@dataclass(frozen=True)
class Query:
    question: str  # also what the retriever searches for
    instruction: str | None = None  # task instruction shown before the question (behaviour tasks)
    example_pool: str = "questions"  # which fewshot pool: "questions", or "behaviour:<kind>"
    adapter_group: str = "questions"  # which adapter answers it under lora.scope=per_family (eval/families.py)


@dataclass(frozen=True)
class Answer:
    arm: str
    text: str
    passages: tuple[Passage, ...]
    prompt_tokens: int
    generated_tokens: int
    latency_ms: float  # generation wall time of the batch this answer came from
    retrieval_ms: float
    batch_size: int
    fingerprint: str | None = None  # manifest fingerprint of the trained artifact that answered; None: base weights
    machine_ms: float | None = None  # the batch's share of the machine's wall clock (`Generation.machine_ms`)


def prompts_for(arm: Arm, runtime, queries: list[Query], top_k: int | None = None):
    """The chat prompts `arm` sends for `queries`, with the passages it retrieved and the retrieval time."""
    retrieval_ms = 0.0
    passages: list[list[Passage] | None] = [None] * len(queries)
    if arm.retrieve:
        t0 = time.perf_counter()
        passages = runtime.retriever().search([q.question for q in queries], top_k or runtime.settings.retrieval.top_k)
        retrieval_ms = (time.perf_counter() - t0) * 1000 / len(queries)
    prompts = [
        build_messages(
            q.question,
            instruction=q.instruction,
            passages=p,
            examples=runtime.examples(q.example_pool) if arm.fewshot else (),
            abstention_phrase=runtime.settings.generation.abstention_phrase,
        )
        for q, p in zip(queries, passages, strict=True)
    ]
    return prompts, passages, retrieval_ms


def answer(
    arm: Arm, runtime, queries: list[Query], top_k: int | None = None, max_new_tokens: int | None = None
) -> list[Answer]:
    """Run one arm on a batch of queries, in order; `top_k` overrides the configured passage count. Queries for
    different adapter groups generate in separate batches (each with its adapter active)."""
    if not queries:
        return []
    by_group: dict[str, list[int]] = {}
    for i, q in enumerate(queries):
        by_group.setdefault(q.adapter_group, []).append(i)
    out: list[Answer | None] = [None] * len(queries)
    for group, members in by_group.items():
        batch = [queries[i] for i in members]
        prompts, passages, retrieval_ms = prompts_for(arm, runtime, batch, top_k)
        with runtime.generator_for(arm, group) as generator:
            outputs = generator.generate(prompts, max_new_tokens)
            fingerprint = generator.fingerprint
        for i, g, p in zip(members, outputs, passages, strict=True):
            out[i] = Answer(arm.name, g.text, tuple(p or ()), g.prompt_tokens, g.generated_tokens, g.latency_ms,
                            retrieval_ms, g.batch_size, fingerprint, g.machine_ms)  # fmt: skip
    return out


def compare(runtime, question: str, arms: list[Arm], top_k: int | None = None) -> list[Answer]:
    """One question through several arms, in the order given: the query path of the CLI and the API."""
    return [answer(arm, runtime, [Query(question)], top_k)[0] for arm in arms]
