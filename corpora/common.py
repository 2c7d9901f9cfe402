"""What both shipped-corpus generators share: facts, the train/test split, and byte-stable writing.

A fact knows its document, its answer and two disjoint sets of question templates: train
questions use the first set, paraphrase test questions the second, so no test question
repeats a train question word for word.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Fact:
    fact_id: str
    doc_id: str
    answer: str  # must occur verbatim in the document
    train_questions: list[str]  # templates already filled with the subject
    test_questions: list[str]
    alternatives: list[str] = field(default_factory=list)  # other accepted spellings
    kind: str = ""  # price, firmware, ...

    @property
    def answers(self) -> list[str]:
        return [self.answer, *self.alternatives]


def knowledge_rows(
    facts: list[Fact],
    rng: random.Random,
    prefix: str,
    n_unseen: int,
    n_paraphrase: int,
    exclude: set[str] = frozenset(),
) -> tuple[list[dict], list[dict]]:
    """Train rows for all but `n_unseen` facts; test rows: paraphrases of train facts and unseen facts.

    Facts in `exclude` (those that updates/ will change) are trained on but never asked as a
    paraphrase, since their right answer depends on the corpus version.
    """
    order = facts[:]
    rng.shuffle(order)
    unseen = [f for f in order if f.fact_id not in exclude][:n_unseen]
    unseen_ids = {f.fact_id for f in unseen}
    trained = [f for f in facts if f.fact_id not in unseen_ids]
    train, test = [], []
    for f in trained:
        question = rng.choice(f.train_questions)
        row = _row(f"{prefix}-train-{f.fact_id}", "train", question, f, kind=f.kind)
        others = [q for q in f.train_questions if q != question]  # train wordings only: test wordings stay unseen
        if others:
            row["rephrasings"] = others
        train.append(row)
    candidates = [f for f in trained if f.fact_id not in exclude]
    for f in sorted(rng.sample(candidates, n_paraphrase), key=lambda f: f.fact_id):
        row = _row(f"{prefix}-para-{f.fact_id}", "test", rng.choice(f.test_questions), f, kind="paraphrase")
        row["paraphrase_of"] = f"{prefix}-train-{f.fact_id}"
        test.append(row)
    for f in sorted(unseen, key=lambda f: f.fact_id):
        test.append(_row(f"{prefix}-unseen-{f.fact_id}", "test", rng.choice(f.test_questions), f, kind="unseen"))
    return train, test


def for_split(templates: tuple[list[str], list[str]], split: str) -> list[str]:
    """The train or the held-out test half of a (train, test) template pair."""
    return templates[0] if split == "train" else templates[1]


def _row(row_id: str, split: str, question: str, fact: Fact, kind: str) -> dict:
    return {
        "id": row_id,
        "family": "knowledge",
        "split": split,
        "kind": kind,
        "question": question,
        "answers": fact.answers,
        "source_docs": [fact.doc_id],
    }


_VOWEL_SOUND = re.compile(r"\b([Aa]) (?=[aeiAEI]|[oO](?!ne\b|nce\b)|[uU](?!ni|s[eu]))")


def fix_articles(text: str) -> str:
    """'a amplified sound permit' -> 'an amplified sound permit': templates fill nouns whose article they cannot
    know, so every generated file passes through here."""
    return _VOWEL_SOUND.sub(lambda m: m.group(1) + "n ", text)


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)


def write_files(files: dict[str, str], out_dir: Path) -> None:
    """Write every generated file with '\\n' line ends, so output is byte-identical on any OS."""
    for rel, text in sorted(files.items()):
        path = Path(out_dir) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
