"""String metrics for short factual answers (SQuAD-style normalisation).

Example:
    >>> answer_contained("It costs $463, I think.", ["$463"])
    1.0
    >>> round(token_f1("the price is 463 dollars", ["463 dollars"]), 2)
    0.67
"""

from __future__ import annotations

import re
import string
from collections import Counter

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans({c: " " for c in string.punctuation if c not in "$£%."})


def normalise_answer(text: str) -> str:
    """Lower-case, drop articles and most punctuation (keeping $ £ % and decimal points), squeeze spaces."""
    text = text.lower().translate(_PUNCT)
    text = re.sub(r"\.(?!\d)", " ", text)  # a full stop, but not the point in 4.12.3
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, answers: list[str]) -> float:
    pred = normalise_answer(prediction)
    return float(any(pred == normalise_answer(a) for a in answers))


def token_f1(prediction: str, answers: list[str]) -> float:
    """Best token-overlap F1 against any accepted answer."""
    pred = normalise_answer(prediction).split()
    best = 0.0
    for answer in answers:
        ref = normalise_answer(answer).split()
        common = sum((Counter(pred) & Counter(ref)).values())
        if common:
            precision, recall = common / len(pred), common / len(ref)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def answer_contained(prediction: str, answers: list[str]) -> float:
    """1.0 when an accepted answer appears in the prediction as whole words."""
    pred = f" {normalise_answer(prediction)} "
    return float(any(f" {normalise_answer(a)} " in pred for a in answers if normalise_answer(a)))
