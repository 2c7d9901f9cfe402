"""Knowledge: short factual answers, scored as values rather than substrings.

Every string metric reads replies through `ragft.eval.scoring.metrics.values` (the one normaliser), so
"$463.00", "463 dollars" and "USD 463" are one answer. `answer_contained` scores the short
answer (the first sentence) and accepts it only when it *asserts* one answer:

- it names an accepted answer (a value of the same type and amount, or the phrase as whole words);
- it names no rival candidate: no other value of the answer's type ("$100, $200, $463 or $500"),
  no other answer of the same shape from the family's answers ("Heron H10 or Heron H18"), and no
  alternative of the answer's kind offered beside it ("Paris or Marseille", "either Paris or maybe
  Lyon"), even one no document names: an answer that offers two candidates when one is accepted
  has not chosen;
- the answer is not negated: "It is not $463.", "The price isn't $463", "never Paris" say the answer
  is something else. A negation counts when "not", "n't", "never", "neither"/"nor", "no longer" (or
  "no" right before it) stands within three words before the answer in the same clause; a bound between them
  ("not more than 40 mph", "not before 08:30", "cannot exceed 24 months") states the answer as a
  limit and still counts as naming it.

Example:
    >>> answer_contained("It costs 463 dollars, I think.", ["$463"])
    1.0
    >>> answer_contained("$100, $200, $300, $400, $463 or $500", ["$463"])
    0.0
    >>> answer_contained("It is not $463.", ["$463"]), answer_contained("Paris or Marseille", ["Paris"])
    (0.0, 0.0)
    >>> round(token_f1("the price is 463 dollars", ["463 dollars"]), 2)
    0.5
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

from ragft.eval.scoring.metrics.values import answer_shape, canonical, short_answer, single_value, values


def exact_match(prediction: str, answers: list[str]) -> float:
    """The whole reply is an accepted answer, once normalised."""
    pred = canonical(prediction)
    return float(any(pred == canonical(a) for a in answers))


def token_f1(prediction: str, answers: list[str]) -> float:
    """Best token-overlap F1 against any accepted answer; a value ("463 dollars") is one token."""
    pred = canonical(prediction).split()
    best = 0.0
    for answer in answers:
        ref = canonical(answer).split()
        common = sum((Counter(pred) & Counter(ref)).values())
        if common:
            precision, recall = common / len(pred), common / len(ref)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def _has(haystack: str, needle: str) -> bool:
    return f" {needle} " in f" {haystack} "


def stated_in(text: str, answer: str) -> bool:
    """Whether a document's `text` states `answer`: as the metric reads values ("$1,250" is "1250 dollars"), or as
    the same words, lower-cased. Corpus init locates answers with it and the audit checks rows with it, so a row the
    one accepts the other passes."""
    said = canonical(answer)
    if said and _has(canonical(text), said):
        return True
    return " ".join(answer.lower().split()) in " ".join(text.lower().split())


def answer_contained(prediction: str, answers: Sequence[str], space: Sequence[str] = ()) -> float:
    """1.0 when the short answer asserts an accepted answer: names it, names no rival, offers no alternative of
    its kind, and does not negate it (the rules in the module docstring).

    A value answer ("$463", "24 months", "08:30") needs every value of its type in the short answer
    to equal it (a bare number counts as a candidate for a price or a duration); a phrase answer must
    appear as whole words, and no other answer of its shape (`ragft.eval.scoring.metrics.values.answer_shape`: names with names,
    plain phrases with phrases) from `space`, the family's answers, beside it.
    """
    short = short_answer(prediction)
    said, found = canonical(short), values(short)
    accepted = {canonical(a) for a in answers}  # another accepted answer beside one is no rival
    return float(any(_names(short, said, found, answer, space, accepted) for answer in answers))


def _names(short: str, said: str, found, answer: str, space: Sequence[str], accepted: set[str]) -> bool:
    gold = single_value(answer)
    if gold is not None:
        rivals = [v for v in found if v.competes(gold)]
        return bool(rivals) and all(v.same(gold) for v in rivals) and _asserted(short, lambda v: v.same(gold), None)
    target = canonical(answer)
    if not target or not _has(said, target):
        return False
    shape = answer_shape(answer)
    phrases = (canonical(c) for c in space if answer_shape(c) == shape and single_value(c) is None)
    phrases = (c for c in phrases if c not in accepted)
    if any(c and _has(said, c) and not _has(target, c) and not _has(c, target) for c in phrases):
        return False
    return _asserted(short, None, target) and not _offers_alternative(short, answer, accepted)


# Negation: a cue within NEGATION_WINDOW tokens before the answer, in the same clause. Three tokens cover
# "is not $463", "does not cost $463", "isn't the $463" (canonical text reads "isn't" as "isn t").
NEGATION_WINDOW = 3
_CLAUSE = re.compile(r"[;()|\n\u2014]|,\s+(?!\d)|:\s+|\s[-\u2013]\s|\b(?:but|however|rather|instead|whereas|although|though|yet)\b",
                     re.IGNORECASE)  # fmt: skip
_NEGATION = {"not", "never", "neither", "nor", "cannot"}
_BOUND = {"more", "less", "fewer", "over", "under", "above", "below", "exceed", "exceeds", "exceeding", "later",
          "earlier", "before", "after", "until", "till", "beyond", "than", "longer", "shorter", "sooner", "higher",
          "lower", "greater", "least", "most", "only", "just", "up", "past"}  # fmt: skip


def _negated(tokens: list[str], at: int) -> bool:
    """A negation cue stands within the window before token `at`, with no bound word after it."""
    window = tokens[max(0, at - NEGATION_WINDOW) : at]
    for i in range(len(window) - 1, -1, -1):
        word = window[i]
        if word == "longer" and i > 0 and window[i - 1] == "no":  # "no longer $199": the old value, denied
            return True
        if word in _BOUND:
            return False
        contracted = word == "t" and i > 0 and window[i - 1].endswith("n")  # "isn't" -> "isn t"
        if word in _NEGATION or contracted or (word == "no" and i == len(window) - 1):
            return True
    return False


def _asserted(short: str, is_gold, target: str | None) -> bool:
    """Some occurrence of the answer (a value `is_gold` accepts, or the phrase `target`) is not negated."""
    for clause in _CLAUSE.split(short):
        tokens = canonical(clause).split()
        if is_gold is not None:
            gold_tokens = {v.token for v in values(clause) if is_gold(v)}
            hits = [i for i, t in enumerate(tokens) if t in gold_tokens]
        else:
            words = target.split()
            hits = [i for i in range(len(tokens) - len(words) + 1) if tokens[i : i + len(words)] == words]
        if any(not _negated(tokens, i) for i in hits):
            return True
    return False


_ALTERNATIVES = re.compile(r"\bor\b|\bnor\b|\s/\s|(?<=\w)/(?=[A-Za-z])", re.IGNORECASE)
_ITEM_SPLIT = re.compile(r",?\s+(?:or|nor)\s+|,\s+|\s*/\s*", re.IGNORECASE)
_SENTENCE_PARTS = re.compile(r"[;.!?:]\s|\b(?:but|however|because|although|though)\b", re.IGNORECASE)
_FILLER = re.compile(r"^(?:(?:or|nor|either|neither|maybe|perhaps|possibly|probably|likely|also|even|just|it is|it's|"
                     r"it was|its|is|the|a|an|in|at|on|to|by|from|of)\s+)+", re.IGNORECASE)  # fmt: skip
_NOT_A_CANDIDATE = {"so", "i", "we", "they", "you", "it", "is", "am", "think", "believe", "guess", "say", "says",
                    "said", "know", "recall", "remember", "sure", "something", "like", "that", "similar", "thereabouts",
                    "not", "whatever", "else", "other", "etc", "on", "more", "less", "none", "both"}  # fmt: skip
_PARTICLES = {"de", "da", "del", "della", "di", "du", "van", "von", "der", "den", "la", "le", "ben", "bin", "al",
              "of", "and", "the", "&"}  # fmt: skip


def _kind(text: str) -> str:
    """'name' for a proper-noun chunk ("Marseille", "Ford Motor Company", "Heron H10"), else 'text'."""
    words = [w.strip(".,'\"") for w in text.split()]
    words = [w for w in words if w]
    if (
        words
        and all(w[0].isupper() or w[0].isdigit() or w.lower() in _PARTICLES for w in words)
        and any(w[0].isupper() for w in words)
    ):
        return "name"
    return "text"


def _offers_alternative(short: str, answer: str, accepted: set[str] = frozenset()) -> bool:
    """The short answer joins `answer` with "or" (or "/", "nor") to another candidate of the answer's kind: a name
    beside a name answer, a phrase beside a phrase answer. The alternatives are the list items next to the item that
    names the answer: after it when the answer ends its item ("The capital is Paris or Marseille"), before it when
    the answer starts its item, both when it is the item. Items longer than the answer plus four words are clauses,
    not candidates, filler ("or so I think", "or something similar") is none, and neither is another of the row's
    `accepted` answers (canonical)."""
    target, kind = canonical(answer), _kind(answer)
    limit = len(answer.split()) + 4
    for part in _SENTENCE_PARTS.split(short):
        if not _ALTERNATIVES.search(part) or not _has(canonical(part), target):
            continue
        items = [_FILLER.sub("", i.strip(" \"'*")).strip(" .,!?") for i in _ITEM_SPLIT.split(part)]
        for k, item in enumerate(items):
            said = canonical(item)
            if not _has(said, target):
                continue
            before = items[:k] if f"{said} ".startswith(f"{target} ") else []
            after = items[k + 1 :] if f" {said}".endswith(f" {target}") else []
            if any(
                _candidate(other, target, kind, limit) and canonical(other) not in accepted for other in before + after
            ):
                return True
    return False


def _candidate(item: str, target: str, kind: str, limit: int) -> bool:
    said = canonical(item)
    if not said or _has(said, target) or _has(target, said) or len(item.split()) > limit:
        return False
    return not set(said.split()) <= _NOT_A_CANDIDATE and _kind(item) == kind


def corpus_answers(rows: Iterable) -> dict[str, tuple[str, ...]]:
    """Per family, every accepted (and superseded) answer in the corpus: the rivals a reply may not list beside
    its answer. Give it every row, train and test, so the rivals are the whole answer space."""
    spaces: dict[str, set[str]] = {}
    for row in rows:
        spaces.setdefault(row.family, set()).update(row.answers, row.old_answers)
    return {family: tuple(sorted(answers)) for family, answers in spaces.items()}


def _answers(row) -> list[str]:
    return list(row.answers)


def knowledge_correct(row, pred, ctx) -> float:
    """`answer_contained` against the row's answers, with the family's answer space from the scoring context."""
    return answer_contained(pred.text, _answers(row), ctx.corpus_answers.get(row.family, ()))


def correct_on(kind: str):
    """`knowledge_correct` on test rows of one kind only: paraphrases of trained facts, or facts only in the
    documents ("unseen"), which a closed-book adapter cannot reach."""
    return lambda row, pred, ctx: knowledge_correct(row, pred, ctx) if row.kind == kind else None


def rouge_l(row, pred, ctx) -> float:
    from ragas.metrics.collections import RougeScore
    from ragft.eval.scoring.metrics.registry import ragas_metric, ragas_value

    metric = ragas_metric(ctx, "rouge", lambda: RougeScore(rouge_type="rougeL", mode="fmeasure"))
    return max(ragas_value(metric.ascore(reference=a, response=pred.text or " ")) for a in _answers(row))


def string_similarity(row, pred, ctx) -> float:
    from ragas.metrics.collections import NonLLMStringSimilarity
    from ragft.eval.scoring.metrics.registry import ragas_metric, ragas_value

    metric = ragas_metric(ctx, "string", NonLLMStringSimilarity)
    return max(ragas_value(metric.ascore(reference=a, response=pred.text or " ")) for a in _answers(row))


def semantic_similarity(row, pred, ctx) -> float | None:
    """ragas SemanticSimilarity with the local embedder wrapped as a ragas embedding."""
    if ctx.embed is None:
        return None
    from ragas.metrics.collections import SemanticSimilarity
    from ragft.eval.scoring.metrics.registry import ragas_metric, ragas_value

    metric = ragas_metric(ctx, "semantic", lambda: SemanticSimilarity(embeddings=local_embeddings(ctx.embed)))
    return max(ragas_value(metric.ascore(reference=a, response=pred.text or " ")) for a in _answers(row))


def _first_gold_rank(row, pred) -> int | None:
    for rank, passage in enumerate(pred.passages, start=1):
        if passage.doc_id in row.source_docs:
            return rank
    return None


def recall_at_k(row, pred, ctx) -> float | None:
    """1.0 when any retrieved passage comes from a document that holds the answer."""
    if not row.source_docs:
        return None
    return float(_first_gold_rank(row, pred) is not None)


def mrr(row, pred, ctx) -> float | None:
    if not row.source_docs:
        return None
    rank = _first_gold_rank(row, pred)
    return 1.0 / rank if rank else 0.0


def context_recall(row, pred, ctx) -> float | None:
    """ragas NonLLMContextRecall: do the retrieved passages contain the sentences that hold the answer?"""
    gold = ctx.gold_contexts.get(row.id)
    if not gold:
        return None
    from ragas.dataset_schema import SingleTurnSample
    from ragas.metrics import NonLLMContextRecall
    from ragft.eval.scoring.metrics.registry import ragas_metric

    metric = ragas_metric(ctx, "context_recall", NonLLMContextRecall)
    # sentence against sentence: ragas compares whole strings by edit distance, and a gold sentence inside a
    # 200-token passage scores far below its 0.5 threshold, so passages are split the way the gold side is
    retrieved = [sentence for p in pred.passages for sentence in split_sentences(p.text)] or [" "]
    sample = SingleTurnSample(retrieved_contexts=retrieved, reference_contexts=gold)
    import asyncio

    return float(asyncio.run(metric.single_turn_ascore(sample)))


def local_embeddings(embed):
    """The configured sentence-transformers model behind ragas' modern embedding interface."""
    from ragas.embeddings.base import BaseRagasEmbedding

    class LocalEmbeddings(BaseRagasEmbedding):
        def embed_text(self, text: str, **kwargs) -> list[float]:
            return embed([text])[0]

        async def aembed_text(self, text: str, **kwargs) -> list[float]:
            return embed([text])[0]

    return LocalEmbeddings()


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", text) if s.strip()]


def answer_sentences(document_text: str, answers: list[str]) -> list[str]:
    """Sentences of a source document that hold an accepted answer: the reference contexts for context recall."""
    wanted = [a.lower() for a in answers if a.strip()]
    return [s for s in split_sentences(document_text) if any(a in s.lower() for a in wanted)]


def _register() -> None:
    from ragft.eval.scoring.metrics.registry import Metric, register

    k = ("knowledge",)

    def string(fn):
        return lambda row, pred, ctx: fn(pred.text, _answers(row))

    register(Metric("answer_contained", "knowledge", k, knowledge_correct,
                    "the short answer names an accepted answer (values normalised) and no rival"))  # fmt: skip
    register(Metric("answer_contained_paraphrase", "knowledge_paraphrase", k, correct_on("paraphrase"),
                    "answer_contained on paraphrases of trained facts"))  # fmt: skip
    register(Metric("answer_contained_unseen", "knowledge_unseen", k, correct_on("unseen"),
                    "answer_contained on facts only the documents hold"))  # fmt: skip
    register(Metric("exact_match", "knowledge", k, string(exact_match), "the reply is an accepted answer, normalised"))
    register(Metric("token_f1", "knowledge", k, string(token_f1), "best token-overlap F1 with an accepted answer"))
    register(Metric("rouge_l", "knowledge", k, rouge_l, "ragas RougeScore (ROUGE-L F-measure)"))
    register(Metric("string_similarity", "knowledge", k, string_similarity,
                    "ragas NonLLMStringSimilarity (normalised Levenshtein)"))  # fmt: skip
    register(Metric("semantic_similarity", "knowledge", k, semantic_similarity,
                    "ragas SemanticSimilarity with the local embedder"))  # fmt: skip
    register(Metric("recall_at_k", "knowledge", k, recall_at_k,
                    "a retrieved passage comes from a source document", needs_contexts=True))  # fmt: skip
    register(Metric("mrr", "knowledge", k, mrr, "reciprocal rank of the first source passage", needs_contexts=True))
    register(Metric("context_recall", "knowledge", k, context_recall,
                    "ragas NonLLMContextRecall against the answer-bearing sentences", needs_contexts=True))  # fmt: skip


_register()
