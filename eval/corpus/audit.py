"""What a reviewer checks in a task suite before trusting a verdict: `ragft corpus audit PATH`.

`validate` says whether rows are well formed; the audit says whether a test split can be passed
by shortcuts learned from the train split: test inputs that are train inputs with another name
in them, invented abstention entities seen in training, abstention questions a surface rule
separates from answerable ones, answers a constant guess gets right, lopsided labels, and
reference answers the documents do not hold. Each check carries its threshold (issue 14's
"Done when", or the one stated beside it) and, when it fails, what to change.

Example:
    >>> from ragft.eval.corpus.audit import audit_corpus, render
    >>> report = audit_corpus(Path("corpora/ostwick"))
    >>> report.passed, render(report).splitlines()[0]  # doctest: +SKIP
    (True, 'audit of corpora/ostwick: 324 task rows, 7 checks, all passed')
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ragft.eval.families import FAMILIES, QUESTIONS, factual_families, pool_key
from ragft.eval.scoring.baseline import chance_baseline
from ragft.eval.scoring.metrics import ScoringContext, report_families
from ragft.eval.scoring.metrics.knowledge import corpus_answers, stated_in
from ragft.eval.scoring.metrics.values import answer_shape, canonical
from ragft.eval.tasks import TaskRow
from ragft.service.settings import GenerationSettings

NEAR_DUPLICATE_SIMILARITY = 0.9  # masked token-bigram Jaccard at which two inputs count as one template
MAX_BEHAVIOUR_NEAR_DUPLICATES = 0.10  # share of a behaviour format's test inputs (issue 14)
MIN_REAL_ENTITY_SHARE = 0.5  # abstention test rows about an entity the documents hold (issue 14)
MAX_PROBE_GAIN = 0.10  # surface probe accuracy above the majority-class rate (issue 14)
MAX_ANSWER_CHANCE = 0.25  # a constant guess per answer type, for families scored on answers

_TOKEN = re.compile(r"[A-Za-z0-9]+(?:['’.-][A-Za-z0-9]+)*")
_STOPWORDS = frozenset(  # question wording, never part of an entity's name
    re.findall(
        r"\w+",
        """a an the of for to in on at by with from and or is are was were be been do does did can could should would
    will may might must shall i my me we our you your it its this that these those there what which who whom whose
    when where why how much many long often time times does any some not no yes if than then so as per after before
    cost costs price valid last lasts allowed apply applies need needs get got have has had new mean means""",
    )
)


@dataclass(frozen=True)
class Check:
    """One audit finding: what was measured, against which threshold, and what to do when it fails."""

    name: str
    passed: bool
    summary: str  # the figure and the threshold, one line
    fix: str  # what to change in the corpus when the check fails
    details: tuple[str, ...] = ()


@dataclass(frozen=True)
class AuditReport:
    corpus: str
    rows: int
    chance: dict[
        str, float | str
    ]  # family -> the honest chance baseline (`ragft.eval.scoring.baseline`), or why there is none
    checks: tuple[Check, ...]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]


# ---------------------------------------------------------------------------------------------- masking


def _tokens(text: str) -> list[tuple[str, bool]]:
    """Tokens of `text` with a flag for 'starts a sentence' (a capital there is not a name)."""
    out, last = [], 0
    for m in _TOKEN.finditer(text):
        initial = not out or bool(re.search(r"[.!?:]", text[last : m.start()]))
        word = re.sub(r"['’]s$", "", m.group())
        out.append((word, initial))
        last = m.end()
    return out


def _name_like(word: str, initial: bool) -> bool:
    return any(ch.isdigit() for ch in word) or (word[0].isupper() and not initial and word != "I")


def mask_entities(text: str) -> list[str]:
    """Lower-cased tokens with names and numbers replaced by one '<e>' per run: what a template looks like."""
    out: list[str] = []
    for word, initial in _tokens(text):
        if _name_like(word, initial):
            if not out or out[-1] != "<e>":
                out.append("<e>")
        else:
            out.append(word.lower())
    return out


def _bigrams(tokens: list[str]) -> frozenset[tuple[str, str]]:
    padded = ["<s>", *tokens, "</s>"]
    return frozenset(zip(padded, padded[1:], strict=False))


def similarity(a: str, b: str, mask: bool = True) -> float:
    """Jaccard similarity of the token bigrams of two texts after masking names and numbers (`mask`: a template
    with other names is the same input), or of their lower-cased tokens (the same question)."""
    words = mask_entities if mask else (lambda t: [w.lower() for w, _ in _tokens(t)])
    x, y = _bigrams(words(a)), _bigrams(words(b))
    return len(x & y) / len(x | y) if x | y else 1.0


def name_spans(text: str) -> list[str]:
    """Runs of name-like tokens (capitalised mid-sentence, or holding a digit): 'Kestrel K21', 'E-K523'."""
    spans: list[list[str]] = []
    previous_was_name = False
    for word, initial in _tokens(text):
        if _name_like(word, initial):
            if previous_was_name:
                spans[-1].append(word)
            else:
                spans.append([word])
            previous_was_name = True
        else:
            previous_was_name = False
    return [" ".join(s) for s in spans]


# ---------------------------------------------------------------------------------------------- checks


def _group(row: TaskRow) -> str:
    return f"{row.family}:{row.kind}" if FAMILIES[row.family].formats and row.kind else row.family


def _abstains(row: TaskRow) -> bool:
    return FAMILIES[row.family].abstains


def check_near_duplicates(rows: list[TaskRow]) -> Check:
    """Test inputs whose masked text is a near-duplicate (bigram Jaccard >= 0.9) of a train input of their group."""
    train: dict[str, list[frozenset]] = defaultdict(list)
    for r in rows:
        if r.split == "train":
            train[_group(r)].append(_bigrams(mask_entities(r.text)))
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    examples: dict[str, str] = {}
    for r in rows:
        if r.split != "test":
            continue
        grams = _bigrams(mask_entities(r.text))
        dup = any(len(grams & t) / len(grams | t) >= NEAR_DUPLICATE_SIMILARITY for t in train[_group(r)])
        counts[_group(r)][0] += dup
        counts[_group(r)][1] += 1
        if dup:
            examples.setdefault(_group(r), r.id)
    details, bad = [], []
    for group, (dup, n) in sorted(counts.items()):
        share = dup / n
        gated = FAMILIES[group.split(":")[0]].formats
        if gated and share > MAX_BEHAVIOUR_NEAR_DUPLICATES:
            bad.append(group)
        flag = "FAIL" if group in bad else ("ok" if gated else "info")
        example = f" (e.g. {examples[group]})" if group in examples else ""
        details.append(f"{group:26s} {dup:4d}/{n:<4d} {share:6.1%}  {flag}{example}")
    return Check(
        "near_duplicates",
        not bad,
        f"behaviour test inputs with a masked near-duplicate in train (similarity >= {NEAR_DUPLICATE_SIMILARITY}): "
        f"at most {MAX_BEHAVIOUR_NEAR_DUPLICATES:.0%} per format" + (f"; over it: {', '.join(bad)}" if bad else ""),
        "write the test inputs of each behaviour format from templates, wording and sentence structures that no "
        "train row uses (a held-out template set); changing only the names does not make an input new",
        tuple(details),
    )


def _known_text(rows: list[TaskRow], documents: dict[str, str]) -> str:
    """Documents and answerable questions, lower-cased: a phrase found here is not an invented entity (the
    questions add template wording such as 'validity period' that no document spells out)."""
    questions = [r.text for r in rows if FAMILIES[r.family].factual]
    return "\n".join([*documents.values(), *questions]).lower()


def _in_documents(phrase: str, text: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(phrase.lower())}(?![\w-])", text) is not None


def _content_bigrams(text: str) -> list[str]:
    words = [w.lower() for w, _ in _tokens(text)]
    return [f"{a} {b}" for a, b in zip(words, words[1:], strict=False) if a not in _STOPWORDS and b not in _STOPWORDS]


def invented_mentions(row: TaskRow, known_text: str) -> set[str]:
    """Entities the question names that `known_text` lacks (names, else content-word pairs), lower-cased."""
    spans = name_spans(row.text)
    candidates = spans if spans else _content_bigrams(row.text)
    return {c.lower() for c in candidates if not _in_documents(c, known_text)}


def about_real_entity(row: TaskRow, known_text: str) -> bool:
    """An abstention row asks about a real entity if it cites the entity's document in `source_docs`, or names
    only entities the documents hold."""
    if row.source_docs:
        return True
    spans = name_spans(row.text)
    return bool(spans) and not invented_mentions(row, known_text)


def check_shared_entities(rows: list[TaskRow], documents: dict[str, str]) -> Check:
    """Invented entities of abstention test rows that a train abstention row also names."""
    text = _known_text(rows, documents)
    train = {m for r in rows if _abstains(r) and r.split == "train" for m in invented_mentions(r, text)}
    shared = [
        (r.id, sorted(invented_mentions(r, text) & train))
        for r in rows
        if _abstains(r) and r.split == "test" and invented_mentions(r, text) & train
    ]
    n_test = sum(_abstains(r) and r.split == "test" for r in rows)
    return Check(
        "abstention_shared_entities",
        not shared,
        f"{len(shared)}/{n_test} abstention test rows name an invented entity that a train row also names (must be 0)",
        "ask train and test about different invented entities: a fine-tune that memorised 'X does not exist' "
        "from train passes the test row without abstaining for the right reason",
        tuple(f"{row_id}: {', '.join(m)}" for row_id, m in shared[:15]),
    )


def check_real_entity_share(rows: list[TaskRow], documents: dict[str, str]) -> Check:
    """Share of abstention test rows that ask about a real entity (a detail its documents never give)."""
    text = _known_text(rows, documents)
    test = [r for r in rows if _abstains(r) and r.split == "test"]
    real = [r for r in test if about_real_entity(r, text)]
    share = len(real) / len(test) if test else 0.0
    kinds = Counter(r.kind or "(no kind)" for r in test)
    return Check(
        "abstention_real_entities",
        bool(test) and share >= MIN_REAL_ENTITY_SHARE,
        f"{len(real)}/{len(test)} abstention test rows ({share:.0%}) ask about a real entity "
        f"(at least {MIN_REAL_ENTITY_SHARE:.0%})",
        "add abstention test rows that ask a real entity for a detail the documents never state, and list that "
        "entity's document in source_docs; users meet these far more often than entities that do not exist",
        tuple(f"kind {k}: {n}" for k, n in sorted(kinds.items())),
    )


@dataclass(frozen=True)
class AnswerSpace:
    group: str  # "knowledge $#", "behaviour:intent_label label", ...
    rows: int
    distinct: int
    top_answer: str
    chance: float  # share of the group's rows that the most common answer gets right


def _spaces_by_group(rows: list[TaskRow]) -> tuple[dict[str, list[tuple[str, str]]], dict[str, list[str]]]:
    """Per group, every (split, answer) it holds; per test row id, the groups its chance averages over."""
    values: dict[str, list[tuple[str, str]]] = defaultdict(list)
    row_groups: dict[str, list[str]] = {}
    for r in rows:
        groups: list[tuple[str, str]] = []
        if r.family in factual_families() and r.answers:
            groups.append((f"{r.family} {answer_shape(r.answers[0])}", r.answers[0].lower()))
        elif FAMILIES[r.family].formats and r.label is not None:
            groups.append((f"{_group(r)} label", r.label))
        elif FAMILIES[r.family].formats and r.expected is not None:
            groups += [(f"{_group(r)} {k}", str(v)) for k, v in sorted(r.expected.items()) if isinstance(v, str)]
        elif FAMILIES[r.family].formats and r.answers:
            groups.append((f"{_group(r)} first word", (r.answers[0].split() or [""])[0].strip(",.:;").lower()))
        for group, value in groups:
            values[group].append((r.split, value))
        if r.split == "test":
            row_groups[r.id] = [g for g, _ in groups]
    return values, row_groups


def answer_spaces(rows: list[TaskRow]) -> list[AnswerSpace]:
    """Every answer type's size and constant-guess accuracy, over train and test rows together."""
    values, _ = _spaces_by_group(rows)
    out = []
    for group, pairs in sorted(values.items()):
        counts = Counter(v for _, v in pairs)
        top, n_top = counts.most_common(1)[0]
        out.append(AnswerSpace(group, len(pairs), len(counts), top, n_top / len(pairs)))
    return out


def chance_baselines(rows: list[TaskRow], abstention_phrase: str | None = None) -> dict[str, float | str]:
    """Per report family, the chance baseline a run reports (`ragft.eval.scoring.baseline`): a constant guess chosen on the
    train rows, its answer type read from the question, scored on the test rows by the headline metric; or the
    reason there is none (too few train rows)."""
    phrase = abstention_phrase or GenerationSettings().abstention_phrase
    ctx = ScoringContext(phrase, corpus_answers=corpus_answers(rows))
    test = [r for r in rows if r.split == "test"]
    train = [r for r in rows if r.split == "train"]
    present = {r.family for r in test}
    out: dict[str, float | str] = {}
    for family in report_families():
        if family in present:  # a family the corpus tests (abstention also reads knowledge rows)
            b = chance_baseline(family, test, train, ctx)
            out[family] = b.value if b.value is not None else b.reason
    return out


def answer_space_shares(rows: list[TaskRow]) -> dict[str, float]:
    """Per family, the test share of the commonest answer of each row's answer type over train AND test rows
    together: a property of the data (how concentrated its answers are), an upper bound on what any constant
    guess could score, and not a baseline: it reads the gold answers and the test split. The audit's
    `answer_spaces` check bounds it; `chance_baselines` is what a score must beat.

    Answer families (knowledge, freshness, general): the most common answer of the row's answer type
    (`answer_shape`). Behaviour, as `behaviour_pass` scores: the most common label, the most common whole JSON object
    (a reply passes only if every field is right), or the most common first word of a style answer. Abstention,
    scored as effective reliability (+1 right, 0 declined, -1 wrong, its two halves weighing the same): the best
    constant policy is always abstaining, 0; never abstaining and guessing the commonest answer scores the knowledge
    share minus 1, below 0 (every answer to an unanswerable row is wrong).
    """
    chance_of = {s.group: s.chance for s in answer_spaces(rows)}
    _, row_groups = _spaces_by_group(rows)
    # a JSON reply passes only as a whole object: a constant reply is right as often as the commonest object
    objects = Counter((_group(r), json.dumps(r.expected, sort_keys=True)) for r in rows if r.expected is not None)
    per_group = Counter(_group(r) for r in rows if r.expected is not None)
    per_family: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        if r.split == "test" and FAMILIES[r.family].formats and r.expected is not None:
            top = max(n for (g, _), n in objects.items() if g == _group(r))
            per_family[r.family].append(top / per_group[_group(r)])
        elif r.split == "test" and row_groups.get(r.id):
            per_family[r.family].append(sum(chance_of[g] for g in row_groups[r.id]) / len(row_groups[r.id]))
    out = {f: sum(v) / len(v) for f, v in per_family.items()}
    for family in dict.fromkeys(r.family for r in rows if r.split == "test" and FAMILIES[r.family].abstains):
        # always abstaining scores 0; guessing scores (-1 + (2 * share - 1)) / 2 = share - 1 over the two halves,
        # the share being that of the answerable questions the family reads beside its own rows
        answerable = [f for f in FAMILIES[family].row_families if not FAMILIES[f].abstains]
        share = sum(out.get(f, 0.0) for f in answerable) / len(answerable) if answerable else 0.0
        out[family] = max(0.0, share - 1.0)
    return dict(sorted(out.items()))


def check_answer_spaces(rows: list[TaskRow]) -> Check:
    """Answer families whose commonest answer per answer type (an upper bound on any constant guess) takes more
    than MAX_ANSWER_CHANCE of the test rows."""
    chance = answer_space_shares(rows)
    bad = [f for f in factual_families() if chance.get(f, 0.0) > MAX_ANSWER_CHANCE]
    details = [f"commonest-answer share {f:11s} {c:6.1%}" for f, c in chance.items()]
    details += [
        f"{s.group:36s} {s.rows:4d} rows {s.distinct:4d} distinct  top {s.top_answer!r} {s.chance:.0%}"
        for s in answer_spaces(rows)
        if s.rows >= 5
    ]
    return Check(
        "answer_spaces",
        not bad,
        f"test share of the commonest answer per answer type (train and test together) in knowledge, freshness and "
        f"general: at most {MAX_ANSWER_CHANCE:.0%}"
        + (f"; over it: {', '.join(f'{f} {chance[f]:.0%}' for f in bad)}" if bad else ""),
        "widen the small answer spaces (more distinct values per answer type, none dominant) so a guess of the "
        "common value does not look like knowledge",
        tuple(details),
    )


def check_label_balance(rows: list[TaskRow]) -> Check:
    """Label distribution of every behaviour label and JSON field; fails when a value dominates or a label is unused."""
    values, _ = _spaces_by_group(rows)
    label_sets = {f"{_group(r)} label": r.labels for r in rows if FAMILIES[r.family].formats and r.labels}
    details, bad = [], []
    for group, pairs in sorted(values.items()):
        if not FAMILIES[group.split(":")[0].split(" ")[0]].formats:
            continue
        test = Counter(v for s, v in pairs if s == "test")
        train = Counter(v for s, v in pairs if s == "train")
        universe = sorted(set(label_sets.get(group, [])) | set(test) | set(train))
        n = sum(test.values())
        if not n:
            continue
        top_share = max(test.values()) / n
        unused = [v for v in universe if not test[v]] if group in label_sets else []
        ok = top_share <= 2 / len(universe) and not unused
        if not ok:
            bad.append(group)
        shown = ", ".join(f"{v} {test[v]}/{train[v]}" for v in universe)
        details.append(f"{group:36s} test/train: {shown}" + ("" if ok else "  FAIL"))
    return Check(
        "label_balance",
        not bad,
        "behaviour labels and JSON field values: every label used in test, none above twice its uniform share"
        + (f"; unbalanced: {', '.join(bad)}" if bad else ""),
        "draw test labels (and JSON field values) evenly over the label set, so the majority label is not a strategy",
        tuple(details),
    )


def check_answers_in_sources(
    rows: list[TaskRow], documents: dict[str, str], updates: dict[str, str] | None = None
) -> Check:
    """Rows of grounded families (knowledge, freshness) whose reference answer is in none of their source
    documents."""
    updated = {**documents, **(updates or {})}
    missing, unchecked = [], 0
    for r in rows:
        if not FAMILIES[r.family].grounded:
            continue
        if not r.source_docs:
            unchecked += 1
            continue
        for answers, docs in (
            (r.answers, updated if FAMILIES[r.family].phase == "fresh" else documents),
            (r.old_answers, documents),
        ):
            texts = [docs.get(d, "") for d in r.source_docs]
            if answers and not any(stated_in(t, a) for a in answers for t in texts):
                missing.append(f"{r.id}: {answers[0]!r} not in {', '.join(r.source_docs)}")
    return Check(
        "answers_in_sources",
        not missing,
        f"{len(missing)} knowledge/freshness answers missing from their source documents (must be 0); "
        f"{unchecked} rows without source_docs not checked",
        "correct the answer or the source_docs id: a reference answer the documents do not hold scores the arms "
        "on something no retrieval can find",
        tuple(missing[:15]),
    )


def _facts(row: TaskRow) -> set[tuple[str, str, str]]:
    """What a factual row asks: (document, canonical answer, quoted span or '') for each of its documents."""
    span = row.generated.span.lower() if row.generated and row.generated.span else ""
    return {(doc, canonical(a), span) for doc in row.source_docs for a in row.answers if canonical(a)}


def _same_fact(test: TaskRow, train: TaskRow) -> bool:
    for doc, answer, span in _facts(test):
        for doc2, answer2, span2 in _facts(train):
            if doc == doc2 and answer == answer2 and (not span or not span2 or span == span2):
                return True
    return False


def check_generated_leaks(rows: list[TaskRow]) -> Check:
    """Generated test rows that a train row already asks: the same fact (document and answer, and the quoted span
    when both have one), or the same question (unmasked token-bigram Jaccard >= NEAR_DUPLICATE_SIMILARITY), except
    the train row a paraphrase test row restates, which the paraphrase view intends."""
    train = [r for r in rows if r.split == "train"]
    generated = [r for r in rows if r.split == "test" and r.generated is not None]
    leaks = []
    for r in generated:
        for t in train:
            if t.id == r.paraphrase_of or t.family != r.family:
                continue
            if FAMILIES[r.family].factual and _same_fact(r, t):
                leaks.append(f"{r.id}: asks the fact train row {t.id} teaches ({r.answers[0]!r} in {t.source_docs[0]})")
                break
            if similarity(r.text, t.text, mask=False) >= NEAR_DUPLICATE_SIMILARITY:
                leaks.append(f"{r.id}: repeats train row {t.id} ({t.text!r})")
                break
    return Check(
        "generated_leaks",
        not leaks,
        f"{len(leaks)}/{len(generated)} generated test rows ask what a train row asks, other than the row a "
        "paraphrase restates (must be 0)",
        "reject the leaking test row (ragft corpus review), or its train twin: a fine-tune that learnt the train "
        "row answers the test row from memory, which the unseen view must not measure",
        tuple(leaks[:15]),
    )


# ---------------------------------------------------------------------------------------------- surface probe


def surface_features(text: str) -> list[float]:
    """Features a shortcut could use without reading the documents: numbers, code suffixes, length, wording."""
    numbers = [int(n) for n in re.findall(r"\d+", text)][-1:] or [0]
    last = numbers[-1]
    digits = str(last)
    repeat = len(digits) - len(digits.rstrip(digits[-1])) if digits else 0
    words = text.split()
    first = words[0].lower() if words else ""
    features = [
        math.log1p(len(words)),
        math.log1p(len(text)),
        float(bool(re.search(r"\d", text))),
        math.log1p(last),
        float(len(digits)),
        float(repeat),
        float(bool(re.search(r"\b[A-Za-z]+-?[A-Za-z]*\d+\b", text))),  # a code or model number
        float(len(name_spans(text))),
    ]
    features += [float(last % 10 == d) for d in range(10)]  # the code's last digit
    features += [float(first == w) for w in ("how", "what", "when", "which", "who", "is", "does", "can", "where")]
    return features


def _fit_logistic(x: np.ndarray, y: np.ndarray, steps: int = 2000, lr: float = 0.5, l2: float = 1e-3) -> np.ndarray:
    """Class-balanced logistic regression by full-batch gradient descent; weights with the bias last."""
    x = np.hstack([x, np.ones((len(x), 1))])
    weight = np.where(y == 1, 0.5 / max(y.sum(), 1), 0.5 / max((1 - y).sum(), 1))
    w = np.zeros(x.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-np.clip(x @ w, -30, 30)))
        w -= lr * (x.T @ (weight * (p - y)) + l2 * w)
    return w


def _balanced_accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    return float((pred[y == 1].mean() + (1 - pred[y == 0]).mean()) / 2)


def _best_stump(x: np.ndarray, y: np.ndarray) -> tuple[int, float, bool]:
    """The one-feature threshold rule with the best balanced accuracy on the train rows."""
    best = (0.5, 0, math.inf, True)
    for j in range(x.shape[1]):
        for t in np.unique(x[:, j]):
            for above in (True, False):
                pred = (x[:, j] >= t) if above else (x[:, j] < t)
                acc = _balanced_accuracy(pred.astype(float), y)
                if acc > best[0] + 1e-12:
                    best = (acc, j, float(t), above)
    return best[1], best[2], best[3]


@dataclass(frozen=True)
class ProbeResult:
    train_rows: int
    test_rows: int
    logistic_accuracy: float  # balanced accuracy on test: mean of the per-class hit rates
    stump_accuracy: float
    stump_rule: str
    majority_rate: float  # a balanced accuracy's majority-class rate: 0.5

    @property
    def accuracy(self) -> float:
        return max(self.logistic_accuracy, self.stump_accuracy)


def surface_probe(rows: list[TaskRow]) -> ProbeResult | None:
    """Train a logistic regression and a decision stump on surface features of train questions (abstain or not),
    score them on test questions; None when a split lacks either class."""
    data = {}
    for split in ("train", "test"):
        chosen = [r for r in rows if r.split == split and pool_key(r.family, r.kind) == QUESTIONS
                  and FAMILIES[r.family].trains]  # fmt: skip
        y = np.array([float(_abstains(r)) for r in chosen])
        if not chosen or y.min() == y.max():
            return None
        data[split] = (np.array([surface_features(r.text) for r in chosen]), y)
    (x_train, y_train), (x_test, y_test) = data["train"], data["test"]
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-9
    w = _fit_logistic((x_train - mean) / std, y_train)
    scores = np.hstack([(x_test - mean) / std, np.ones((len(x_test), 1))]) @ w
    logistic = _balanced_accuracy((scores > 0).astype(float), y_test)
    j, t, above = _best_stump(x_train, y_train)
    stump_pred = (x_test[:, j] >= t) if above else (x_test[:, j] < t)
    stump = _balanced_accuracy(stump_pred.astype(float), y_test)
    names = ["log words", "log chars", "has digit", "log last number", "digits", "repeated last digit", "code",
             "names"] + [f"last digit {d}" for d in range(10)] + [f"starts '{w}'" for w in
             ("how", "what", "when", "which", "who", "is", "does", "can", "where")]  # fmt: skip
    rule = f"abstain if {names[j]} {'>=' if above else '<'} {t:.3g}"
    return ProbeResult(len(y_train), len(y_test), logistic, stump, rule, 0.5)


def check_surface_probe(rows: list[TaskRow]) -> Check:
    """Whether a surface-feature classifier tells abstention from answerable test questions better than chance."""
    probe = surface_probe(rows)
    if probe is None:
        return Check(
            "surface_probe",
            True,
            "not run: train and test each need both abstention and knowledge rows",
            "add abstention and knowledge rows to both splits",
        )
    gain = probe.accuracy - probe.majority_rate
    return Check(
        "surface_probe",
        gain <= MAX_PROBE_GAIN,
        f"surface rule tells abstention from answerable test questions at {probe.accuracy:.1%} balanced accuracy "
        f"vs {probe.majority_rate:.0%} majority-class rate: {gain * 100:+.1f} points (at most "
        f"{MAX_PROBE_GAIN * 100:.0f})",
        "make unanswerable questions look like answerable ones: same templates, numbers and codes drawn from the "
        "same ranges as real ones (between real model numbers, inside the real code space), similar lengths",
        (
            f"logistic regression {probe.logistic_accuracy:.1%}; best stump {probe.stump_accuracy:.1%} "
            f"({probe.stump_rule}, chosen on train)",
            f"trained on {probe.train_rows} train questions, scored on {probe.test_rows} test questions",
        ),
    )


# ---------------------------------------------------------------------------------------------- report


def audit_rows(
    rows: list[TaskRow], documents: dict[str, str], updates: dict[str, str] | None = None, corpus: str = ""
) -> AuditReport:
    """Every audit check over task rows and documents (doc id -> text)."""
    checks = (
        check_near_duplicates(rows),
        check_shared_entities(rows, documents),
        check_real_entity_share(rows, documents),
        check_surface_probe(rows),
        check_answer_spaces(rows),
        check_label_balance(rows),
        check_answers_in_sources(rows, documents, updates),
    )
    if any(r.generated is not None for r in rows):  # corpora without generated rows keep their audit as it was
        checks += (check_generated_leaks(rows),)
    return AuditReport(corpus, len(rows), chance_baselines(rows), checks)


def audit_corpus(corpus: Path, include_unreviewed: bool = False) -> AuditReport:
    """Audit the rows of a corpus folder a run would use (generated rows still pending too, with
    `include_unreviewed`); raises CorpusError if it does not validate (run `ragft corpus validate` first)."""
    from ragft.eval.tasks import load_tasks
    from ragft.service.documents import load_documents

    corpus = Path(corpus)
    rows = load_tasks(corpus, include_unreviewed)
    documents = {d.doc_id: d.text for d in load_documents(corpus / "documents")}
    updates = {d.doc_id: d.text for d in load_documents(corpus / "updates")} if (corpus / "updates").is_dir() else None
    return audit_rows(rows, documents, updates, corpus.as_posix())


def render(report: AuditReport) -> str:
    """The report as text, for the terminal and the data card."""
    failed = report.failed
    head = f"audit of {report.corpus}: {report.rows} task rows, {len(report.checks)} checks, " + (
        "all passed" if not failed else f"{len(failed)} failed ({', '.join(c.name for c in failed)})"
    )
    lines = [head, ""]
    for c in report.checks:
        lines.append(f"[{'pass' if c.passed else 'FAIL'}] {c.name}: {c.summary}")
        lines += [f"    {d}" for d in c.details]
        if not c.passed:
            lines.append(f"    fix: {c.fix}")
    lines += ["", "chance baselines (a constant guess chosen on train rows, its answer type read from the question, "
              "scored on test rows by the headline, as a run reports it):"]  # fmt: skip
    lines += [f"    {family:20s} {value:6.1%}" if isinstance(value, float) else f"    {family:20s} n/a: {value}"
              for family, value in report.chance.items()]  # fmt: skip
    return "\n".join(lines) + "\n"
