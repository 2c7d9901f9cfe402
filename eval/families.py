"""Task families as a table of facts: what rows they hold, how they are answered, what decides them.

A family is both a kind of task row (`"family": "knowledge"` in tasks/*.jsonl) and a block of
the report. Its entry says which rows are valid, which rows it scores, in which phase, with
which headline metric, which arms it scores and with which prompt, whether its train rows
feed the adapters, and which arms the folk rule "RAG for knowledge, fine-tuning for behaviour"
favours, expressed through `Arm` facts, never arm names. Task validation, settings defaults,
the runner, results, the report and the verdict all read `FAMILIES`. Adding a family is one
`register_family(Family(...))` plus a metric module that registers its metrics.

Example:
    >>> FAMILIES["knowledge"].headline, FAMILIES["freshness"].phase
    ('answer_contained', 'fresh')
    >>> FAMILIES["knowledge_unseen"].row_families
    ('knowledge',)
    >>> from ragft.service.arms import ARMS
    >>> [a for a in ARMS if FAMILIES["knowledge"].favours(ARMS[a])]
    ['rag', 'rag_lora']
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from pydantic import AfterValidator, Field
from ragft.service.arms import Arm
from ragft.service.kinds import KINDS

if TYPE_CHECKING:
    from ragft.eval.tasks import TaskRow


def _any_arm(arm: Arm) -> bool:
    return True


@dataclass(frozen=True)
class Family:
    name: str  # the task rows' "family" value and the report block's id
    label: str  # for reports
    headline: str  # the metric that decides the family (registered in eval/metrics)
    check_row: Callable[[TaskRow], None] | None  # raises ValueError naming what a row lacks; None: no rows of
    # its own (a view on other families' rows, e.g. knowledge split by kind)
    reads: tuple[str, ...] = ()  # the row families it scores (default: its own rows)
    row_kind: str | None = None  # it scores only rows of this kind (a view), so a sample gives each such kind its
    # own `limit` rows: knowledge's paraphrase and unseen rows both reach the sample size, not 21 and 19 of 40
    phase: str = "main"  # "main", or "fresh": answered after the corpus update in updates/ is applied
    trains: bool = False  # its train rows feed the adapters (and the fewshot pools)
    scores: Callable[[Arm], bool] = _any_arm  # which arms answer its rows
    closed_book: bool = False  # arms answer with their weights only: no passages, no worked examples
    adapter_group: str = "questions"  # which adapter answers its rows under lora.scope=per_family: rows an arm
    # cannot tell apart when asked (answerable or not) share one; behaviour tasks have their own
    learns_documents: bool = False  # its adapter also trains on the corpus documents as text (knowledge injection)
    max_new_tokens: int | None = None  # answer length for its rows (None: generation.max_new_tokens); short answers
    # are scored on their first sentence, so decoding past it is time spent on nothing
    rule: str | None = None  # the folk rule's claim about this family, when it makes one
    favoured: Callable[[Arm], bool] | None = None  # the arms that claim says should win
    # What its rows are, read by validation, fewshot pools, training examples, scoring and the audit instead of
    # the family's name:
    factual: bool = False  # its rows are questions with short accepted answers (strings found in the reply)
    grounded: bool = False  # those answers are stated in the rows' source_docs (updates/ in the fresh phase):
    # answer-bearing sentences are its gold contexts, RAFT examples show the gold passage, training restates the
    # question in other wordings, and the audit checks each answer appears in its documents
    abstains: bool = False  # its rows' expected reply is the abstention phrase
    formats: bool = False  # its rows come in formats (the row's `kind`): fewshot pools, near-duplicate and
    # answer-space audits are per format, so a JSON task sees JSON examples
    reference_arm: str | None = None  # the arm every other arm is compared with (forgetting: base), beside the
    # comparisons against the best arm
    guesses_from: tuple[str, ...] = ()  # the row families whose train rows its chance baseline's guess is drawn
    # from (default: its own): freshness has no train rows of its own and asks what knowledge rows ask

    @property
    def row_families(self) -> tuple[str, ...]:
        return self.reads or (self.name,)

    @property
    def guess_families(self) -> tuple[str, ...]:
        return self.guesses_from or (self.name,)

    def favours(self, arm: Arm) -> bool:
        return self.favoured is not None and self.favoured(arm)


FAMILIES: dict[str, Family] = {}
QUESTIONS = "questions"  # the adapter group and fewshot pool every question shares, answerable or not


def register_family(family: Family) -> Family:
    """Add a family; its metrics register themselves in their own module under eval/metrics."""
    if family.name in FAMILIES:
        raise ValueError(f"family '{family.name}' is registered twice")
    FAMILIES[family.name] = family
    return family


def row_families() -> list[str]:
    """The values a task row's "family" may take: families with rows of their own."""
    return [name for name, f in FAMILIES.items() if f.check_row is not None]


def factual_families() -> list[str]:
    """Row families whose rows are questions with short accepted answers."""
    return [name for name, f in FAMILIES.items() if f.factual and f.check_row is not None]


def pool_key(family: str, kind: str | None) -> str:
    """Which fewshot pool a row draws from: a format family's rows by format (a JSON task sees JSON examples),
    every question the shared pool."""
    if FAMILIES[family].formats:
        return f"{family}:{kind}" if kind else family
    return QUESTIONS


def adapter_groups() -> dict[str, list[str]]:
    """Adapter group -> the trainable families whose train rows it learns from."""
    groups: dict[str, list[str]] = {}
    for f in FAMILIES.values():
        if f.trains:
            groups.setdefault(f.adapter_group, []).append(f.name)
    return groups


def parse_families(names: list[str] | None) -> list[str]:
    """Family names checked against the registry, duplicates dropped; None means every family."""
    if names is None:
        return list(FAMILIES)
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown famil(ies) {unknown}; choose from {list(FAMILIES)}")
    if not names:
        raise ValueError(f"no family given; choose from {list(FAMILIES)}")
    return list(dict.fromkeys(names))


def _family_enum(schema: dict) -> None:
    schema["enum"] = list(FAMILIES)  # as registered when the schema is built


# A family name as the JSON schema states it (an enum of the registered families); validated by the types below.
FamilyName = Annotated[str, Field(json_schema_extra=_family_enum)]

# The one validation of family names at every boundary (RunSpec, HTTP request bodies).
FamilyNames = Annotated[list[FamilyName], AfterValidator(parse_families)]


def is_floor(arm: Arm) -> bool:
    """A from-scratch model: shown as the floor pre-training is measured against, not a contender in the folk
    rule."""
    return arm.adapter is not None and KINDS[arm.adapter].full_model


def fine_tuned(arm: Arm) -> bool:
    """Base weights changed by a trained adapter."""
    return arm.adapter is not None and not KINDS[arm.adapter].full_model


def _needs_answers(row: TaskRow) -> None:
    if not row.answers:
        raise ValueError(f"a {row.family} row needs 'answers' (a non-empty list of accepted strings)")


def _freshness_row(row: TaskRow) -> None:
    if not (row.answers and row.old_answers):
        raise ValueError("a freshness row needs 'answers' (after the update) and 'old_answers' (before it)")


def _abstention_row(row: TaskRow) -> None:
    if row.answers:
        raise ValueError("an abstention row must not have 'answers': the expected answer is to abstain")


def _behaviour_row(row: TaskRow) -> None:
    if (row.json_schema is None) != (row.expected is None):
        raise ValueError("'schema' and 'expected' go together")
    if (row.labels is None) != (row.label is None):
        raise ValueError("'labels' and 'label' go together")
    if row.labels is not None and row.label not in row.labels:
        raise ValueError(f"label '{row.label}' is not in labels {row.labels}")
    if row.json_schema is None and row.labels is None and row.style is None:
        raise ValueError("a behaviour row needs 'schema'+'expected', 'labels'+'label', or 'style'")
    if row.style is not None and not row.style.model_dump(exclude_defaults=True):
        raise ValueError("a behaviour row's 'style' needs a rule (max_words, first_word_in or cite_source: true)")
    if row.split == "train" and row.json_schema is None and row.labels is None and not row.answers:
        raise ValueError("a train style row needs 'answers': the reply fine-tuning and fewshot examples show")


def _weights_changed_or_base(arm: Arm) -> bool:
    """Forgetting is a change of weights: only arms with trained weights are asked, and base as the reference
    (rag and fewshot run the base weights, so they cannot forget)."""
    return arm.adapter is not None or not (arm.retrieve or arm.fewshot)


QUESTION_TOKENS = 32  # a one-sentence answer or the abstention phrase: 10-20 tokens of SmolLM2's tokenizer

register_family(Family("knowledge", "Knowledge", "answer_contained", _needs_answers, trains=True,
                       rule="RAG for knowledge", favoured=lambda arm: arm.retrieve, learns_documents=True,
                       max_new_tokens=QUESTION_TOKENS, factual=True, grounded=True))  # fmt: skip
register_family(Family("knowledge_paraphrase", "Knowledge: paraphrases of trained facts",
                       "answer_contained_paraphrase", None, reads=("knowledge",), row_kind="paraphrase",
                       rule="RAG for knowledge", favoured=lambda arm: arm.retrieve))  # fmt: skip
register_family(Family("knowledge_unseen", "Knowledge: facts only the documents hold", "answer_contained_unseen",
                       None, reads=("knowledge",), row_kind="unseen", rule="RAG for knowledge",
                       favoured=lambda arm: arm.retrieve))  # fmt: skip
register_family(Family("behaviour", "Behaviour / format", "behaviour_pass", _behaviour_row, trains=True,
                       rule="fine-tuning for behaviour", favoured=fine_tuned, adapter_group="behaviour",
                       formats=True))  # fmt: skip
register_family(Family("abstention", "Abstention", "effective_reliability", _abstention_row,
                       reads=("abstention", "knowledge"), trains=True, max_new_tokens=QUESTION_TOKENS,
                       abstains=True))  # fmt: skip
register_family(Family("freshness", "Freshness", "new_answer_rate", _freshness_row, phase="fresh",
                       max_new_tokens=QUESTION_TOKENS, factual=True, grounded=True,
                       guesses_from=("freshness", "knowledge")))  # fmt: skip
register_family(Family("general", "General skills (forgetting)", "general_accuracy", _needs_answers,
                       scores=_weights_changed_or_base, closed_book=True, max_new_tokens=QUESTION_TOKENS,
                       factual=True, reference_arm="base"))  # fmt: skip
