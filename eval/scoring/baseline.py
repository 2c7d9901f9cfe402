"""The chance baseline: a pseudo-arm that reads nothing, chosen on train rows and scored like any arm.

A score means something only above what a constant guess gets. The guess must be one a system
could make without seeing the test answers, so it is built like an arm and scored like one:

- its answer type comes from the question's wording (`question_type`: "how much" asks for money,
  "when" for a date, "how many" for a number, ...), never from the gold answer;
- per type it always gives the same reply: the most common answer among the family's TRAIN rows of
  that type (types with fewer than `MIN_TRAIN_ROWS` train rows fall back to the family's most common
  train answer); behaviour replies with the most common train label, whole JSON object or style reply
  of the row's format; abstention takes the better on train of two constant policies, always abstain
  or never abstain and guess. Under the three-way headline (`ragft.eval.scoring.metrics.abstention`: right +1,
  declining 0, wrong -1, halves weighing the same) always abstaining scores 0, what saying nothing is
  worth, and never abstaining at most 0 (every answerable row right, -1 on every unanswerable one):
  the baseline is 0, and an arm beats it only by giving more right answers than wrong ones (the
  choice on train still matters if `WRONG_ANSWER_COST` drops below 1);
- the reply is scored on the TEST rows the arms answered, through the family's headline metric, so
  `results.py` gives it an interval and tests every arm against it, paired row by row.

A family with too few train rows to choose a guess gets no number, only the reason.

Example:
    >>> question_type("How much does the Kestrel K2 cost?"), question_type("When was the Wren W19 released?")
    ('money', 'date')
    >>> question_type("What is the capital of France?")
    'other'
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from ragft.eval.families import FAMILIES
from ragft.eval.scoring.metrics import ScoringContext, balanced, headline
from ragft.eval.store import Prediction
from ragft.eval.tasks import TaskRow

ARM = "chance"  # the pseudo-arm's name in comparisons
MIN_TRAIN_ROWS = 5  # train rows an answer type (or a behaviour format) needs before its commonest answer is a guess

QUESTION_TYPES = (  # (type, pattern on the lower-cased question); the first match wins
    ("yes_no", r"^(?:is|are|does|do|can|could|will|was|were|has|have|should)\b"),
    ("version", r"\bversion\b|\bfirmware\b"),
    ("money", r"\bhow much\b|\bcosts?\b|\bprice\b|\bfees?\b|\bpay\b|\bcharged?\b|\bpenalty\b|\bfines?\b"),
    ("time", r"\bwhat time\b|\b(?:until|from|by|at) (?:what|which) (?:time|hour)\b|\bopens?\b|\bclos(?:e|es|ing)\b"),
    ("date", r"\bwhen\b|\bwhat year\b|\bwhich year\b|\bdate\b|\breleased?\b"),
    ("duration", r"\bhow long\b|\bwarranty\b|\bvalid(?:ity)?\b|\bperiod\b|\bbattery life\b|\blasts?\b"),
    ("measure", r"\bweigh|\bheavy\b|\bhow (?:tall|high|far|big|wide|fast)\b|\bpower\b|\boutput\b"),
    ("number", r"\bhow many\b|\blimit\b|\bnumber of\b|\bhow old\b"),
    ("person", r"\bwho\b|\bwhom\b|\bwhose\b"),
    ("place", r"\bwhere\b|\bwhich (?:office|department|city|country|town|place)\b"),
)


def question_type(question: str) -> str:
    """The answer type a question asks for, read from its wording alone; 'other' when no pattern matches."""
    text = question.lower()
    return next((name for name, pattern in QUESTION_TYPES if re.search(pattern, text)), "other")


@dataclass(frozen=True)
class Baseline:
    """The constant guess of one family: its per-row headline values on the test rows (empty, with a reason,
    when there is no baseline) and what it says."""

    family: str
    values: dict[str, float] = field(default_factory=dict)  # test row id -> headline value
    guess: str = ""  # the replies, for the report: "money: '$249'; date: 'July 2020'; other: 'Licensing'"
    reason: str | None = None  # why there is no number
    raw: dict[str, float] = field(default_factory=dict)  # the same values before `balanced` (strata re-balance them)

    @property
    def value(self) -> float | None:
        return sum(self.values.values()) / len(self.values) if self.values else None


def _commonest(answers: list[str]) -> str:
    """The most common answer (compared lower-cased), as first written; ties go to the first seen."""
    counts = Counter(a.lower() for a in answers)
    top = max(counts, key=lambda a: (counts[a], -[x.lower() for x in answers].index(a)))
    return next(a for a in answers if a.lower() == top)


def answer_guesser(train: list[TaskRow], families: tuple[str, ...]) -> tuple[Callable[[TaskRow], str], str] | str:
    """Per question type, the commonest train answer of `families`: (row -> reply, description), or the reason
    there is none."""
    pool = [r for r in train if r.family in families and r.answers]
    if len(pool) < MIN_TRAIN_ROWS:
        return (f"{len(pool)} train rows with answers in {'/'.join(families)} (a guess needs at least "
                f"{MIN_TRAIN_ROWS})")  # fmt: skip
    by_type: dict[str, list[str]] = defaultdict(list)
    for r in pool:
        by_type[question_type(r.text)].append(r.answers[0])
    fallback = _commonest([r.answers[0] for r in pool])
    guesses = {t: _commonest(a) for t, a in by_type.items() if len(a) >= MIN_TRAIN_ROWS}
    shown = "; ".join(f"{t}: {g!r}" for t, g in sorted(guesses.items()))
    description = f"commonest train answer per question type ({shown}; any other type: {fallback!r})"
    return (lambda row: guesses.get(question_type(row.text), fallback)), description


def _format(row: TaskRow) -> str:
    kind = row.kind or "(no kind)"
    if row.labels is not None:
        return f"{kind} label"
    if row.json_schema is not None:
        return f"{kind} json"
    return f"{kind} style"


def _format_reply(row: TaskRow) -> str | None:
    if row.labels is not None:
        return row.label
    if row.expected is not None:
        return json.dumps(row.expected, sort_keys=True)
    return row.answers[0] if row.answers else None


def format_guesser(
    train: list[TaskRow], test: list[TaskRow], families: tuple[str, ...]
) -> tuple[Callable[[TaskRow], str], str] | str:
    """Per format of `families` (families whose rows come in formats, as behaviour's), the commonest train reply:
    label, whole JSON object or style reply."""
    replies: dict[str, list[str]] = defaultdict(list)
    for r in train:
        if r.family in families and (reply := _format_reply(r)) is not None:
            replies[_format(r)].append(reply)
    needed = sorted({_format(r) for r in test if r.family in families})
    short = [f"{f} ({len(replies[f])})" for f in needed if len(replies[f]) < MIN_TRAIN_ROWS]
    if short:
        return f"too few train rows for {', '.join(short)} (a guess needs at least {MIN_TRAIN_ROWS} per format)"
    guesses = {f: _commonest(replies[f]) for f in needed}
    shown = "; ".join(f"{f}: {g[:60]!r}" for f, g in guesses.items())
    return (lambda row: guesses[_format(row)]), f"commonest train reply per format ({shown})"


def _score(family: str, rows: list[TaskRow], reply: Callable[[TaskRow], str], ctx: ScoringContext) -> dict:
    """The headline value of `reply` on every row the family's headline reads (before balancing)."""
    metric = headline(family)
    values = {}
    for row in rows:
        if row.family not in metric.reads:
            continue
        pred = Prediction(ARM, row.id, metric.phase, reply(row), (), 0, 0, 0.0, 0.0, 1)
        value = metric.score(row, pred, ctx)
        if value is not None:
            values[row.id] = float(value)
    return values


def _made(family: str, test: list[TaskRow], reply: Callable[[TaskRow], str], description: str, ctx) -> Baseline:
    """The baseline of `reply` on the test rows, balanced as the arms' values are."""
    raw = _score(family, test, reply, ctx)
    if not raw:
        return Baseline(family, reason="no test rows the headline scores")
    return Baseline(family, balanced(headline(family), raw, {r.id: r for r in test}), description, raw=raw)


def chance_baseline(family: str, test: list[TaskRow], train: list[TaskRow], ctx: ScoringContext) -> Baseline:
    """The family's constant guess, chosen on `train` rows and scored on `test` rows."""
    reads = headline(family).reads
    if FAMILIES[family].abstains or any(FAMILIES[r].abstains for r in reads):
        return _abstention_baseline(family, reads, test, train, ctx)
    if all(FAMILIES[r].formats for r in reads):
        made = format_guesser(train, test, reads)
    else:
        made = answer_guesser(train, _guess_families(reads))
    if isinstance(made, str):
        return Baseline(family, reason=made)
    reply, description = made
    return _made(family, test, reply, description, ctx)


def _guess_families(reads) -> tuple[str, ...]:
    """The row families whose train answers a guess for rows of `reads` is drawn from (`Family.guesses_from`)."""
    return tuple(dict.fromkeys(f for r in reads for f in FAMILIES[r].guess_families))


def _abstention_baseline(
    family: str, reads: tuple[str, ...], test: list[TaskRow], train: list[TaskRow], ctx: ScoringContext
) -> Baseline:
    """Always abstain, or never abstain and guess each answerable row's type: whichever scores higher on the
    train rows (always abstaining when there is no guess to make, and on a tie: a constant that says nothing is
    the cheaper claim). With the three-way headline always abstaining scores exactly 0 on any rows."""
    always = (lambda row: ctx.abstention_phrase), "always abstain (the abstention phrase for every row)"
    policies = [always]
    made = answer_guesser(train, _guess_families([r for r in reads if not FAMILIES[r].abstains]))
    if not isinstance(made, str):
        policies.append((made[0], f"never abstain: {made[1]}"))

    def on_train(policy) -> float:
        values = balanced(headline(family), _score(family, train, policy[0], ctx), {r.id: r for r in train})
        return sum(values.values()) / len(values) if values else 0.0

    both = set(reads) <= {r.family for r in train}  # a one-sided train set (no answerable rows) cannot choose
    # the first (always) on a tie, to float precision: a balanced 0.5 - 0.5 may sum to 1e-16
    reply, description = max(policies, key=lambda p: round(on_train(p), 9)) if both else always
    return _made(family, test, reply, description, ctx)
