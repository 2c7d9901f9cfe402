"""Abstention: three outcomes per answer (right, declined, wrong) on unanswerable and answerable rows.

The headline, `effective_reliability`, is the three-way score of Whitehead et al. (2022,
"Reliable Visual Question Answering: Abstain Rather Than Answer Incorrectly", ECCV; the
"effective reliability" Feng et al. (2024, "Don't Hallucinate, Abstain", ACL) report for LLMs):
a right answer scores +1, declining scores 0, a wrong answer scores -c (c = WRONG_ANSWER_COST = 1).
Every answer to an unanswerable row is wrong. So:

- a calibrated refusal (declining a row the arm would get wrong, answerable or not) scores 0, above the
  -1 of the hallucination it avoids, and below the +1 of the right answer it forgoes;
- always abstaining scores 0: the score of saying nothing, not a ceiling. An arm beats it only when its
  right answers outnumber its wrong ones, which is what a user of the arm gains by asking it;
- the unanswerable and the answerable halves weigh equally (`balance`), so a corpus with many answerable
  rows does not turn the family into knowledge: an arm that never abstains loses a full -1 on the
  unanswerable half and scores at most 0, however many answerable rows it gets right. The figure runs
  from -1 (every answer wrong) to 0.5 (every answerable row right, every unanswerable one declined).

The former headline (1 for the right action, 0 otherwise) scored a refusal on an answerable row like a
hallucination and always abstaining exactly 0.5, so beating "always abstain" needed the arm's
abstention rate and its knowledge accuracy to sum past 1. Beside the headline: coverage (share
answered), selective accuracy (right among answered: the risk-coverage point of Kamath et al. 2020,
"Selective Question Answering under Domain Shift", ACL) and hallucination rates.

The detector reads the short answer (the first sentence that is not an apology): a reply that
answers first and declines a side question ("The K20 costs $249. I do not know its weight.")
has answered. It is validated on tests/data/abstention_replies.jsonl (precision and recall
printed by tests/test_metrics.py).

Example:
    >>> abstained("The passages do not contain the answer.", "I don't know based on the provided documents.")
    True
    >>> abstained("The K20 costs $249. I do not know its weight.", "I don't know based on the provided documents.")
    False
    >>> [SCORE[o] for o in (Outcome.CORRECT, Outcome.ABSTAINED, Outcome.WRONG)]
    [1.0, 0.0, -1.0]
"""

from __future__ import annotations

import re
from enum import StrEnum

from ragft.eval.families import FAMILIES
from ragft.eval.scoring.metrics.knowledge import answer_contained
from ragft.eval.scoring.metrics.registry import Metric, register

_CONTRACTIONS = [
    (r"\bcan't\b|\bcannot\b", "can not"), (r"\bwon't\b", "will not"), (r"n't\b", " not"), (r"\bi'm\b", "i am"),
    (r"'re\b", " are"), (r"'ve\b", " have"), (r"'ll\b", " will"), (r"'d\b", " would"),
]  # fmt: skip
_SOURCE = r"(?:passages?|documents?|docs|context|texts?|sources?|excerpts?|materials?|information|info|data|manuals?|snippets?)"
_REPORT = r"(?:contain|mention|say|state|specify|include|provide|give|list|cover|address|indicate|discuss|describe|detail|tell|answer|show|reference|have|appear|hold|explain)"
_UNKNOWN = r"(?:mentioned|specified|stated|documented|given|disclosed|covered|addressed|listed|included|provided|available|found|known|clear)"
_REFUSALS = [
    # the speaker cannot or does not know
    r"\bi (?:do|did) not (?:know|have (?:any |enough |the |that |this |specific )?(?:information|info|data|details?|knowledge|answer|access|context|record))",
    r"\bi (?:can not|could not|did not|am unable to|am not able to|was unable to|was not able to) (?:find|tell|say|determine|answer|locate|see|confirm|verify|identify|give|provide|help|know|access)",
    r"\bi am not (?:entirely |completely |totally |quite |100% )?(?:sure|certain|aware)\b",
    r"^not (?:sure|certain)\b",
    r"\bunsure\b",
    r"\bno (?:idea|clue)\b",
    r"\bi have no (?:information|info|data|details?|knowledge|record|way to know)",
    # the sources do not say
    rf"\b{_SOURCE}\b[^.]*?\b(?:do|does|did|can|could) not (?:seem to |appear to )?{_REPORT}",
    rf"\b{_SOURCE}\b[^.]*?\b(?:is|are|was|were) (?:silent|not {_UNKNOWN})\b",
    rf"\b{_SOURCE}\b[^.]*?\b(?:only )?(?:say|says|contain|contains|mention|mentions) nothing\b",
    rf"\b{_SOURCE}\b[^.]*?\bonly (?:cover|covers|describe|describes|mention|mentions|discuss|discusses)\b",
    rf"\bnot (?:{_UNKNOWN} )?(?:in|within|among|from|by) (?:the |these |those |any |my )?(?:provided |given |available |supplied |above |retrieved )?{_SOURCE}",
    r"\bno (?:mention|information|info|details?|record|reference|indication) (?:of|about|on|regarding|in|for|is|was|available|provided|given|that)\b",
    r"\b(?:is|are|was|were) not (?:mentioned|specified|stated|documented|disclosed|given|known|clear)\b(?! (?:by|with|for|to|on|at|as|if|when|under|until)\b)",
    r"\b(?:not enough|insufficient) (?:information|info|context|data|details?)\b",
    r"\b(?:can not|could not) be (?:determined|answered|found|confirmed|verified|identified|established)\b",
    r"\b(?:is|remains) (?:unknown|unclear)\b",
    r"\bunable to (?:answer|determine|find|say)\b",
    r"\bnothing (?:in|about) (?:the |these )?(?:provided )?" + _SOURCE,
]
_REFUSAL = re.compile("|".join(f"(?:{r})" for r in _REFUSALS))
_APOLOGY = re.compile(r"^(?:i am )?(?:sorry|apologies|i apologi[sz]e|unfortunately|hmm+|well|ok(?:ay)?)\W*$")


def _plain(text: str) -> str:
    text = text.lower().replace("\u2019", "'")
    for pattern, repl in _CONTRACTIONS:
        text = re.sub(pattern, repl, text)
    return " ".join(text.split())


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?;])\s+|\n+", text) if s.strip(" *#-")]


def _refuses(sentence: str) -> bool:
    """The clause after the last 'but'/'however' refuses ("I'm not sure, but it is $249" answers)."""
    last = re.split(r"\b(?:but|however)\b", sentence)[-1]
    return bool(_REFUSAL.search(last.strip(" ,")))


def abstained(text: str, phrase: str) -> bool:
    """The reply's first sentence that is not an apology declines: the fixed phrase, or any refusal wording."""
    fixed = _plain(phrase).rstrip(".")
    for sentence in _sentences(_plain(text)):
        if not _APOLOGY.match(sentence):
            return fixed in sentence or _refuses(sentence)
    return False


class Outcome(StrEnum):
    CORRECT = "correct"
    ABSTAINED = "abstained"
    WRONG = "wrong"


WRONG_ANSWER_COST = 1.0  # c: a wrong answer costs as much as a right one gains (Feng et al. 2024 report c = 1)
SCORE = {Outcome.CORRECT: 1.0, Outcome.ABSTAINED: 0.0, Outcome.WRONG: -WRONG_ANSWER_COST}


def outcome(row, pred, ctx) -> Outcome:
    """What the reply did: abstained, or answered (correctly only if the row is answerable and the answer right)."""
    if abstained(pred.text, ctx.abstention_phrase):
        return Outcome.ABSTAINED
    if row.answers and answer_contained(pred.text, list(row.answers), ctx.corpus_answers.get(row.family, ())):
        return Outcome.CORRECT
    return Outcome.WRONG


def _answerable(row) -> bool:
    return not FAMILIES[row.family].abstains


def effective_reliability(row, pred, ctx) -> float:
    """+1 for a right answer, 0 for declining, -1 for a wrong answer (any answer to an unanswerable row)."""
    return SCORE[outcome(row, pred, ctx)]


def coverage_answerable(row, pred, ctx) -> float | None:
    return float(outcome(row, pred, ctx) is not Outcome.ABSTAINED) if _answerable(row) else None


def coverage_unanswerable(row, pred, ctx) -> float | None:
    return None if _answerable(row) else float(outcome(row, pred, ctx) is not Outcome.ABSTAINED)


def selective_accuracy(row, pred, ctx) -> float | None:
    """Correct among the answerable rows the arm answered (None where it abstained)."""
    if not _answerable(row):
        return None
    result = outcome(row, pred, ctx)
    return None if result is Outcome.ABSTAINED else float(result is Outcome.CORRECT)


def hallucination_rate(row, pred, ctx) -> float:
    return float(outcome(row, pred, ctx) is Outcome.WRONG)


def hallucination_rate_answerable(row, pred, ctx) -> float | None:
    return float(outcome(row, pred, ctx) is Outcome.WRONG) if _answerable(row) else None


reads = ("abstention", "knowledge")
register(Metric("effective_reliability", "abstention", reads, effective_reliability,
                "+1 a right answer, 0 declining, -1 a wrong answer; unanswerable and answerable halves weigh the same",
                balance=lambda row: "answerable" if _answerable(row) else "unanswerable",
                refusal=SCORE[Outcome.ABSTAINED], figure_range=(-WRONG_ANSWER_COST, 0.5),
                note=("Effective reliability (Whitehead et al. 2022): a right answer +1, declining 0, a wrong answer -1, "
                      "unanswerable and answerable rows weighing half each. 0 is what always abstaining scores, 0.5 "
                      "the best possible (every answerable row right, every unanswerable one declined), -1 every "
                      "answer wrong; an arm above 0 gives more right answers than wrong ones.")))  # fmt: skip
register(Metric("coverage_answerable", "abstention", reads, coverage_answerable,
                "answers (does not abstain on) answerable rows"))  # fmt: skip
register(Metric("coverage_unanswerable", "abstention", reads, coverage_unanswerable,
                "answers unanswerable rows: every such answer is a hallucination", higher_is_better=False))  # fmt: skip
register(Metric("selective_accuracy", "abstention", reads, selective_accuracy,
                "correct among the answerable rows it answered"))  # fmt: skip
register(Metric("hallucination_rate", "abstention", reads, hallucination_rate,
                "wrong answers over all rows, answerable and unanswerable", higher_is_better=False))  # fmt: skip
register(Metric("hallucination_rate_answerable", "abstention", reads, hallucination_rate_answerable,
                "wrong answers over the answerable rows", higher_is_better=False))  # fmt: skip
