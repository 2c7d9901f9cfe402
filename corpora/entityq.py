"""Shipped corpus 3, real data: long-tail facts from EntityQuestions with their Wikipedia sentences.

Built from `entityq/source/subset.jsonl`, a subset of the files Soudani et al. (2024, "Fine Tuning vs.
Retrieval Augmented Generation for Less Popular Knowledge") published in github.com/HeydarSoudani/RAGvsFT
at commit 5a890f5 (sentences) / 22a23a0 and 8f40dbc (questions): for each EntityQuestions (Sciavolino et
al., 2021) question of the relations P50 (author) and P176 (manufacturer), the question, its answers and
the pageviews of its subject's Wikipedia page (`EQ_costomized/test/<rel>.test.json`), and the sentence
their reranker ranked first in that page (`EQ_costomized/reranked_sentences/ideal_3/<rel>.ideal.set_reranked
.jsonl`; none when the page is not in their corpus). Nothing is fetched here: the subset is committed.

What becomes what (all deterministic, seed `SEED`):
- a sentence that contains an answer (and a question that does not) is a document and a knowledge fact;
  the fact's test row asks the published question word for word; 60% of the facts in each popularity
  stratum also get a train row in other wordings (`paraphrase` tests), the rest are `unseen`;
- a sentence that contains no answer is a document whose entity is real but holds no answer:
  `missing_detail` abstention rows (a third of them train, in the train wording);
- a question whose subject has no sentence asks about an entity absent from the corpus: `absent_entity`
  abstention rows (at most as many test rows as `missing_detail` ones, so most abstention tests ask
  about a real entity the documents hold).

Every row carries `popularity` (the source's pageviews) and `stratum` (its popularity bucket, `STRATA`).
Regenerate with `python -m ragft.corpora.generate`; the data card is `entityq/DATA_CARD.md`.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from ragft.corpora.common import jsonl

NAME = "entityq"
SEED = 2024
SOURCE = Path(__file__).parent / NAME / "source" / "subset.jsonl"
TRAINED_SHARE = 0.6  # facts per stratum that get a train row (tested as paraphrases); the rest are unseen
MISSING_TRAIN_SHARE = 1 / 3  # missing-detail abstention rows that are train rows
ABSENT_TRAIN = 20  # absent-entity abstention train rows (the fine-tuned arms must see some)

# Popularity buckets on the source's pageviews: roughly terciles of the 159 answerable facts (4,174 and 15,339).
STRATA = ((4_000, "low"), (16_000, "mid"), (float("inf"), "high"))

# relation -> (the published question's pattern, train wording, train rephrasing, document folder)
RELATIONS = {
    "50": (r"^Who is the author of (.+)\?$", "Who wrote {}?", "{} was written by whom?", "works"),
    "176": (
        r"^Which company is (.+) produced by\?$",
        "Which company makes {}?",
        "Which company manufactures {}?",
        "products",
    ),
}


def stratum(pageviews: int) -> str:
    """The popularity bucket of a subject with this many pageviews."""
    return next(name for limit, name in STRATA if pageviews < limit)


def load_source(path: Path = SOURCE) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _subject(record: dict) -> tuple[str, tuple[str, str, str, str]]:
    relation = RELATIONS[record["query_id"].split("_")[0]]
    match = re.match(relation[0], record["question"])
    if match is None:
        raise ValueError(f"{record['query_id']}: question does not follow its relation's template")
    return match.group(1), relation


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "untitled"


def _mentions(text: str, answers: list[str]) -> bool:
    return any(a.lower() in text.lower() for a in answers)


def classify(record: dict) -> str:
    """'fact' (the sentence holds an answer the question does not give away), 'missing' (a real entity's sentence
    without any answer), 'absent' (no sentence: the entity is not in the corpus) or 'skip' (the question names
    its own answer)."""
    if _mentions(record["question"], record["answers"]):
        return "skip"
    if record["sentence"] is None:
        return "absent"
    return "fact" if _mentions(record["sentence"], record["answers"]) else "missing"


def _row(record: dict, row_id: str, family: str, split: str, kind: str, question: str, doc: str | None) -> dict:
    row = {"id": row_id, "family": family, "split": split, "kind": kind, "question": question,
           "popularity": record["pageviews"], "stratum": stratum(record["pageviews"])}  # fmt: skip
    if family == "knowledge":
        row["answers"] = record["answers"]
    if doc is not None:
        row["source_docs"] = [doc]
    return row


def build(source: Path = SOURCE) -> dict[str, str]:
    """Every file of the corpus (path under corpora/entityq -> text), the source subset included as committed."""
    records = load_source(source)
    rng = random.Random(SEED)
    files: dict[str, str] = {"source/subset.jsonl": source.read_text(encoding="utf-8")}
    docs: dict[str, str] = {}
    by_kind: dict[str, list[tuple[dict, str | None]]] = {"fact": [], "missing": [], "absent": []}
    for record in records:
        kind = classify(record)
        if kind == "skip":
            continue
        subject, (_, _, _, folder) = _subject(record)
        doc = None
        if record["sentence"] is not None:
            doc = f"{folder}/{_slug(subject)}"
            if doc in docs:
                doc = f"{doc}-{record['query_id'].split('_')[1]}"
            docs[doc] = subject
            files[f"documents/{doc}.md"] = f"# {subject}\n\n{record['sentence'].strip()}\n"
        by_kind[kind].append((record, doc))

    knowledge: list[dict] = []
    for name in [n for _, n in STRATA]:
        members = [(r, d) for r, d in by_kind["fact"] if stratum(r["pageviews"]) == name]
        rng.shuffle(members)
        cut = round(TRAINED_SHARE * len(members))
        for i, (record, doc) in enumerate(members):
            subject, (_, train_q, rephrasing, _) = _subject(record)
            qid = record["query_id"]
            if i < cut:
                train = _row(record, f"eq-train-{qid}", "knowledge", "train", "author" if qid.startswith("50_")
                             else "manufacturer", train_q.format(subject), doc)  # fmt: skip
                train["rephrasings"] = [rephrasing.format(subject)]
                test = _row(record, f"eq-para-{qid}", "knowledge", "test", "paraphrase", record["question"], doc)
                test["paraphrase_of"] = train["id"]
                knowledge += [train, test]
            else:
                knowledge.append(_row(record, f"eq-unseen-{qid}", "knowledge", "test", "unseen", record["question"],
                                      doc))  # fmt: skip

    abstention: list[dict] = []
    missing = by_kind["missing"][:]
    rng.shuffle(missing)
    n_train = round(MISSING_TRAIN_SHARE * len(missing))
    for i, (record, doc) in enumerate(missing):
        abstention.append(_abstention(record, doc, "missing_detail", "train" if i < n_train else "test"))
    n_missing_test = len(missing) - n_train
    absent = by_kind["absent"][:]
    rng.shuffle(absent)
    for i, (record, _) in enumerate(absent[: ABSENT_TRAIN + n_missing_test]):
        abstention.append(_abstention(record, None, "absent_entity", "train" if i < ABSENT_TRAIN else "test"))

    order = {"train": 0, "test": 1}
    files["tasks/knowledge.jsonl"] = jsonl(sorted(knowledge, key=lambda r: (order[r["split"]], r["id"])))
    files["tasks/abstention.jsonl"] = jsonl(sorted(abstention, key=lambda r: (order[r["split"]], r["id"])))
    return files


def _abstention(record: dict, doc: str | None, kind: str, split: str) -> dict:
    subject, (_, train_q, _, _) = _subject(record)
    question = train_q.format(subject) if split == "train" else record["question"]
    return _row(record, f"eq-abstain-{split}-{record['query_id']}", "abstention", split, kind, question, doc)
