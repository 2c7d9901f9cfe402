"""The one answer normaliser: typed values in a reply become canonical tokens.

Replies write one value many ways ("$463", "463 dollars", "USD 463.00"; "2 years", "24 months";
"8:30", "08:30"; "15 percent", "15%"; "1,234 g", "1234g"). `canonical(text)` lower-cases,
drops articles and punctuation (SQuAD-style) and replaces each value it recognises with a
single token naming its type and canonical value, so every string metric compares values,
not spellings. `values(text)` lists those values, so a reply that names several candidates of
the answer's type can be told from one that names the answer.

Example:
    >>> canonical("It costs USD 463.00.") == canonical("it costs $463")
    True
    >>> [v.kind for v in values("2 years, or 24 months")]
    ['qty:calendar', 'qty:calendar']
    >>> short_answer("The K2 costs $249. It ships in May.")
    'The K2 costs $249.'
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

_NUM = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
_UNITS_WORDS = ["zero", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]  # fmt: skip
_TENS = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SMALL = {w: i for i, w in enumerate(["zero", "one", *_UNITS_WORDS[1:]])}
_WORD = rf"(?:(?:{'|'.join(_TENS)})(?:[- ](?:one|{'|'.join(_UNITS_WORDS[1:9])}))?|{'|'.join(_UNITS_WORDS)})"
_WORD_OR_ONE = rf"(?:{_WORD}|one)"  # "one" counts only before a unit: alone it is usually a pronoun

# unit -> (dimension, factor to the dimension's base unit). A closed table, not a units library: in prose
# "a", "in", "s" and "m" after a number are rarely units, and a library would read them as such.
_UNIT_TABLE: dict[str, tuple[str, Fraction]] = {}
for _names, _dim, _factor in [
    ("mg milligram milligrams", "mass", Fraction(1, 1000)),
    ("g gram grams gramme grammes", "mass", Fraction(1)),
    ("kg kilogram kilograms kilo kilos", "mass", Fraction(1000)),
    ("sec secs second seconds", "time", Fraction(1)),
    ("min mins minute minutes", "time", Fraction(60)),
    ("h hr hrs hour hours", "time", Fraction(3600)),
    ("day days", "time", Fraction(86400)),
    ("week weeks wk wks", "time", Fraction(7 * 86400)),
    ("month months", "calendar", Fraction(1)),  # months and years do not convert to days exactly
    ("year years yr yrs", "calendar", Fraction(12)),
    ("business_day business_days working_day working_days", "business_days", Fraction(1)),
    ("mm millimetre millimetres millimeter millimeters", "length", Fraction(1, 1000)),
    ("cm centimetre centimetres centimeter centimeters", "length", Fraction(1, 100)),
    ("m metre metres meter meters", "length", Fraction(1)),
    ("km kilometre kilometres kilometer kilometers", "length", Fraction(1000)),
    ("°c celsius", "temperature", Fraction(1)),  # "deg C", "degrees Celsius" are rewritten to °c first
    ("kb", "data", Fraction(1000)),
    ("mb", "data", Fraction(10**6)),
    ("gb", "data", Fraction(10**9)),
    ("tb", "data", Fraction(10**12)),
    ("mah", "charge", Fraction(1)),
    ("v volt volts", "voltage", Fraction(1)),
    ("w watt watts", "power", Fraction(1)),
    ("amp amps ampere amperes", "current", Fraction(1)),
    ("km/h kph", "speed", Fraction(1)),
    ("mph", "speed", Fraction(1609344, 1000000)),
]:
    for _name in _names.split():
        _UNIT_TABLE[_name.replace("_", " ")] = (_dim, _factor)
_UNIT = "|".join(re.escape(u).replace(r"\ ", r"\s+") for u in sorted(_UNIT_TABLE, key=len, reverse=True))

_CURRENCY = {"$": "usd", "us$": "usd", "usd": "usd", "dollar": "usd", "dollars": "usd", "bucks": "usd",
             "£": "gbp", "gbp": "gbp", "pound": "gbp", "pounds": "gbp", "€": "eur", "eur": "eur", "euro": "eur",
             "euros": "eur"}  # fmt: skip
_MONTHS = {
    m: i
    for i, m in enumerate(["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], start=1)
}
_MONTH = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sept?|oct|nov|dec)[a-z]*\.?"
_WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


@dataclass(frozen=True)
class Value:
    """A value a text names: `kind` ('money:usd', 'qty:mass', 'pct', 'time', 'version', 'date', 'weekday',
    'phone', 'num'), its canonical form, and the number as written (None for non-numbers and ranges)."""

    kind: str
    canon: str
    magnitude: Fraction | None = None

    @property
    def token(self) -> str:
        return f"<{self.kind}={self.canon}>"

    def same(self, other: Value) -> bool:
        """The same value, allowing a bare number for a number with a unit, and a day within a named month."""
        if self.kind == other.kind:
            return self.canon == other.canon or (self.kind == "date" and self.canon.startswith(other.canon + "-"))
        if "num" in (self.kind, other.kind) and self.magnitude is not None:
            return self.magnitude == other.magnitude
        return False

    def competes(self, other: Value) -> bool:
        """Could this value be a rival answer to a question whose answer is `other`?"""
        if self.kind == other.kind:
            return True
        numeric = ("num", "money", "pct", "qty")
        return (self.kind == "num" and other.kind.split(":")[0] in numeric) or (
            other.kind == "num" and self.kind.split(":")[0] in numeric
        )


def _number(text: str) -> Fraction:
    text = text.strip().replace(",", "")
    if re.fullmatch(r"[\d.]+", text):
        return Fraction(text)
    words = re.split(r"[- ]", text)
    total = _TENS.index(words[0]) * 10 + 20 if words[0] in _TENS else _SMALL[words[0]]
    return total + (_SMALL[words[1]] if len(words) > 1 else 0)


def _fmt(x: Fraction) -> str:
    if x.denominator == 1:
        return str(x.numerator)
    return f"{float(x):.6g}"


def _money(m: re.Match) -> Value:
    symbol = (m.group("pre") or m.group("post")).replace(" ", "")
    amount = _number(m.group("n1") or m.group("n2"))
    return Value(f"money:{_CURRENCY[symbol]}", _fmt(amount), amount)


def _quantity(m: re.Match) -> Value:
    dim, factor = _UNIT_TABLE[re.sub(r"\s+", " ", m.group("unit"))]
    low = _number(m.group("a"))
    if m.group("b"):
        return Value(f"qty:{dim}", f"{_fmt(low * factor)}-{_fmt(_number(m.group('b')) * factor)}")
    return Value(f"qty:{dim}", _fmt(low * factor), low)


def _clock(m: re.Match) -> Value:
    hour, minute = int(m.group("h")), int(m.group("mi") or m.group("mi2") or 0)
    half = m.group("ap") or m.group("ap2")
    if half:
        hour = hour % 12 + (12 if half.startswith("p") else 0)
    return Value("time", f"{hour:02d}:{minute:02d}")


def _date(m: re.Match) -> Value:
    month = _MONTHS[m.group("mon")[:3]]
    day = m.group("d")
    return Value("date", f"{m.group('y')}-{month:02d}" + (f"-{int(day):02d}" if day else ""))


def _iso_date(m: re.Match) -> Value:
    return Value("date", m.group(0))


def _version(m: re.Match) -> Value:
    return Value("version", ".".join(str(int(p)) for p in m.group("v").split(".")))


def _phone(m: re.Match) -> Value:
    return Value("phone", re.sub(r"\D", "", m.group(0))[-7:])  # country and area codes are often left out


def _plain(kind: str):
    return lambda m: Value(kind, _fmt(_number(m.group("n"))), _number(m.group("n")))


# In priority order: a span taken by one pattern is not seen by the later ones.
_PATTERNS: list[tuple[re.Pattern, object]] = [
    (re.compile(r"(?<![\w.])v?(?P<v>\d+(?:\.\d+){2,})(?![\w.]*\d)|\b(?:version|firmware|v)\s?(?P<v2>\d+(?:\.\d+)+)(?!\.?\d)"),
     lambda m: _version(m) if m.group("v") else Value("version", ".".join(str(int(p)) for p in m.group("v2").split(".")))),
    (re.compile(r"\+?\b\d{1,3}[\s.-]\d{3}[\s.-]\d{4}\b|\(\d{3}\)\s?\d{3}[\s.-]\d{4}\b|\b\d{3}-\d{4}\b"), _phone),
    (re.compile(rf"\b(?P<d>\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?(?P<mon>{_MONTH}),?\s+(?P<y>\d{{4}})\b"), _date),
    (re.compile(rf"\b(?P<mon>{_MONTH})\s+(?:(?P<d>\d{{1,2}})(?:st|nd|rd|th)?,?\s+)?(?:of\s+)?(?P<y>\d{{4}})\b"), _date),
    (re.compile(r"\b\d{4}-[01]\d(?:-[0-3]\d)?\b"), _iso_date),
    (re.compile(r"\b(?P<h>[01]?\d|2[0-3])(?::(?P<mi>[0-5]\d)\s?(?P<ap>am|pm)?|(?:\.(?P<mi2>[0-5]\d))?\s?(?P<ap2>am|pm))\b"),
     _clock),
    (re.compile(r"\b(?:noon|midday)\b"), lambda m: Value("time", "12:00")),
    (re.compile(r"\bmidnight\b"), lambda m: Value("time", "00:00")),
    (re.compile(rf"(?P<pre>us\s?\$|\$|£|€|\busd|\bgbp|\beur)\s?(?P<n1>{_NUM})\b"
                rf"|(?<![\w.])(?P<n2>{_NUM})\s?(?P<post>usd|gbp|eur|dollars?|pounds?|euros?|bucks)\b"), _money),
    (re.compile(rf"(?<![\w.])(?P<n>{_NUM}|{_WORD})\s?(?:%|percent\b|per\s?cent\b|pct\b)"), _plain("pct")),
    (re.compile(rf"(?<![\w.])(?P<a>{_NUM}|{_WORD_OR_ONE})(?:\s?(?:-|to)\s?(?P<b>{_NUM}|{_WORD}))?\s?-?(?P<unit>{_UNIT})(?![\w/])"),
     _quantity),
    (re.compile(rf"(?<![\w.])(?P<n>{_NUM}|{_WORD})(?![\w.]*\d)(?!\w)"), _plain("num")),
    (re.compile(rf"\b(?P<w>{'|'.join(_WEEKDAYS)})s?\b"), lambda m: Value("weekday", m.group("w"))),
]  # fmt: skip

_ARTICLES = {"a", "an", "the"}
_PUNCT = str.maketrans({c: " " for c in string.punctuation})
_PLACEHOLDER = 0xE000  # private-use code points: neither \w nor \d, so later patterns pass over them


def _prepare(text: str) -> str:
    text = text.lower().replace("\u2019", "'").replace("\u2013", "-").replace("\u2014", " - ").replace("\xa0", " ")
    text = re.sub(r"\b([ap])\.m\.", r"\1m", text)
    return re.sub(r"°\s?c\b|\bdeg(?:rees?)?\s+c(?:elsius)?\b", "°c", text)


@lru_cache(maxsize=65536)  # the same answers and replies are read by many metrics
def _extract(text: str) -> tuple[str, tuple[Value, ...]]:
    found: list[Value] = []

    def keep(make):
        def sub(m: re.Match) -> str:
            found.append(make(m))
            return f" {chr(_PLACEHOLDER + len(found) - 1)} "

        return sub

    text = _prepare(text)
    for pattern, make in _PATTERNS:
        text = pattern.sub(keep(make), text)
    return text, tuple(found)


def values(text: str) -> list[Value]:
    """Every value the text names, in the order the patterns found them."""
    return list(_extract(text)[1])


@lru_cache(maxsize=65536)
def canonical(text: str) -> str:
    """Lower-case words without articles (unless that leaves nothing) or punctuation, each value as one token."""
    text, found = _extract(text)
    tokens = []
    for word in text.translate(_PUNCT).split():
        code = ord(word[0]) - _PLACEHOLDER
        tokens.append(found[code].token if len(word) == 1 and 0 <= code < len(found) else word)
    kept = [t for t in tokens if t not in _ARTICLES]
    return " ".join(kept or tokens)  # "A" (the letter) is an answer, not an article


def single_value(answer: str) -> Value | None:
    """The answer's value when the answer is nothing but one value ("$463", "24 months"), else None."""
    found = values(answer)
    return found[0] if len(found) == 1 and canonical(answer) == found[0].token else None


def short_answer(text: str) -> str:
    """The reply's first sentence (a lead-in ending in ':' takes the next one too): what a metric scores."""
    text = re.sub(r"\b([ap])\.m\.", r"\1m", text.strip())
    text = re.sub(r"\b(jan|feb|mar|apr|jun|jul|aug|sept?|oct|nov|dec|approx|e\.g|i\.e|vs|mr|mrs|ms|dr|st)\.", r"\1", text, flags=re.I)  # fmt: skip
    # an initial ("P. D. Ouspensky") ends no sentence
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])(?<!\b[A-Z]\.)\s+|\n+", text) if s.strip(" *#-")]
    if not sentences:
        return ""
    first = sentences[0]
    if first.endswith(":") and len(sentences) > 1:
        first = f"{first} {sentences[1]}"
    return first


def answer_shape(answer: str) -> str:
    """The answer's type as a guesser sees it: digits -> '#', names -> 'Name', and plain text -> 'text'."""
    shape = re.sub(r"\d+", "#", answer)
    shape = re.sub(r"\b[A-Z][\w'’-]*", "Name", shape)
    return shape if "#" in shape or "Name" in shape else "text"
