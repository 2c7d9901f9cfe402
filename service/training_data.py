"""Supervised examples built from a corpus's train split, in exactly the prompts the arms use.

The lora arm is trained closed-book (the prompt the lora arm sends), the rag_lora arm on
the rag prompt with retrieved passages (RAFT-style: the gold passage shuffled among
distractors, and for a share of questions left out, with the abstention phrase as target,
so the adapter learns both to use context and to notice when it lacks the answer).
Only train rows come in; templated paraphrases that happen to match a test question are
dropped, so train and test never share an input.

Example:
    >>> row = SupervisedRow("k1", "knowledge", "What does the K2 cost?", None, "$249", ("k2",), ("$249",))
    >>> [e.variant for e in closed_book_examples([row], paraphrases=1, seed=0, abstention_phrase="?")]
    ['original', 'paraphrase']
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import asdict, dataclass, field

from service.prompts import build_messages
from service.retrieval import Passage, Retriever
from service.settings import Settings

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


@dataclass(frozen=True)
class SupervisedRow:
    """One train row reduced to what training needs; built by `eval.tasks.supervised_rows`."""

    row_id: str
    family: str
    question: str
    instruction: str | None
    target: str  # the assistant reply to learn
    source_docs: tuple[str, ...] = ()
    answers: tuple[str, ...] = ()  # locate the gold passage for rag_lora examples


@dataclass(frozen=True)
class TrainingExample:
    row_id: str  # validation is split by row, so a row's paraphrases never straddle train and validation
    messages: list[dict[str, str]] = field(hash=False)
    target: str = ""
    variant: str = "original"  # original, paraphrase, gold, no-gold, retrieved, document


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
    """Examples in the lora arm's prompt: question (with instruction) -> target, plus paraphrases of knowledge rows."""
    forbidden = {normalise_text(t) for t in forbidden_inputs}
    out = []
    for row in rows:
        questions = [(row.question, "original")]
        if row.family == "knowledge" and paraphrases:
            rng = random.Random(f"{seed}:paraphrase:{row.row_id}")
            for template in rng.sample(PARAPHRASE_TEMPLATES, min(paraphrases, len(PARAPHRASE_TEMPLATES))):
                questions.append((paraphrase(row.question, template), "paraphrase"))
        for question, variant in questions:
            if variant == "paraphrase" and normalise_text(question) in forbidden:
                continue  # would put a test input into training
            messages = build_messages(question, instruction=row.instruction, abstention_phrase=abstention_phrase)
            out.append(TrainingExample(row.row_id, messages, row.target, variant))
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
    no_gold_fraction: float,
    seed: int,
    abstention_phrase: str,
) -> list[TrainingExample]:
    """Examples in the rag arm's prompt, RAFT-style (see the module docstring)."""
    pools = retriever.search([r.question for r in rows], top_k * 3)
    out = []
    for row, pool in zip(rows, pools, strict=True):
        rng = random.Random(f"{seed}:raft:{row.row_id}")
        target, variant = row.target, "retrieved"
        passages = pool[:top_k]
        gold = _gold_passage(row, retriever) if row.family == "knowledge" and row.source_docs else None
        if gold is not None:
            distractors = [p for p in pool if p.doc_id not in row.source_docs]
            if rng.random() < no_gold_fraction:
                passages, target, variant = distractors[:top_k], abstention_phrase, "no-gold"
            else:
                passages = [gold, *distractors[: top_k - 1]]
                rng.shuffle(passages)
                variant = "gold"
        messages = build_messages(
            row.question, instruction=row.instruction, passages=passages, abstention_phrase=abstention_phrase
        )
        out.append(TrainingExample(row.row_id, messages, target, variant))
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
        no_gold_fraction=settings.lora.raft_no_gold_fraction,
        seed=g.seed,
        abstention_phrase=g.abstention_phrase,
    )


def split_validation(
    examples: list[TrainingExample], fraction: float, seed: int, max_examples: int | None = None
) -> tuple[list[TrainingExample], list[TrainingExample]]:
    """Hold out a seeded share of rows (all of a row's examples on the same side), at most `max_examples`."""
    row_ids = sorted({e.row_id for e in examples})
    if fraction <= 0 or len(row_ids) < 2:
        return examples, []
    per_row: dict[str, int] = {}
    for e in examples:
        per_row[e.row_id] = per_row.get(e.row_id, 0) + 1
    candidates = random.Random(f"{seed}:validation").sample(row_ids, max(1, round(len(row_ids) * fraction)))
    held, count = set(), 0
    for row_id in candidates:
        if max_examples is not None and held and count + per_row[row_id] > max_examples:
            break
        held.add(row_id)
        count += per_row[row_id]
    return [e for e in examples if e.row_id not in held], [e for e in examples if e.row_id in held]


def data_hash(examples: list[TrainingExample]) -> str:
    """Content hash of the examples, recorded in the manifest and part of the reuse key."""
    digest = hashlib.sha256()
    for e in examples:
        digest.update(json.dumps(asdict(e), sort_keys=True, ensure_ascii=False).encode())
    return digest.hexdigest()
