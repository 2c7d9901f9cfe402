"""Supervised examples built from a corpus's train split, in exactly the prompts the arms use.

The lora arm is trained closed-book (the prompt the lora arm sends); knowledge rows come with
their rephrasings: the other train wordings the corpus gives (`rephrasings`), then wrapper
templates. The rag_lora arm is trained as RAFT (Zhang et al., 2024): the retriever's passages
for the question, with the gold passage (the source chunk holding the answer) kept among the
distractors in `raft_gold_fraction` of knowledge examples and left out in the rest, and the
answer trained either way, so the adapter learns to use context and to answer past a bad
retrieval. The variant "abstain_without_gold" teaches the abstention phrase when the gold
passage is missing instead. Only train rows come in; a rephrasing that matches a test input is
dropped, so train and test never share an input.

Validation selects checkpoints on what training should generalise to: held-out rephrasings
of trained facts (the fact is trained, one wording is not) and held-out rows of the other
families, never facts the adapter never saw.

Example:
    >>> row = SupervisedRow("k1", "knowledge", "What does the K2 cost?", None, "$249", ("k2",), ("$249",),
    ...                     rephrasings=("What is the price of the K2?",), grounded=True)
    >>> [e.variant for e in closed_book_examples([row], paraphrases=1, seed=0, abstention_phrase="?")]
    ['original', 'rephrasing', 'paraphrase']
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from dataclasses import asdict, dataclass, field

from ragft.service.prompts import build_messages
from ragft.service.retrieval import Passage, Retriever
from ragft.service.settings import Settings

PARAPHRASE_TEMPLATES = (
    "Quick question: {q}",
    "{q} Please answer briefly.",
    "I need to know this. {q}",
    "Can you tell me: {q}",
    "{q} Thanks!",
    "Hi, {q_lower}",
    "Could you check something for me? {q}",
    "Help me out: {q}",
)
REWORDED = ("rephrasing", "paraphrase")  # variants that restate a trained question: validation material


@dataclass(frozen=True)
class SupervisedRow:
    """One train row reduced to what training needs; built by `ragft.eval.tasks.supervised_rows`."""

    row_id: str
    family: str
    question: str
    instruction: str | None
    target: str  # the assistant reply to learn
    source_docs: tuple[str, ...] = ()
    answers: tuple[str, ...] = ()  # locate the gold passage for rag_lora examples
    rephrasings: tuple[str, ...] = ()  # other train wordings of the same question, from the corpus
    grounded: bool = False  # a fact its source_docs state: taught in other wordings too, and RAFT shows its gold
    # passage (the family's `grounded` fact)


@dataclass(frozen=True)
class TrainingExample:
    row_id: str
    messages: list[dict[str, str]] = field(hash=False)
    target: str = ""
    variant: str = "original"  # original, rephrasing, paraphrase, gold, no-gold, retrieved
    family: str = ""


def normalise_text(text: str) -> str:
    """Lower-case, punctuation removed, whitespace collapsed: the one form every leak check compares."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def paraphrase(question: str, template: str) -> str:
    q_lower = question[:1].lower() + question[1:]
    return template.format(q=question, q_lower=q_lower)


def closed_book_examples(
    rows: list[SupervisedRow],
    *,
    paraphrases: int,
    seed: int,
    abstention_phrase: str,
    forbidden_inputs: set[str] = frozenset(),
) -> list[TrainingExample]:
    """Examples in the lora arm's prompt: question (with instruction) -> target; knowledge rows also in the
    corpus's other train wordings and in `paraphrases` wrapper templates."""
    forbidden = {normalise_text(t) for t in forbidden_inputs}
    out = []
    for row in rows:
        questions = [(row.question, "original")]
        if row.grounded:
            questions += [(q, "rephrasing") for q in row.rephrasings]
            if paraphrases:
                rng = random.Random(f"{seed}:paraphrase:{row.row_id}")
                for template in rng.sample(PARAPHRASE_TEMPLATES, min(paraphrases, len(PARAPHRASE_TEMPLATES))):
                    questions.append((paraphrase(row.question, template), "paraphrase"))
        for question, variant in questions:
            if variant != "original" and normalise_text(question) in forbidden:
                continue  # would put a test input into training
            messages = build_messages(question, instruction=row.instruction, abstention_phrase=abstention_phrase)
            out.append(TrainingExample(row.row_id, messages, row.target, variant, row.family))
    return out


def _gold_passage(row: SupervisedRow, retriever: Retriever) -> Passage | None:
    """The chunk of a source document that holds an accepted answer (else the source's first chunk)."""
    candidates = [c for c in retriever.chunks if c.doc_id in row.source_docs]
    if not candidates:
        return None
    answers = [a.lower() for a in row.answers]
    best = next((c for c in candidates if any(a in c.text.lower() for a in answers)), candidates[0])
    return Passage(best.chunk_id, best.doc_id, best.text, 1.0, best.start_char, best.end_char)


def retrieval_examples(
    rows: list[SupervisedRow],
    retriever: Retriever,
    *,
    top_k: int,
    gold_fraction: float,
    recipe: str,
    seed: int,
    abstention_phrase: str,
) -> list[TrainingExample]:
    """Examples in the rag arm's prompt: RAFT, or its "abstain_without_gold" variant (see the module docstring)."""
    pools = retriever.search([r.question for r in rows], top_k * 3)
    out = []
    for row, pool in zip(rows, pools, strict=True):
        rng = random.Random(f"{seed}:raft:{row.row_id}")
        target, variant = row.target, "retrieved"
        passages = pool[:top_k]
        gold = _gold_passage(row, retriever) if row.grounded and row.source_docs else None
        if gold is not None:
            distractors = [p for p in pool if p.doc_id not in row.source_docs]
            if rng.random() < gold_fraction:
                passages = [gold, *distractors[: top_k - 1]]
                rng.shuffle(passages)
                variant = "gold"
            else:
                passages, variant = distractors[:top_k], "no-gold"
                if recipe == "abstain_without_gold":
                    target = abstention_phrase
        messages = build_messages(
            row.question, instruction=row.instruction, passages=passages, abstention_phrase=abstention_phrase
        )
        out.append(TrainingExample(row.row_id, messages, target, variant, row.family))
    return out


def closed_book_for(
    rows: list[SupervisedRow], settings: Settings, retriever: Retriever | None, forbidden: set[str]
) -> list[TrainingExample]:
    """Closed-book examples as configured (the lora and scratch kinds)."""
    g = settings.generation
    return closed_book_examples(
        rows,
        paraphrases=settings.lora.paraphrases,
        seed=g.seed,
        abstention_phrase=g.abstention_phrase,
        forbidden_inputs=forbidden,
    )


def retrieval_for(
    rows: list[SupervisedRow], settings: Settings, retriever: Retriever | None, forbidden: set[str]
) -> list[TrainingExample]:
    """Examples in the rag prompt with this corpus's retriever, as configured (the rag_lora kind)."""
    if retriever is None:
        raise ValueError("retrieval examples need the corpus's retriever: build the index first (ragft index)")
    g = settings.generation
    return retrieval_examples(
        rows,
        retriever,
        top_k=settings.retrieval.top_k,
        gold_fraction=settings.lora.raft_gold_fraction,
        recipe=settings.lora.raft_recipe,
        seed=g.seed,
        abstention_phrase=g.abstention_phrase,
    )


def split_validation(
    examples: list[TrainingExample], fraction: float, seed: int, max_examples: int | None = None
) -> tuple[list[TrainingExample], list[TrainingExample]]:
    """Hold out, for a seeded share of rows: one rewording when the row has one (its fact stays trained),
    else the whole row (behaviour and abstention rows). At most `max_examples` are held out."""
    row_ids = sorted({e.row_id for e in examples})
    if fraction <= 0 or len(row_ids) < 2:
        return examples, []
    by_row: dict[str, list[int]] = {}
    for i, e in enumerate(examples):
        by_row.setdefault(e.row_id, []).append(i)
    rng = random.Random(f"{seed}:validation")
    held: set[int] = set()
    rows_left = Counter(examples[members[0]].family for members in by_row.values())
    wanted, chosen = max(1, round(len(row_ids) * fraction)), 0
    for row_id in rng.sample(row_ids, len(row_ids)):  # a seeded order; the first `wanted` eligible rows
        if chosen == wanted:
            break
        members = by_row[row_id]
        reworded = [i for i in members if examples[i].variant in REWORDED]
        take = [reworded[0]] if reworded else members
        family = examples[members[0]].family
        if not reworded and rows_left[family] <= 1:
            continue  # never hold out a family's last row: the adapter would not learn that family at all
        if max_examples is not None and held and len(held) + len(take) > max_examples:
            break
        held.update(take)
        chosen += 1
        rows_left[family] -= 0 if reworded else 1
    return [e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held]


def data_hash(examples: list[TrainingExample]) -> str:
    """Content hash of the examples, recorded in the manifest and part of the reuse key."""
    digest = hashlib.sha256()
    for e in examples:
        digest.update(json.dumps(asdict(e), sort_keys=True, ensure_ascii=False).encode())
    return digest.hexdigest()
