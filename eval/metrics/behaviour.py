"""Behaviour and format: JSON that parses and obeys its schema, closed label sets, house style.

`behaviour_pass` is the family headline: a row passes when its own requirement is met
(schema valid with every expected field right, the right label, or every style rule with
the right verdict word). Label accuracy and macro-F1 read the label through one lenient
parser ("Label: refund_request" is refund_request; a reply naming two labels names none).

Example:
    >>> parse_json('Here: {"a": 1}')
    {'a': 1}
    >>> style_ok("Yes, it ships in May [doc-1]", {"max_words": 8, "first_word_in": ["Yes", "No"], "cite_source": True}, ["doc-1"])
    1.0
    >>> style_ok("Yes, it ships in May [doc-1]", {"first_word_in": ["Yes", "No"]}, ["doc-1"], expected_first_word="No")
    0.0
"""

from __future__ import annotations

import json
import re

import jsonschema

from eval.metrics.registry import Metric, register


def parse_json(text: str):
    """The first JSON object in the reply (models often wrap it in prose or a code fence), or None."""
    text = text.strip()
    decoder = json.JSONDecoder()
    for start in [m.start() for m in re.finditer(r"\{", text)]:
        try:
            value, _ = decoder.raw_decode(text[start:])
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None


def json_valid(row, pred, ctx) -> float | None:
    if row.json_schema is None:
        return None
    return float(parse_json(pred.text) is not None)


def schema_valid(row, pred, ctx) -> float | None:
    if row.json_schema is None:
        return None
    value = parse_json(pred.text)
    return float(value is not None and jsonschema.Draft202012Validator(row.json_schema).is_valid(value))


def field_accuracy(row, pred, ctx) -> float | None:
    """Share of the expected fields whose value the reply gets exactly right."""
    if row.expected is None:
        return None
    value = parse_json(pred.text) or {}
    return sum(value.get(k) == v for k, v in row.expected.items()) / len(row.expected)


def predicted_label(text: str, labels: list[str]) -> str | None:
    """The label the reply names: the whole reply, else the one label it mentions as a word (None for two or more:
    listing labels is not choosing one)."""
    clean = text.strip().strip(".\"'`").lower()
    for label in labels:
        if clean == label.lower():
            return label
    named = {label for label in labels if re.search(rf"\b{re.escape(label.lower())}\b", text.lower())}
    return named.pop() if len(named) == 1 else None


def label_accuracy(row, pred, ctx) -> float | None:
    if row.labels is None:
        return None
    return float(predicted_label(pred.text, row.labels) == row.label)


def label_pair(row, pred, ctx) -> tuple | None:
    """(gold, predicted) for macro-F1; an unparseable reply counts as a wrong label."""
    if row.labels is None:
        return None
    return (row.label, predicted_label(pred.text, row.labels) or "<none>")


def macro_f1(pairs) -> float:
    """Macro-averaged F1 over the gold labels seen (scikit-learn's definition, labels=gold set)."""
    pairs = list(pairs)
    labels = sorted({gold for gold, _ in pairs})
    scores = []
    for label in labels:
        tp = sum(g == label and p == label for g, p in pairs)
        fp = sum(g != label and p == label for g, p in pairs)
        fn = sum(g == label and p != label for g, p in pairs)
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(scores) / len(scores) if scores else 0.0


def _first_word(text: str) -> str:
    words = text.split()
    return words[0].strip(",.!?:;\"'*").lower() if words else ""


def style_ok(text: str, style: dict, source_docs: list[str], expected_first_word: str | None = None) -> float:
    """1.0 when every rule holds; `expected_first_word` (the verdict the reference answer starts with) must
    then be the word the reply starts with, not just any allowed word."""
    words = text.split()
    if style.get("max_words") and len(words) > style["max_words"]:
        return 0.0
    if style.get("first_word_in"):
        first = _first_word(text)
        if first not in {w.lower() for w in style["first_word_in"]}:
            return 0.0
        if expected_first_word and first != expected_first_word.lower():
            return 0.0
    if style.get("cite_source"):
        cited = re.findall(r"\[([^\]]+)\]\s*\.?\s*$", text.strip())
        if not cited or (source_docs and cited[0] not in source_docs):
            return 0.0
    return 1.0


def expected_verdict(row) -> str | None:
    """The verdict word the row's reference answer starts with ("No, its warranty lasts 12 months." -> "no"),
    when the row restricts the first word and gives an answer."""
    if row.style is None or not row.style.first_word_in or not row.answers:
        return None
    first = _first_word(row.answers[0])
    return first if first in {w.lower() for w in row.style.first_word_in} else None


def style_compliance(row, pred, ctx) -> float | None:
    if row.style is None:
        return None
    return style_ok(pred.text, row.style.model_dump(), list(row.source_docs), expected_verdict(row))


def behaviour_pass(row, pred, ctx) -> float:
    """The row's own requirement: schema + all fields, the right label, or every style rule with the right verdict."""
    checks = [c for fn in (schema_valid, label_accuracy, style_compliance) if (c := fn(row, pred, ctx)) is not None]
    if row.expected is not None:
        checks.append(float(field_accuracy(row, pred, ctx) == 1.0))
    return float(all(c == 1.0 for c in checks)) if checks else 0.0


b = ("behaviour",)
register(Metric("behaviour_pass", "behaviour", b, behaviour_pass, "the row's format requirement is fully met"))
register(Metric("json_valid", "behaviour", b, json_valid, "the reply holds a JSON object"))
register(Metric("schema_valid", "behaviour", b, schema_valid, "that object validates against the row's JSON Schema"))
register(Metric("field_accuracy", "behaviour", b, field_accuracy, "share of expected fields exactly right"))
register(Metric("label_accuracy", "behaviour", b, label_accuracy, "the reply names the expected label, and only it"))
register(Metric("label_macro_f1", "behaviour", b, label_pair, "macro-F1 over the labels the reply names",
                aggregate=macro_f1))  # fmt: skip
register(Metric("style_compliance", "behaviour", b, style_compliance,
                "every house-style rule holds and the verdict word is the right one"))  # fmt: skip
