"""Behaviour and format: JSON that parses and obeys its schema, closed label sets, house style.

`behaviour_pass` is the family headline: a row passes when its own requirement is met
(schema valid with every expected field right, the right label, or every style rule with
the right verdict word). The rules are strict, as a program reading the reply would be:

- JSON: the reply *is* the object. After trimming whitespace and one code fence around the whole
  reply (```json ... ```), what is left must parse as one JSON object; prose before or after it,
  two objects or an array fail (`parse_json`). A consumer that calls `json.loads` on the reply
  gets exactly what was scored.
- Labels: the reply's first line, after an optional lead-in ("Label:", "The category is") and
  without quotes, markdown or end punctuation, must be one label; the rest of the reply may
  explain but may not name another label, and a reply that repeats six or more consecutive
  words of the input is an echo, not a choice (`predicted_label`). Label accuracy and macro-F1
  read the label through the same parser.
- Style: every rule the row sets must hold; a style with no rule at all is refused when the task
  file is validated (`eval.families`) and never passes here.

Rows written from one template are not independent: `template_cluster` gives the key
(kind + masked input) the statistics cluster them by.

Example:
    >>> parse_json(' {"a": 1} '), parse_json('Here: {"a": 1}')
    ({'a': 1}, None)
    >>> predicted_label("Label: billing.", ["billing", "shipping"]), predicted_label("I think billing", ["billing", "shipping"])
    ('billing', None)
    >>> style_ok("Yes, it ships in May [doc-1]", {"max_words": 8, "first_word_in": ["Yes", "No"], "cite_source": True}, ["doc-1"])
    1.0
    >>> style_ok("Yes, it ships in May [doc-1]", {"first_word_in": ["Yes", "No"]}, ["doc-1"], expected_first_word="No")
    0.0
    >>> template_cluster("ticket_json", "Take your time. My Heron H4 smells of burning plastic.")
    'ticket_json: my <> smells of burning plastic.'
"""

from __future__ import annotations

import json
import re

import jsonschema
from ragft.eval.scoring.metrics.registry import Metric, register

_FENCE = re.compile(r"```[\w+-]*[ \t]*\n?(?P<body>.*?)\n?[ \t]*```", re.DOTALL)


def parse_json(text: str) -> dict | None:
    """The reply as one JSON object: the whole reply, less whitespace and one code fence around it, else None."""
    body = text.strip()
    if fenced := _FENCE.fullmatch(body):
        body = fenced.group("body").strip()
    try:
        value = json.loads(body)
    except ValueError:  # json.JSONDecodeError, and the RecursionError-free ValueErrors of odd numbers
        return None
    return value if isinstance(value, dict) else None


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


_LEAD_IN = re.compile(
    r"^(?:the\s+)?(?:label|category|classification|class|intent|answer|department|routed to|route to|routing|route)\b"
    r"(?:\s+is)?\s*[:=-]?\s*",
    re.IGNORECASE,
)
_HEAD_END = re.compile(r"[.,;:!?()]|\s[-\u2013\u2014]\s")
_HEAD_NOUN = re.compile(
    r"\s+(?:department|dept|team|category|label|intent|class)$", re.IGNORECASE
)  # "Planning department"
ECHO_WORDS = 6  # a run this long of the input's words in the reply is a copy, not a label (5 is a short phrase)


def _label_key(text: str) -> str:
    return re.sub(r"[\s_-]+", "_", text.strip().lower())


def _echoes(text: str, source: str) -> bool:
    """The reply repeats ECHO_WORDS consecutive words of the input (or all of a shorter input)."""
    said = re.findall(r"\w+", text.lower())
    heard = re.findall(r"\w+", source.lower())
    n = min(ECHO_WORDS, len(heard))
    if n == 0 or len(said) < n:
        return False
    runs = {tuple(heard[i : i + n]) for i in range(len(heard) - n + 1)}
    return any(tuple(said[i : i + n]) in runs for i in range(len(said) - n + 1))


def predicted_label(text: str, labels: list[str], source: str = "") -> str | None:
    """The label the reply gives: its first line (lead-in, quotes, markdown and end punctuation stripped) when that
    is one label, no other label is named anywhere in the reply, and the reply does not echo `source` (the input)."""
    lines = [line.strip(" \t*_`\"'#>-") for line in text.strip().splitlines()]
    first = next((line for line in lines if line), "")
    head = _HEAD_NOUN.sub("", _HEAD_END.split(_LEAD_IN.sub("", first), maxsplit=1)[0].strip(" *_`\"'"))
    chosen = next((label for label in labels if _label_key(label) == _label_key(head)), None)
    if chosen is None or (source and _echoes(text, source)):
        return None
    spoken = re.sub(r"[\s_-]+", " ", text.lower())
    others = [
        label
        for label in labels
        if label != chosen and re.search(rf"\b{re.escape(_label_key(label).replace('_', ' '))}\b", spoken)
    ]
    return None if others else chosen


def label_accuracy(row, pred, ctx) -> float | None:
    if row.labels is None:
        return None
    return float(predicted_label(pred.text, row.labels, row.input or "") == row.label)


def label_pair(row, pred, ctx) -> tuple | None:
    """(gold, predicted) for macro-F1; an unparseable reply counts as a wrong label."""
    if row.labels is None:
        return None
    return (row.label, predicted_label(pred.text, row.labels, row.input or "") or "<none>")


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
    then be the word the reply starts with, not just any allowed word. A style with no rule is no requirement,
    so it never passes (task validation refuses such rows)."""
    if not (style.get("max_words") or style.get("first_word_in") or style.get("cite_source")):
        return 0.0
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


_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")
_SLOT = "<>"


def _masked(sentence: str) -> tuple[str, bool]:
    """The sentence lower-cased with each run of names (capitalised words after the first), codes and numbers as
    one slot, and whether it has a slot."""
    out: list[str] = []
    for i, word in enumerate(sentence.split()):
        core = word.strip(".,;:!?\"'()[]")
        slot = any(c.isdigit() for c in core) or (i > 0 and core[:1].isupper())
        if slot:
            if not out or out[-1] != _SLOT:
                out.append(_SLOT)
        else:
            out.append(word.lower())
    return " ".join(out), _SLOT in out


def template_cluster(kind: str | None, text: str) -> str:
    """The template a behaviour row was written from, as a cluster key: the row's kind and the masked shape of its
    input's sentences that carry a slot (a name, a code or a number), or of every sentence when none does.

    Generated rows fill one template with other products, streets or times ("My {p} smells of burning plastic."),
    and a sentence without a slot beside it (a priority cue: "Take your time.") varies independently of the
    template, so it is left out. Rows with one key are one cluster for the paired tests: the ~10 quillmark ticket
    templates are 10 clusters, not 40 independent rows. Hand-written rows, whose inputs share no shape, stay
    singletons. Call it as `template_cluster(row.kind, row.text)`."""
    masked = [_masked(s) for s in _SENTENCE_END.split(text.strip()) if s]
    kept = [m for m, slotted in masked if slotted] or [m for m, _ in masked]
    return f"{kind or '(no kind)'}: {' '.join(kept)}"


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
