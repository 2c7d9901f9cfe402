"""The task-suite format every run reads, and the validator behind `ragft corpus validate`.

A corpus folder holds `documents/` (what the RAG arm searches), `tasks/*.jsonl` (one task
row per line) and optionally `updates/` (documents that replace or add to `documents/`, for
freshness). The row schema is defined once, here; `corpora/README.md` documents it.

Example:
    >>> row = TaskRow.model_validate({"id": "k1", "family": "knowledge", "split": "train",
    ...     "question": "What does the Kestrel K2 cost?", "answers": ["$249"], "source_docs": ["kestrel-k2"]})
    >>> row.text
    'What does the Kestrel K2 cost?'
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from ragft.eval.families import FAMILIES, QUESTIONS, pool_key, row_families
from ragft.service.documents import DocumentError, load_documents
from ragft.service.settings import GenerationSettings
from ragft.service.training_data import normalise_text


class StyleRules(BaseModel):
    """House-style rules an answer must follow; each is optional."""

    model_config = ConfigDict(extra="forbid")
    max_words: int | None = Field(None, ge=1, description="At most this many words.")
    first_word_in: list[str] | None = Field(None, min_length=1, description="The first word must be one of these.")
    cite_source: bool = Field(False, description="End with the source document id in brackets: '[doc-id]'.")


class Generated(BaseModel):
    """Where a generated row came from (`ragft corpus generate`): the model, the prompt's version, the document and
    the span of it the row rests on. Rows made from one model answer (a question and its paraphrase) share `item`,
    and a review decides for the item."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model: str = Field(description="The generator: the endpoint's model name, or 'none' for rows made without one.")
    prompt_version: str = Field(
        description="Version of the prompt (eval/corpus/generation_rows.py), e.g. 'knowledge-1'."
    )
    item: str = Field(description="The generated item the row belongs to; its rows are reviewed together.")
    source_doc: str | None = Field(None, description="The document the row was generated from.")
    span: str | None = Field(None, description="The quoted span of that document the row rests on.")


class RowReview(BaseModel):
    """A person's decision on a generated row: pending until reviewed; runs use accepted and edited rows only."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    status: Literal["pending", "accepted", "edited", "rejected"]
    reviewer: str | None = Field(None, description="Who decided, as they entered their name.")
    at: str | None = Field(None, description="When (UTC, ISO 8601).")


class TaskRow(BaseModel):
    """One task row: an input, and what scoring it needs."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
    family: str = Field(description="A registered task family (eval/families.py).")
    split: Literal["train", "test"]
    question: str | None = Field(None, min_length=1)
    input: str | None = Field(None, min_length=1)
    instruction: str | None = Field(None, description="Shown before the input; behaviour tasks need it.")
    kind: str | None = Field(None, description="Sub-type, e.g. 'paraphrase', 'unseen', 'ticket_json'.")
    answers: list[str] = Field(default_factory=list, description="Accepted reference answers.")
    old_answers: list[str] = Field(default_factory=list, description="Freshness: the answers before updates/.")
    json_schema: dict | None = Field(None, alias="schema", description="Behaviour: JSON Schema the output obeys.")
    expected: dict | None = Field(None, description="Behaviour: the expected JSON object.")
    labels: list[str] | None = Field(None, min_length=2, description="Behaviour: the closed label set.")
    label: str | None = Field(None, description="Behaviour: the expected label.")
    style: StyleRules | None = None
    source_docs: list[str] = Field(default_factory=list, description="Document ids that hold the answer.")
    paraphrase_of: str | None = Field(None, description="The train row this test row restates.")
    rephrasings: list[str] = Field(
        default_factory=list,
        description="Train rows: other wordings of the same question (fine-tuning learns the fact from each).",
    )
    popularity: int | None = Field(
        None, ge=0, description="How popular the row's subject is (e.g. its Wikipedia pageviews), for strata."
    )
    stratum: str | None = Field(None, description="A label the report breaks verdicts down by (eval.strata_field).")
    tags: dict[str, str] = Field(
        default_factory=dict,
        description="Any other labels a team gives a row (document type, region...); eval.strata_field may name one.",
    )
    generated: Generated | None = Field(None, description="Provenance of a generated row (ragft corpus generate).")
    review: RowReview | None = Field(None, description="A generated row's review; none: written by people.")

    @property
    def text(self) -> str:
        return self.question or self.input or ""

    @model_validator(mode="after")
    def _scoring_fields(self) -> TaskRow:
        if (self.question is None) == (self.input is None):
            raise ValueError("give exactly one of 'question' or 'input'")
        if self.rephrasings and self.split != "train":
            raise ValueError("only train rows may carry 'rephrasings' (test wordings must stay unseen)")
        if self.family not in row_families():
            raise ValueError(f"unknown family '{self.family}'; use one of {', '.join(row_families())}")
        FAMILIES[self.family].check_row(self)
        return self


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}" if self.line else f"{self.file}: {self.message}"


class CorpusError(ValueError):
    """A corpus that does not validate; `problems` lists every finding with file and line."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        shown = "\n".join(f"  {p}" for p in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__(f"{len(problems)} problem(s) in the corpus:\n{shown}{more}")


def _format_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(x) for x in err["loc"])
        parts.append(f"{where}: {err['msg']}" if where else err["msg"])
    return "; ".join(parts)


def _read_rows(path: Path, root: Path, problems: list[Problem]) -> list[tuple[TaskRow, str, int]]:
    rows = []
    rel = path.relative_to(root).as_posix()
    for lineno, line in enumerate(path.read_bytes().decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(Problem(rel, lineno, f"not valid JSON ({exc.msg} at column {exc.colno})"))
            continue
        if not isinstance(data, dict):
            problems.append(Problem(rel, lineno, "a task row must be a JSON object"))
            continue
        if data.get("family") not in (*row_families(), None):
            problems.append(
                Problem(rel, lineno, f"unknown family '{data['family']}'; use one of {', '.join(row_families())}")
            )
            continue
        try:
            rows.append((TaskRow.model_validate(data), rel, lineno))
        except ValidationError as exc:
            problems.append(Problem(rel, lineno, _format_validation_error(exc)))
    return rows


def _doc_ids(folder: Path, label: str, problems: list[Problem]) -> set[str]:
    try:
        return {d.doc_id for d in load_documents(folder)}
    except DocumentError as exc:
        problems.append(Problem(label, None, str(exc)))
        return set()


def check_corpus(corpus: Path) -> tuple[list[TaskRow], list[Problem]]:
    """Every task row that parsed, and every problem found in the corpus."""
    corpus = Path(corpus)
    problems: list[Problem] = []
    if not corpus.is_dir():
        return [], [Problem(str(corpus), None, "no such corpus folder")]
    doc_ids = _doc_ids(corpus / "documents", "documents/", problems) if (corpus / "documents").is_dir() else set()
    if not (corpus / "documents").is_dir():
        problems.append(Problem("documents/", None, "missing: a corpus needs a documents/ folder"))
    update_ids = _doc_ids(corpus / "updates", "updates/", problems) if (corpus / "updates").is_dir() else set()
    files = sorted((corpus / "tasks").glob("*.jsonl")) if (corpus / "tasks").is_dir() else []
    if not files:
        problems.append(Problem("tasks/", None, "no task files: add tasks/*.jsonl"))
    located: list[tuple[TaskRow, str, int]] = []
    for path in files:
        located.extend(_read_rows(path, corpus, problems))

    first_seen: dict[str, tuple[str, int]] = {}
    train_by_id = {row.id: row for row, _, _ in located if row.split == "train"}
    train_texts = {normalise_text(t): row.id for row in train_by_id.values() for t in (row.text, *row.rephrasings)}
    for row, file, line in located:
        if row.id in first_seen:
            f0, l0 = first_seen[row.id]
            problems.append(Problem(file, line, f"duplicate id '{row.id}' (first at {f0}:{l0})"))
        first_seen.setdefault(row.id, (file, line))
        known = doc_ids | (update_ids if FAMILIES[row.family].phase == "fresh" else set())
        for doc in row.source_docs:
            if doc not in known:
                problems.append(Problem(file, line, f"source_docs id '{doc}' is not a document in documents/"))
        if row.paraphrase_of is not None and row.paraphrase_of not in train_by_id:
            problems.append(Problem(file, line, f"paraphrase_of '{row.paraphrase_of}' is not a train row id"))
        if row.split == "test" and normalise_text(row.text) in train_texts:
            problems.append(
                Problem(file, line, f"test row repeats train row '{train_texts[normalise_text(row.text)]}' (leak)")
            )
        if row.json_schema is not None:
            try:
                jsonschema.Draft202012Validator.check_schema(row.json_schema)
                jsonschema.validate(row.expected, row.json_schema)
            except jsonschema.SchemaError as exc:
                problems.append(Problem(file, line, f"schema is not a valid JSON Schema: {exc.message}"))
            except jsonschema.ValidationError as exc:
                problems.append(Problem(file, line, f"expected does not satisfy its schema: {exc.message}"))
    return [row for row, _, _ in located], problems


def hash_tasks(corpus: Path) -> str:
    """The digest of the corpus's task files (names and bytes), which a run stores as meta.tasks_hash."""
    digest = hashlib.sha256()
    for path in sorted((Path(corpus) / "tasks").glob("*.jsonl")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def load_tasks(corpus: Path, include_unreviewed: bool = False) -> list[TaskRow]:
    """The corpus's task rows a run uses (`counted_rows`), or CorpusError listing every problem."""
    rows, problems = check_corpus(corpus)
    if problems:
        raise CorpusError(problems)
    return counted_rows(rows, include_unreviewed)


def counted_rows(rows: list[TaskRow], include_unreviewed: bool = False) -> list[TaskRow]:
    """Rows written by people, and generated rows a reviewer accepted or edited; pending ones too with
    `include_unreviewed`; never rejected ones. A test row restating a train row that is left out goes too."""
    allowed = {"accepted", "edited"} | ({"pending"} if include_unreviewed else set())
    kept = [r for r in rows if r.review is None or r.review.status in allowed]
    ids = {r.id for r in kept}
    return [r for r in kept if r.paraphrase_of is None or r.paraphrase_of in ids]


def unreviewed_note(rows: list[TaskRow]) -> str | None:
    """The line a report puts first when the rows it scored include generated rows no person has reviewed
    (`--include-unreviewed`), else None."""
    pending = sum(r.review is not None and r.review.status == "pending" for r in rows)
    if not pending:
        return None
    return (f"Unreviewed rows: {pending} of the {len(rows)} rows counted were generated and not yet reviewed "
            "(--include-unreviewed); review them (ragft corpus review) before trusting a verdict.")  # fmt: skip


def row_origin(row: TaskRow) -> str:
    """Where a row came from, for reports: 'generated, accepted' / 'generated, edited' / 'generated, pending',
    'imported' (ragft corpus init) or 'written'."""
    if row.generated is not None:
        return f"generated, {row.review.status if row.review else 'accepted'}"
    return "imported" if row.tags.get("origin") == "imported" else "written"


def count_rows(rows: list[TaskRow]) -> dict[str, dict[str, int]]:
    """Rows per family and split, for data cards and the validate command."""
    counts = Counter((r.family, r.split) for r in rows)
    return {
        f: {s: counts[(f, s)] for s in ("train", "test")}
        for f in FAMILIES
        if counts[(f, "train")] + counts[(f, "test")]
    }


def reference_output(row: TaskRow, abstention_phrase: str) -> str:
    """The one answer a model should give: what fewshot examples show and fine-tuning trains on."""
    if FAMILIES[row.family].abstains:
        return abstention_phrase
    if row.expected is not None:
        return json.dumps(row.expected, ensure_ascii=False)
    if row.label is not None:
        return row.label
    return row.answers[0] if row.answers else "(any reply that follows the style rules)"


def fewshot_examples(rows: list[TaskRow], per_family: int, seed: int, abstention_phrase: str) -> dict[str, list]:
    """A fixed, seeded choice of train rows per pool: one pool for questions, one per behaviour kind.

    Questions share one pool whatever their family, mixing answerable examples with (at least) one
    unanswerable one, so the prompt never tells the model whether a question is answerable: a pool
    per family would show only abstentions to abstention rows and leak the expected answer.
    """
    import random

    from ragft.service.prompts import Example

    train = [r for r in rows if r.split == "train"]
    pools: dict[str, list[TaskRow]] = {}
    formats = sorted({(r.family, r.kind or "") for r in train if FAMILIES[r.family].formats})
    for family, kind in formats:
        members = [r for r in train if r.family == family and (r.kind or "") == kind]
        rng = random.Random(f"{seed}:{family}:{kind}")
        pools[pool_key(family, kind)] = _stratified_sample(members, per_family, rng)
    asked = [r for r in train if FAMILIES[r.family].trains and pool_key(r.family, r.kind) == QUESTIONS]
    answerable = [r for r in asked if not FAMILIES[r.family].abstains]
    unanswerable = [r for r in asked if FAMILIES[r.family].abstains]
    if answerable or unanswerable:
        rng = random.Random(f"{seed}:{QUESTIONS}")
        n_abstain = min(len(unanswerable), 1 if per_family >= 2 and answerable else per_family)
        chosen = rng.sample(answerable, min(per_family - n_abstain, len(answerable))) + rng.sample(
            unanswerable, n_abstain
        )
        rng.shuffle(chosen)
        pools[QUESTIONS] = chosen
    return {
        key: [Example(r.text, reference_output(r, abstention_phrase), r.instruction) for r in members]
        for key, members in pools.items()
    }


def _expected_values(row: TaskRow) -> set[tuple[str, str]]:
    """What a behaviour example shows: its label, each string field of its JSON, or its answer's first word."""
    if row.label is not None:
        return {("label", row.label)}
    if row.expected is not None:
        return {(k, v) for k, v in row.expected.items() if isinstance(v, str)}
    words = row.answers[0].split() if row.answers else []
    return {("first_word", words[0].strip(",.:;"))} if words else set()


def _stratified_sample(members: list[TaskRow], n: int, rng) -> list[TaskRow]:
    """A seeded sample of `n` rows that shows as many different labels and field values as it can: each pick is the
    first row (in shuffled order) adding the most values not shown yet, so three ticket examples never all share
    one priority when the train split has others."""
    order = rng.sample(members, len(members))
    chosen: list[TaskRow] = []
    shown: set[tuple[str, str]] = set()
    for _ in range(min(n, len(order))):
        best = max(order, key=lambda r: len(_expected_values(r) - shown))  # max keeps the first of equals
        order.remove(best)
        chosen.append(best)
        shown |= _expected_values(best)
    return chosen


def example_key(row: TaskRow) -> str:
    """Which fewshot pool a row draws from (`ragft.eval.families.pool_key`)."""
    return pool_key(row.family, row.kind)


def corpus_examples(corpus: Path, generation: GenerationSettings) -> dict[str, list] | None:
    """Fewshot pools for a corpus as configured, or None when it has no tasks/ (a bare folder of documents:
    the fewshot arm then refuses to answer rather than silently act as base)."""
    if not (Path(corpus) / "tasks").is_dir():
        return None
    g = generation
    return fewshot_examples(load_tasks(corpus), g.fewshot_examples, g.seed, g.abstention_phrase)


def supervised_rows(rows: list[TaskRow], abstention_phrase: str):
    """Train rows the adapters learn from (knowledge, behaviour, abstention); test rows never enter."""
    from ragft.service.training_data import SupervisedRow

    return [
        SupervisedRow(
            r.id,
            r.family,
            r.text,
            r.instruction,
            reference_output(r, abstention_phrase),
            tuple(r.source_docs),
            tuple(r.answers),
            tuple(r.rephrasings),
            FAMILIES[r.family].grounded,
        )
        for r in rows
        if r.split == "train" and FAMILIES[r.family].trains
    ]


def held_out_inputs(rows: list[TaskRow]) -> set[str]:
    """Every test input, which training data must never contain (templated paraphrases are checked against it)."""
    return {r.text for r in rows if r.split == "test"}
