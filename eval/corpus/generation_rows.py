"""The rows a team does not have, made from its documents for people to review: `ragft corpus generate`.

Three families, each checked before a row is kept:

- knowledge: a question and a short answer resting on a span quoted from one document (the span must occur in the
  document's text and the answer in the span), plus a paraphrase of the question: the question becomes a train
  row, the paraphrase a test row of the `paraphrase` view restating it;
- abstention: questions about a detail the documents never give for an entity they name (`missing_detail`: the
  entity must be in the document, and BM25 over the documents' sentences must not find a sentence naming both the
  entity and the detail), and near-miss entities no document names (`near_miss`: a real name with its number
  shifted, or two real names crossed, checked absent from every document and question). Near misses need no
  language model, so they are made without an endpoint too;
- behaviour: new inputs for a corpus's label set or JSON Schema, seeded from its own examples, the labels asked for
  in turn so the test split stays balanced.

Any OpenAI-compatible endpoint generates (vLLM, a hosted API, `ragft serve`): a JSON Schema response format where
the endpoint takes one (strings bounded, items counted, a knowledge span and an abstention entity chosen from the
passage, so a small model decoding under the grammar closes its JSON and quotes what the document holds); where it
refuses it, the reply is parsed leniently (code fences and prose around the JSON object are dropped) and a reply
that still does not parse is asked again a bounded number of times. docs/generated-rows.md has the measurements. Every
rejection is counted by reason; exact duplicates and the audit's near-duplicates (`ragft.eval.corpus.audit.similarity`) of any
row already in the corpus are dropped. A budget (rows, tokens, seconds) stops the run, and progress reports the
time left. Every row carries its provenance (`generated`) and `review: pending`: a run uses it only once a person
accepts it (`ragft corpus review`, or the web page), or with `--include-unreviewed`.

Example:
    >>> generator = OpenAIGenerator("http://127.0.0.1:8001/v1", "qwen2.5-7b-instruct")  # doctest: +SKIP
    >>> report = generate_rows(Path("corpora/mine"), {"knowledge": 20, "abstention": 10}, generator)  # doctest: +SKIP
    >>> write_generated(Path("corpora/mine"), report.rows)  # doctest: +SKIP
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import random
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
from ragft.eval.corpus.audit import (
    _STOPWORDS,
    MIN_REAL_ENTITY_SHARE,
    NEAR_DUPLICATE_SIMILARITY,
    _bigrams,
    _in_documents,
    _tokens,
    about_real_entity,
    invented_mentions,
    mask_entities,
    name_spans,
)
from ragft.eval.corpus.corpus_import import assign_splits
from ragft.eval.reporting.review import reviewer_name
from ragft.eval.scoring.metrics.values import canonical
from ragft.eval.tasks import TaskRow, check_corpus
from ragft.service.documents import Document, load_documents
from ragft.service.folders import sync_folder
from ragft.service.training_data import normalise_text

GENERATED_FILE = "generated.jsonl"  # under tasks/: every generated row, whatever its review says
PROMPT_VERSIONS = {"knowledge": "knowledge-1", "abstention": "abstention-1", "behaviour": "behaviour-1",
                   "near_miss": "near-miss-1"}  # fmt: skip
FAMILIES = ("knowledge", "abstention", "behaviour")
MAX_ANSWER_WORDS = 8  # a short answer: the knowledge metric looks for it in the reply's first sentence
PASSAGE_CHARS = 1500  # what one call reads: a few paragraphs, so the span and the question stay local
ITEMS_PER_CALL = 3  # questions asked of one passage: more repeat each other, fewer waste the passage's tokens
MAX_CALLS_PER_ITEM = 4  # a family stops after this many calls per wanted item (a generator that keeps failing)


class GenerationError(RuntimeError):
    """The endpoint cannot be used at all (unreachable, unknown model); the message says what to check."""


# ---------------------------------------------------------------------------------------------- the endpoint


@dataclass(frozen=True)
class Reply:
    data: dict | None  # the parsed JSON object, or None when no attempt parsed
    tokens: int
    attempts: int
    error: str | None = None  # "invalid_json" or "endpoint_error: ..."


STRUCTURED = ("auto", "on", "off")  # how replies are constrained: see OpenAIGenerator


class OpenAIGenerator:
    """Any OpenAI-compatible chat endpoint. With `structured` "auto" every call asks for a JSON Schema response format
    (`response_format: {"type": "json_schema", ...}`, which vLLM, llama.cpp's server and hosted APIs decode under
    the schema's grammar) until the endpoint refuses it (HTTP 400/422), then asks without it, parsing replies
    leniently; "on" makes a refusal an error (to be sure replies are constrained), "off" never asks (an endpoint
    that fails on the field in another way). A reply that does not parse is asked again up to `retries` times,
    unless it repeats the last reply word for word: the endpoint decodes greedily (`ragft serve`), so asking again
    would only repeat it. The instructions go in the one user message, as an endpoint that answers only the last
    user message (`ragft serve`) needs."""

    def __init__(self, url: str, model: str, api_key: str | None = None, retries: int = 2, max_tokens: int = 512,
                 timeout_s: float = 120.0, structured: str = "auto"):  # fmt: skip
        from openai import OpenAI

        if structured not in STRUCTURED:
            raise ValueError(f"structured output '{structured}': use {', '.join(STRUCTURED)}")
        self.url, self.model, self.retries, self.max_tokens = url, model, retries, max_tokens
        self.mode = structured
        self.structured = structured != "off"  # asked on the next call
        self.refused: str | None = None  # the endpoint's refusal of the response format, when it refused
        self._client = OpenAI(base_url=url, api_key=api_key or "none", timeout=timeout_s, max_retries=1)

    def describe(self) -> str:
        """How replies were constrained, for the run's summary."""
        if self.structured:
            return "structured output: a JSON Schema response format asked on every call"
        if self.refused:
            return f"structured output: refused by the endpoint ({self.refused}); replies parsed leniently"
        return "structured output: off (--structured-output off); replies parsed leniently"

    def ask(self, system: str, user: str, schema: dict, temperature: float = 0.7) -> Reply:
        """A JSON object with a list of `items` (`schema` is what the endpoint is asked to follow), asked up to
        1 + retries times."""
        import openai

        messages = [{"role": "user", "content": f"{system}\n\n{user}"}]
        tokens, error, attempt, last = 0, "invalid_json", 0, None
        while attempt <= self.retries:
            rules = {"type": "json_schema", "json_schema": {"name": "rows", "schema": schema, "strict": True}}
            extra = {"response_format": rules} if self.structured else {}
            try:
                out = self._client.chat.completions.create(
                    model=self.model, messages=messages, temperature=temperature, max_tokens=self.max_tokens, **extra
                )
            except (openai.BadRequestError, openai.UnprocessableEntityError) as exc:
                if self.structured and self.mode == "auto":  # no JSON Schema response format here: lenient from now
                    self.structured, self.refused = False, f"{exc.status_code}: {str(exc.message)[:120]}"
                    continue
                raise GenerationError(f"{self.url} refused the request ({exc.status_code}: {exc.message}); check "
                                      f"--generator-model and the endpoint's limits (asked for {self.max_tokens} "
                                      "tokens: --max-reply-tokens"
                                      + ("; --structured-output on needs an endpoint that takes a JSON Schema "
                                         "response format" if self.structured else "") + ")") from exc  # fmt: skip
            except openai.NotFoundError as exc:
                raise GenerationError(f"{self.url}: model '{self.model}' not found ({exc.message}); check --generator-model") from exc  # fmt: skip
            except openai.AuthenticationError as exc:
                raise GenerationError(f"{self.url}: the key was refused ({exc.message}); set --generator-key") from exc
            except openai.APITimeoutError:  # one slow reply: asked again, within the same bound
                attempt += 1
                error = "endpoint_error: timeout"
                continue
            except openai.APIConnectionError as exc:
                raise GenerationError(f"{self.url}: cannot connect ({exc}); is the endpoint running?") from exc
            except openai.APIStatusError as exc:
                if exc.status_code == 413:  # every prompt of this size would be refused: no use asking again
                    raise GenerationError(f"{self.url} refused a prompt of {len(system) + len(user)} characters "
                                          f"({exc.message}); raise the endpoint's limit (ragft serve: --set "
                                          "api.max_question_chars=8000)") from exc  # fmt: skip
                attempt += 1  # a 5xx: asked again, within the same bound
                error = f"endpoint_error: {exc.status_code}"
                continue
            attempt += 1
            text = (out.choices[0].message.content or "") if out.choices else ""
            usage = getattr(out, "usage", None)
            tokens += usage.total_tokens if usage and usage.total_tokens else (len(system) + len(user) + len(text)) // 4
            data = parse_json_object(text)
            if data is not None and isinstance(data.get("items"), list):
                return Reply(data, tokens, attempt)  # each item is checked on its own, its rejection counted
            error = "invalid_json"
            if text == last:  # greedy decoding: the same prompt gives the same reply
                break
            last = text
        return Reply(None, tokens, attempt, error)


def parse_json_object(text: str) -> dict | None:
    """The first JSON object in a reply, leniently: code fences and prose before or after it are ignored."""
    text = re.sub(r"```(?:json)?", "", text)
    decoder = json.JSONDecoder()
    for start in (m.start() for m in re.finditer(r"\{", text)):
        try:
            value, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None


# ---------------------------------------------------------------------------------------------- prompts

SYSTEM = "You write evaluation data from a team's documents. Reply with one JSON object and nothing else."

KNOWLEDGE_PROMPT = """Document: {doc}
Passage:
<<<
{passage}
>>>
Write {n} questions a reader could answer from this passage alone, each about a different fact. For each give:
- "question": the question, naming what it is about (never "the passage" or "the document");
- "answer": the short answer (at most {max_words} words), copied from the passage;
- "span": the sentence of the passage that states the answer, copied character for character;
- "paraphrase": the same question in other words and another sentence structure."""

ABSTENTION_PROMPT = """Document: {doc}
Passage:
<<<
{passage}
>>>
Write {n} questions about a thing, person or product this passage names, each asking for a detail (a price, a
date, a size, a count, a person) that the passage does NOT state, so the honest answer is that the documents do not
say. For each give:
- "question": the question, naming the entity;
- "entity": the entity's name, copied from the passage;
- "detail": the detail asked for, in two or three words (e.g. "launch price")."""

BEHAVIOUR_PROMPT = """Task instruction: {instruction}
Examples:
{examples}
Write {n} new inputs for this task, unlike the examples in wording and topic{wanted}. For each give "input" and
{target}."""

ITEM = {"type": "object", "additionalProperties": False}


def _items_schema(properties: dict, n: int = ITEMS_PER_CALL) -> dict:
    """The reply's schema: {"items": [1 to n objects with exactly `properties`]}."""
    item = ITEM | {"properties": properties, "required": sorted(properties)}
    items = {"type": "array", "items": item, "minItems": 1, "maxItems": n}
    return {"type": "object", "additionalProperties": False, "required": ["items"], "properties": {"items": items}}


def _at_most(schema: dict, n: int) -> dict:
    """`schema` with at most `n` items: the number a call asks for."""
    items = schema["properties"]["items"] | {"maxItems": n}
    return schema | {"properties": {"items": items}}


def _text(chars: int) -> dict:
    """A string of at most `chars` characters: under a grammar a small model otherwise repeats one string until the
    reply's token limit cuts the JSON off (SmolLM2-135M on vLLM did, every call)."""
    return {"type": "string", "minLength": 1, "maxLength": chars}


STRING = _text(300)  # a behaviour input
QUESTION = _text(200)
KNOWLEDGE_SCHEMA = _items_schema({"question": QUESTION, "answer": _text(12 * MAX_ANSWER_WORDS), "span": _text(400),
                                  "paraphrase": QUESTION})  # fmt: skip
ABSTENTION_SCHEMA = _items_schema({"question": QUESTION, "entity": _text(80), "detail": _text(40)})


# ---------------------------------------------------------------------------------------------- budget, report


@dataclass(frozen=True)
class Budget:
    """When a run stops: rows written, tokens the endpoint reports, seconds; None is no limit."""

    rows: int | None = None
    tokens: int | None = None
    seconds: float | None = None


@dataclass
class GenerationReport:
    rows: list[TaskRow] = field(default_factory=list)
    asked: Counter = field(default_factory=Counter)  # family -> items asked for (of the endpoint, or near misses tried)
    accepted: Counter = field(default_factory=Counter)  # family -> items kept
    rejected: Counter = field(default_factory=Counter)  # (family, reason) -> items dropped
    tokens: int = 0
    calls: int = 0
    seconds: float = 0.0
    stopped: str | None = None  # which budget ended the run
    notes: list[str] = field(default_factory=list)

    def summary(self) -> list[str]:
        """What the CLI prints: rows per family, rejections by reason, tokens, time."""
        families = sorted(set(self.accepted) | set(self.asked))
        out = [f"{f}: {self.accepted[f]} item(s) kept of {self.asked[f]} asked" for f in families]
        by_reason = sorted(self.rejected.items(), key=lambda kv: (kv[0][0], -kv[1]))
        out += [f"  rejected {family} {reason}: {n}" for (family, reason), n in by_reason]
        per_100 = f", {self.seconds / len(self.rows) * 100:.1f} s per 100 rows" if self.rows else ""
        out.append(f"{len(self.rows)} rows, {self.calls} calls, {self.tokens} tokens, {self.seconds:.1f} s{per_100}")
        if self.stopped:
            out.append(f"stopped early: {self.stopped}")
        return out + self.notes


class _Clock:
    """The budget and progress: time left from the rate items are kept at, capped by the seconds budget."""

    def __init__(self, budget: Budget, wanted: int, report: GenerationReport, progress: Callable | None):
        self.budget, self.wanted, self.report, self.progress = budget, wanted, report, progress
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def exhausted(self) -> str | None:
        b, r = self.budget, self.report
        if b.rows is not None and len(r.rows) >= b.rows:
            return f"row budget of {b.rows} reached"
        if b.tokens is not None and r.tokens >= b.tokens:
            return f"token budget of {b.tokens} reached ({r.tokens} used)"
        if b.seconds is not None and self.elapsed() >= b.seconds:
            return f"time budget of {b.seconds:.0f} s reached"
        return None

    def tick(self, family: str) -> None:
        if self.progress is None:
            return
        done = sum(self.report.accepted.values())
        elapsed = self.elapsed()
        left = (self.wanted - done) * elapsed / done if done else None
        if left is not None and self.budget.seconds is not None:
            left = min(left, max(0.0, self.budget.seconds - elapsed))
        self.progress(family, done, self.wanted, sum(self.report.rejected.values()), elapsed, left)


# ---------------------------------------------------------------------------------------------- what is known


def _squash(text: str) -> str:
    """Text compared for quoting: whitespace collapsed, curly quotes and dashes straightened, lower-case."""
    text = text.translate(str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"', "–": "-", "—": "-", "\u00ad": ""}))
    return " ".join(text.split()).lower()


class _Known:
    """Everything generated rows are compared with: the documents, the corpus's rows, and the rows made so far."""

    def __init__(self, documents: list[Document], rows: list[TaskRow]):
        self.documents = {d.doc_id: d for d in documents}
        self.squashed = {d.doc_id: _squash(d.text) for d in documents}
        self.rows: list[TaskRow] = list(rows)
        self.texts = {normalise_text(t) for r in rows for t in (r.text, *r.rephrasings)}
        self._bm25 = None
        self._grams: dict[tuple[str, bool], frozenset] = {}

    def grams(self, text: str, masked: bool) -> frozenset:
        """The audit's similarity measure (`ragft.eval.corpus.audit.similarity`): token bigrams, names and numbers masked or not;
        kept per text, as every candidate is compared with every row."""
        key = (text, masked)
        if key not in self._grams:
            words = mask_entities(text) if masked else [w.lower() for w, _ in _tokens(text)]
            self._grams[key] = _bigrams(words)
        return self._grams[key]

    def similar(self, text: str, rows: list[TaskRow], masked: bool) -> bool:
        """Whether `text` is a near-duplicate of one of `rows` (Jaccard at the audit's NEAR_DUPLICATE_SIMILARITY)."""
        x = self.grams(text, masked)
        return any(len(x & (y := self.grams(r.text, masked))) >= NEAR_DUPLICATE_SIMILARITY * len(x | y) for r in rows)

    def add(self, rows: list[TaskRow]) -> None:
        self.rows += rows
        self.texts |= {normalise_text(r.text) for r in rows}

    def known_text(self) -> str:
        questions = [r.text for r in self.rows if r.family == "knowledge"]
        return "\n".join([*(d.text for d in self.documents.values()), *questions]).lower()

    def duplicate(self, text: str, family: str | None, masked: bool) -> str | None:
        """'duplicate' or 'near_duplicate' when a row (of `family`, or any) already asks this, else None."""
        if normalise_text(text) in self.texts:
            return "duplicate"
        same = [r for r in self.rows if family is None or r.family == family]
        return "near_duplicate" if self.similar(text, same, masked) else None

    def same_fact(self, doc_id: str, answer: str) -> bool:
        said = canonical(answer)
        return any(doc_id in r.source_docs and said in {canonical(a) for a in r.answers} for r in self.rows)

    def sentences(self) -> list[tuple[str, str]]:
        out = []
        for doc_id, d in self.documents.items():
            out += [(doc_id, s) for s in re.split(r"(?<=[.!?])\s+|\n{2,}", d.text) if len(s.split()) >= 3]
        return out

    def retrievable(self, question: str, entity: str, detail: str) -> bool:
        """Whether BM25 over the documents' sentences finds, among its top 5, one naming the entity and a content
        word of the detail: then the 'missing' detail is probably stated."""
        import bm25s

        if self._bm25 is None:
            self._sentences = self.sentences()
            self._bm25 = bm25s.BM25()
            corpus = bm25s.tokenize([s for _, s in self._sentences], stopwords="en", show_progress=False)
            self._bm25.index(corpus, show_progress=False)
        query = bm25s.tokenize([f"{question} {detail}"], stopwords="en", show_progress=False)
        k = min(5, len(self._sentences))
        ids, _ = self._bm25.retrieve(query, k=k, show_progress=False)
        words = [w for w in re.findall(r"[a-z0-9]+", detail.lower()) if w not in _STOPWORDS and len(w) > 2]
        for i in ids[0]:
            sentence = _squash(self._sentences[int(i)][1])
            if _squash(entity) in sentence and any(re.search(rf"\b{re.escape(w[:5])}", sentence) for w in words):
                return True
        return False


def _lines(text: str) -> Iterator[str]:
    """The text's lines, a line longer than a passage cut after its sentences (a document with no line breaks)."""
    for line in text.splitlines(keepends=True):
        if len(line) <= PASSAGE_CHARS:
            yield line
        else:
            yield from (s + " " for s in re.split(r"(?<=[.!?])\s+", line))


def _passages(documents: list[Document], rng: random.Random) -> Iterator[tuple[Document, str]]:
    """Windows of about PASSAGE_CHARS of each document on line boundaries, documents taken in turn (seeded)."""
    windows: list[list[tuple[Document, str]]] = []
    for d in documents:
        chunks, current = [], ""
        for line in _lines(d.text):
            if len(current) + len(line) > PASSAGE_CHARS and current.strip():
                chunks.append(current)
                current = ""
            current += line
        if len(current.split()) >= 8:
            chunks.append(current)
        rng.shuffle(chunks)
        windows.append([(d, c) for c in chunks if len(c.split()) >= 8])
    rng.shuffle(windows)
    while any(windows):
        for w in windows:
            if w:
                yield w.pop()


def _item_id(prefix: str, *parts: str) -> str:
    return f"gen-{prefix}-" + hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:10]


def _provenance(model: str, family: str, item: str, doc: str | None = None, span: str | None = None) -> dict:
    return {"generated": {"model": model, "prompt_version": PROMPT_VERSIONS[family], "item": item,
                          **({"source_doc": doc} if doc else {}), **({"span": span} if span else {})},
            "review": {"status": "pending"}}  # fmt: skip


# ---------------------------------------------------------------------------------------------- knowledge


def knowledge_rows(
    item: dict, doc: Document, known: _Known, model: str, unseen: bool = False
) -> tuple[list[TaskRow], str | None]:
    """A train question and its paraphrase test row from one generated item (with `unseen`, the question alone as a
    test row of the unseen view: a fact only the documents teach), or the reason it is rejected."""
    question, answer, span, paraphrase = (" ".join(str(item.get(k) or "").split())
                                          for k in ("question", "answer", "span", "paraphrase"))  # fmt: skip
    if not (question and answer and span and paraphrase):
        return [], "empty_field"
    if _squash(span) not in known.squashed[doc.doc_id]:
        return [], "span_not_in_document"
    said = canonical(answer)
    quoted = re.search(rf"(?<!\w){re.escape(_squash(answer))}(?!\w)", _squash(span))  # "2" is not in "2024"
    if not (quoted or (said and f" {said} " in f" {canonical(span)} ")):
        return [], "answer_not_in_span"
    if answer.lower() not in doc.text.lower():
        return [], "answer_not_in_document"  # e.g. broken across lines: the audit looks for it as written
    if len(answer.split()) > MAX_ANSWER_WORDS:
        return [], "answer_too_long"
    if any(said and f" {said} " in f" {canonical(q)} " for q in (question, paraphrase)):
        return [], "answer_in_question"
    if normalise_text(paraphrase) == normalise_text(question):
        return [], "paraphrase_repeats_question"
    for text in (question, paraphrase):
        if reason := known.duplicate(text, "knowledge", masked=False):
            return [], reason
    if known.same_fact(doc.doc_id, answer):
        return [], "duplicate_fact"
    train_id = _item_id("k", doc.doc_id, answer.lower(), question)
    meta = _provenance(model, "knowledge", train_id, doc.doc_id, span)
    if unseen:
        return [TaskRow.model_validate({"id": train_id, "family": "knowledge", "split": "test", "kind": "unseen",
                                        "question": question, "answers": [answer], "source_docs": [doc.doc_id],
                                        **meta})], None  # fmt: skip
    train = {"id": train_id, "family": "knowledge", "split": "train", "question": question, "answers": [answer],
             "source_docs": [doc.doc_id], **meta}  # fmt: skip
    test = {"id": f"{train_id}-p", "family": "knowledge", "split": "test", "kind": "paraphrase",
            "question": paraphrase, "answers": [answer], "source_docs": [doc.doc_id], "paraphrase_of": train_id,
            **meta}  # fmt: skip
    return [TaskRow.model_validate(train), TaskRow.model_validate(test)], None


def _from_passages(generator, documents, known, family: str, count: int, report, clock, rng, unseen_share=0.0) -> None:
    """Items of a family asked of one passage at a time (documents in turn) until `count` are kept, the passages
    run out, MAX_CALLS_PER_ITEM calls per wanted item are spent, or the budget ends. A seeded `unseen_share` of
    knowledge items become unseen test rows instead of a trained question and its paraphrase."""
    prompt, schema, make = PASSAGE_TASKS[family]
    for calls, (doc, passage) in enumerate(_passages(documents, rng)):
        if report.accepted[family] >= count or calls >= count * MAX_CALLS_PER_ITEM or _stop(report, clock):
            break
        n = min(ITEMS_PER_CALL, count - report.accepted[family])
        asked = prompt.format(doc=doc.doc_id, passage=passage.strip(), n=n, max_words=MAX_ANSWER_WORDS)
        report.asked[family] += n
        quoted = _passage_choices(family, doc, passage)
        for item in _items(generator, asked, _choosing(_at_most(schema, n), quoted), family, report):
            if report.accepted[family] >= count:
                break
            extra = {"unseen": rng.random() < unseen_share} if family == "knowledge" else {}
            rows, reason = make(item, doc, known, generator.model, **extra)
            _keep(report, known, family, rows, reason)
        clock.tick(family)


def _passage_choices(family: str, doc: Document, passage: str) -> dict[str, list[str]]:
    """What an item may quote from its passage, for the grammar: a knowledge span is one of the passage's sentences,
    an abstention entity one of the names it uses. Under structured output the quote is then in the document by
    construction; an endpoint without it is asked the same and its quotes checked as before."""
    if family == "knowledge":
        sentences = [s.strip() for line in passage.splitlines() for s in re.split(r"(?<=[.!?])\s+", line)]
        return {"span": list(dict.fromkeys(s for s in sentences if len(s.split()) >= 4 and len(s) <= 400))}
    names = document_entities([Document(doc.doc_id, passage, doc.source)])
    return {"entity": [e for e in names if _squash(e) in _squash(passage)][:50]}  # as written ('IBM MT ST' is not)


def _choosing(schema: dict, choices: dict[str, list[str]]) -> dict:
    """`schema` with each field in `choices` one of its values (a field with none stays free text)."""
    item = schema["properties"]["items"]["items"]
    fields = item["properties"] | {k: {"type": "string", "enum": v} for k, v in choices.items() if v}
    items = schema["properties"]["items"] | {"items": item | {"properties": fields}}
    return schema | {"properties": {"items": items}}


# ---------------------------------------------------------------------------------------------- abstention


def missing_detail_row(item: dict, doc: Document, known: _Known, model: str) -> tuple[list[TaskRow], str | None]:
    """An abstention row asking a real entity for a detail the documents do not give, or the reason it is
    rejected."""
    question, entity, detail = (" ".join(str(item.get(k) or "").split()) for k in ("question", "entity", "detail"))
    if not (question and entity and detail):
        return [], "empty_field"
    if _squash(entity) not in known.squashed[doc.doc_id]:
        return [], "entity_not_in_document"
    if _squash(entity) not in _squash(question):
        return [], "entity_not_in_question"
    if reason := known.duplicate(question, None, masked=False):  # a knowledge question asked as unanswerable too
        return [], reason
    if known.retrievable(question, entity, detail):
        return [], "answer_retrievable"
    row_id = _item_id("a", doc.doc_id, question)
    data = {"id": row_id, "family": "abstention", "split": "test", "kind": "missing_detail", "question": question,
            "source_docs": [doc.doc_id], **_provenance(model, "abstention", row_id, doc.doc_id, entity)}  # fmt: skip
    return [TaskRow.model_validate(data)], None


PASSAGE_TASKS = {"knowledge": (KNOWLEDGE_PROMPT, KNOWLEDGE_SCHEMA, knowledge_rows),
                 "abstention": (ABSTENTION_PROMPT, ABSTENTION_SCHEMA, missing_detail_row)}  # fmt: skip


_NAME_WORDS = re.compile(r"^[A-Z][A-Za-z]")
_YEAR = re.compile(r"^(1[0-9]|20)\d\d$")
_CALENDAR = re.compile(r"^(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec|mon|tue|wed|thu|fri|sat|sun)", re.I)
FALLBACK_TEMPLATES = ("What is {e}?", "When was {e} introduced?", "Who developed {e}?", "What is {e} used for?")


def document_entities(documents: list[Document]) -> list[str]:
    """Names the documents use, most frequent first: runs of one to four name-like tokens (the audit's
    `name_spans`) that start with a capitalised word and hold at most one number."""
    counts: Counter[str] = Counter()
    for d in documents:
        for line in d.text.splitlines():
            for span in name_spans(line):
                tokens = span.split()
                numbers = sum(any(c.isdigit() for c in t) for t in tokens)
                loose = [
                    t for t in tokens if _YEAR.match(t) or re.fullmatch(r"\d|\d+(st|nd|rd|th)", t)
                ]  # '(1985)', '2nd'
                if (1 <= len(tokens) <= 4 and _NAME_WORDS.match(tokens[0]) and numbers <= 1 and len(span) >= 4
                        and not _CALENDAR.match(tokens[0]) and not loose):  # fmt: skip
                    counts[span] += 1
    ranked = [e for e, _ in counts.most_common()]
    return sorted(ranked, key=lambda e: not any(c.isdigit() for c in e))  # numbered names make the closest misses


def near_misses(entities: list[str], known_text: str, rng: random.Random) -> Iterator[tuple[str, str]]:
    """(real entity, near miss) pairs: a real name with its number shifted ('Wang 1200' -> 'Wang 1500'), or a
    multi-word name with its last word taken from another name; each absent from `known_text` and made once."""
    multi = [e for e in entities if len(e.split()) >= 2 and not any(c.isdigit() for c in e)]  # word names cross
    used: set[str] = set()
    for entity in entities:
        tokens = entity.split()
        candidates = []
        for i, t in enumerate(tokens):
            m = re.search(r"\d+", t)
            if m and len(m.group()) <= 6:
                digits = m.group()
                for shift in rng.sample(range(1, 9), 3):
                    new = str((int(digits[0]) + shift) % 9 + 1) + digits[1:]
                    candidates.append(" ".join([*tokens[:i], t[: m.start()] + new + t[m.end() :], *tokens[i + 1 :]]))
        if len(tokens) >= 2 and not candidates:
            others = [o for o in multi if o.split()[-1] != tokens[-1] and o.split()[0] != tokens[0]]
            for other in rng.sample(others, min(3, len(others))):
                candidates.append(" ".join([*tokens[:-1], other.split()[-1]]))
        for miss in candidates:
            if miss.lower() not in used and not _in_documents(miss, known_text):
                used.add(miss.lower())
                yield entity, miss
                break


def near_miss_rows(documents, known: _Known, count: int, report: GenerationReport, rng, model: str) -> None:
    """Abstention rows about entities no document names, made without a language model: each real entity's
    questions in the corpus (else a few fixed templates) asked about its near miss."""
    text = known.known_text()
    templates: dict[str, list[str]] = defaultdict(list)
    entities = document_entities(list(documents))
    for r in known.rows:
        if r.family == "knowledge":
            for e in name_spans(r.text):
                if e in entities:
                    templates[e].append(r.text.replace(e, "{e}"))
    made = 0
    asked = "\n".join([text, *(r.text.lower() for r in known.rows)])  # no invented name another row already asks
    for entity, miss in near_misses(entities, asked, rng):
        if made >= count:
            break
        for template in templates.get(entity) or rng.sample(FALLBACK_TEMPLATES, len(FALLBACK_TEMPLATES)):
            question = template.format(e=miss)
            row_id = _item_id("n", miss, question)
            data = {"id": row_id, "family": "abstention", "split": "test", "kind": "near_miss", "question": question,
                    **_provenance(model, "near_miss", row_id, None, entity)}  # fmt: skip
            row = TaskRow.model_validate(data)
            report.asked["abstention"] += 1
            if miss.lower() not in invented_mentions(row, text):
                reason = "entity_in_documents"
            else:
                reason = known.duplicate(question, None, masked=False)
            _keep(report, known, "abstention", [] if reason else [row], reason)
            if not reason:
                made += 1
                break
    if made < count:
        report.notes.append(f"near misses: {made} of {count} made (the documents name too few entities to vary)")


# ---------------------------------------------------------------------------------------------- behaviour


def behaviour_seeds(rows: list[TaskRow]) -> dict[str, list[TaskRow]]:
    """Behaviour rows by format (kind) that generation can extend: a label set or a JSON Schema (style rows have
    neither, so a checked new input cannot be made for them)."""
    groups: dict[str, list[TaskRow]] = defaultdict(list)
    for r in rows:
        if r.family == "behaviour" and (r.labels or r.json_schema) and r.generated is None:
            groups[r.kind or "behaviour"].append(r)
    return dict(sorted(groups.items()))


def behaviour_row(item: dict, seed: TaskRow, known: _Known, model: str) -> tuple[list[TaskRow], str | None]:
    """A new behaviour row in `seed`'s format from one generated item, or the reason it is rejected."""
    given = " ".join(str(item.get("input", "")).split())
    if not given:
        return [], "empty_field"
    data = {"family": "behaviour", "split": "test", "kind": seed.kind, "instruction": seed.instruction,
            "input": given}  # fmt: skip
    if seed.labels:
        if item.get("label") not in seed.labels:
            return [], "label_not_in_set"
        data |= {"labels": seed.labels, "label": item["label"]}
    else:
        try:
            jsonschema.validate(item.get("expected"), seed.json_schema)
        except jsonschema.ValidationError:
            return [], "expected_fails_schema"
        data |= {"schema": seed.json_schema, "expected": item["expected"]}
    if normalise_text(given) in known.texts:
        return [], "duplicate"
    same_format = [r for r in known.rows if r.family == "behaviour" and r.kind == seed.kind]
    if known.similar(given, same_format, masked=True):
        return [], "near_duplicate"  # the audit's masked measure: a new name in an old template is no new input
    row_id = _item_id("b", seed.kind or "", given)
    data |= {"id": row_id, **_provenance(model, "behaviour", row_id)}
    return [TaskRow.model_validate(data)], None


def _behaviour(generator, seeds, known, count, report, clock, rng) -> None:
    if not seeds:
        report.notes.append("behaviour: the corpus has no behaviour rows with a label set or JSON Schema to extend")
        return
    per_format = {kind: count // len(seeds) + (i < count % len(seeds)) for i, kind in enumerate(seeds)}
    for kind, members in seeds.items():
        made, calls = 0, 0
        wanted = per_format[kind]
        seed = members[0]
        labels = list(seed.labels or [])
        turn = 0
        while made < wanted and calls < wanted * MAX_CALLS_PER_ITEM and not _stop(report, clock):
            n = min(ITEMS_PER_CALL, wanted - made)
            examples = rng.sample(members, min(6, len(members)))
            shown = "\n".join(json.dumps({"input": r.text, **({"label": r.label} if r.labels else
                                                              {"expected": r.expected})}) for r in examples)  # fmt: skip
            if labels:
                asked = [labels[(turn + i) % len(labels)] for i in range(n)]
                turn += n
                wanted_text = f", with these labels in order: {', '.join(asked)}"
                target, schema = f'"label" (one of {", ".join(labels)})', _items_schema({"input": STRING, "label": {"type": "string", "enum": labels}}, n)  # fmt: skip
            else:
                wanted_text, target = "", '"expected": the JSON object the task asks for'
                schema = _items_schema({"input": STRING, "expected": seed.json_schema}, n)
            prompt = BEHAVIOUR_PROMPT.format(instruction=seed.instruction or "(none)", examples=shown, n=n,
                                             wanted=wanted_text, target=target)  # fmt: skip
            calls += 1
            report.asked["behaviour"] += n
            for item in _items(generator, prompt, schema, "behaviour", report):
                if made >= wanted:
                    break
                rows, reason = behaviour_row(item, seed, known, generator.model)
                _keep(report, known, "behaviour", rows, reason)
                made += bool(rows)
            clock.tick("behaviour")
    # splits, stratified by label as `ragft corpus init` splits a team's examples (an even share of each label
    # in test keeps the audit's label balance)
    made_rows = [r for r in report.rows if r.family == "behaviour"]
    splits = assign_splits([f"{r.kind}:{r.label or ''}" for r in made_rows], [None] * len(made_rows), 0.5, 0)
    by_id = {r.id: r.model_copy(update={"split": s}) for r, s in zip(made_rows, splits, strict=True)}
    report.rows = [by_id.get(r.id, r) for r in report.rows]


# ---------------------------------------------------------------------------------------------- the run


def _stop(report: GenerationReport, clock: _Clock) -> bool:
    reason = clock.exhausted()
    if reason:
        report.stopped = reason
    return reason is not None


def _items(generator, prompt: str, schema: dict, family: str, report: GenerationReport) -> list[dict]:
    reply = generator.ask(SYSTEM, prompt, schema)
    report.calls += 1
    report.tokens += reply.tokens
    if reply.data is None:
        report.rejected[(family, (reply.error or "invalid_json").split(":")[0])] += 1
        return []
    items = reply.data.get("items")
    return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []


def _keep(report: GenerationReport, known: _Known, family: str, rows: list[TaskRow], reason: str | None) -> None:
    if reason:
        report.rejected[(family, reason)] += 1
        return
    report.rows += rows
    report.accepted[family] += 1
    known.add(rows)


def _split_abstention(report: GenerationReport, known: _Known, test_share: float = 0.5) -> None:
    """Generated abstention rows split seeded, each kind in both splits, so abstaining is trained and tested on
    different (invented or real) entities; a near miss goes to train where another invented entity in test would
    take the test rows about real entities below the audit's share (MIN_REAL_ENTITY_SHARE)."""
    made = [r for r in report.rows if r.family == "abstention"]
    splits = assign_splits([r.kind or "" for r in made], [None] * len(made), test_share, 0)
    text = known.known_text()
    test = [r for r in known.rows if r.family == "abstention" and r.split == "test" and r.generated is None]
    real = sum(about_real_entity(r, text) for r in test) + sum(
        s == "test" and r.kind == "missing_detail" for r, s in zip(made, splits, strict=True))  # fmt: skip
    total = len(test) + sum(s == "test" and r.kind == "missing_detail" for r, s in zip(made, splits, strict=True))
    for i, (r, s) in enumerate(zip(made, splits, strict=True)):
        if r.kind == "near_miss" and s == "test":
            if real < MIN_REAL_ENTITY_SHARE * (total + 1):
                splits[i] = "train"
            else:
                total += 1
    by_id = {r.id: r.model_copy(update={"split": s}) for r, s in zip(made, splits, strict=True)}
    report.rows = [by_id.get(r.id, r) for r in report.rows]


def generate_rows(
    corpus: Path,
    counts: dict[str, int],
    generator: OpenAIGenerator | None = None,
    budget: Budget | None = None,
    seed: int = 0,
    progress: Callable | None = None,
    unseen_share: float = 0.25,
) -> GenerationReport:
    """New rows for `corpus` (items per family in `counts`), each checked, deduplicated and marked pending; with no
    generator, only what needs no language model (abstention near misses). `unseen_share` of the knowledge items
    are asked as unseen test rows (no train row), the rest as a train question and its paraphrase test row."""
    corpus = Path(corpus)
    unknown = sorted(set(counts) - set(FAMILIES))
    if unknown:
        raise ValueError(f"unknown famil(ies) {', '.join(unknown)} to generate; choose from {', '.join(FAMILIES)}")
    rows, problems = check_corpus(corpus)
    if problems:
        raise ValueError(f"{corpus} does not validate ({len(problems)} problem(s), first: {problems[0]}); run "
                         f"`ragft corpus validate {corpus}` and fix it first")  # fmt: skip
    documents = load_documents(corpus / "documents")
    known = _Known(documents, rows)
    report = GenerationReport()
    clock = _Clock(budget or Budget(), sum(counts.values()), report, progress)
    rng = random.Random(seed)
    model = generator.model if generator else "none"
    if generator is None:
        if counts.get("abstention"):
            near_miss_rows(documents, known, counts["abstention"], report, rng, model)
        report.notes.append(
            "no --generator-url: made only abstention near misses (no language model needed). An endpoint adds "
            "knowledge questions on quoted spans with held-out paraphrases, abstention questions on details the "
            "documents lack, and behaviour inputs for the corpus's labels or schema."
        )  # fmt: skip
    else:
        if counts.get("knowledge"):
            _from_passages(generator, documents, known, "knowledge", counts["knowledge"], report, clock, rng,
                           unseen_share)  # fmt: skip
        if counts.get("abstention"):
            half = counts["abstention"] // 2
            _from_passages(generator, documents, known, "abstention", counts["abstention"] - half, report, clock, rng)
            near_miss_rows(documents, known, half, report, rng, model)
        if counts.get("behaviour"):
            _behaviour(generator, behaviour_seeds(rows), known, counts["behaviour"], report, clock, rng)
        report.notes.append(generator.describe())
    _split_abstention(report, known)
    for family, wanted in counts.items():
        if report.accepted[family] < wanted and not report.stopped and (generator or family == "abstention"):
            report.notes.append(f"{family}: {report.accepted[family]} of {wanted} items kept; the rest were rejected "
                                "or the passages ran out (more documents, or another model, give more)")  # fmt: skip
    report.seconds = clock.elapsed()
    return report


# ---------------------------------------------------------------------------------------------- the file


@contextmanager
def locked(corpus: Path) -> Iterator[Path]:
    """tasks/generated.jsonl held against other writers (a generate run, the review page, a terminal review)."""
    path = Path(corpus) / "tasks" / GENERATED_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{GENERATED_FILE}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield path
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read_generated(path: Path) -> list[TaskRow]:
    if not path.is_file():
        return []
    return [TaskRow.model_validate_json(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def dump_rows(rows: list[TaskRow]) -> str:
    return "".join(json.dumps(r.model_dump(by_alias=True, exclude_none=True, exclude_defaults=True),
                              ensure_ascii=False) + "\n" for r in rows)  # fmt: skip


def replace_file(path: Path, text: str) -> None:
    """Write `path` whole: a temporary file fsynced and renamed over it."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    sync_folder(path.parent)


def write_generated(corpus: Path, rows: list[TaskRow]) -> Path:
    """Add `rows` to tasks/generated.jsonl (rows already there keep their reviews); returns the file."""
    with locked(corpus) as path:
        old = read_generated(path)
        ids = {r.id for r in old}
        replace_file(path, dump_rows(old + [r for r in rows if r.id not in ids]))
    return path


# ---------------------------------------------------------------------------------------------- review

EDITABLE = {"knowledge": ("question", "paraphrase", "answer"), "abstention": ("question",),
            "behaviour": ("input", "label", "expected")}  # fmt: skip


@dataclass(frozen=True)
class ReviewItem:
    """The rows one generated item made (a question and its paraphrase, or one row), reviewed together."""

    item: str
    family: str
    status: str
    rows: tuple[TaskRow, ...]

    @property
    def fields(self) -> dict:
        """What a reviewer reads and may edit, with the document and the span beside it."""
        first = self.rows[0]
        out: dict = {"source_doc": first.generated.source_doc, "span": first.generated.span, "kind": first.kind,
                     "splits": [r.split for r in self.rows], "ids": [r.id for r in self.rows]}  # fmt: skip
        if self.family == "knowledge":
            test = next((r for r in self.rows if r.paraphrase_of), None)
            out |= {"question": first.text, "paraphrase": test.text if test else None, "answer": first.answers[0]}
        elif self.family == "behaviour":
            out |= {"input": first.text, "instruction": first.instruction, "label": first.label,
                    "labels": first.labels, "expected": first.expected}  # fmt: skip
        else:
            out |= {"question": first.text}
        review = first.review
        return out | {"reviewer": review.reviewer if review else None, "at": review.at if review else None}


def review_items(rows: list[TaskRow], status: str | None = None, family: str | None = None) -> list[ReviewItem]:
    """Generated rows grouped by item, in file order; only those with `status` and of `family` when given."""
    groups: dict[str, list[TaskRow]] = defaultdict(list)
    for r in rows:
        if r.generated is not None:
            groups[r.generated.item].append(r)
    items = [ReviewItem(item, members[0].family, members[0].review.status if members[0].review else "accepted",
                        tuple(sorted(members, key=lambda r: r.split != "train"))) for item, members in groups.items()]  # fmt: skip
    return [i for i in items if (status is None or i.status == status) and (family is None or i.family == family)]


def _edited(item: ReviewItem, edits: dict, documents: dict[str, str]) -> list[TaskRow]:
    unknown = sorted(set(edits) - set(EDITABLE[item.family]))
    if unknown:
        raise ValueError(f"cannot edit {', '.join(unknown)} of a {item.family} item; edit {', '.join(EDITABLE[item.family])}")  # fmt: skip
    out = []
    for r in item.rows:
        data = r.model_dump(by_alias=True, exclude_none=True)
        if item.family == "knowledge":
            if "answer" in edits:
                answer = " ".join(str(edits["answer"]).split())
                doc = r.source_docs[0]
                if answer.lower() not in documents.get(doc, "").lower():
                    raise ValueError(f"answer {answer!r} is not in {doc}: a knowledge answer must be stated in its document")  # fmt: skip
                data["answers"] = [answer]
            key = "paraphrase" if r.paraphrase_of else "question"
            if edits.get(key):
                data["question"] = " ".join(str(edits[key]).split())
        elif item.family == "behaviour":
            for key in ("input", "label", "expected"):
                if key in edits and edits[key] not in (None, ""):
                    data[key] = edits[key] if key == "expected" else " ".join(str(edits[key]).split())
        elif edits.get("question"):
            data["question"] = " ".join(str(edits["question"]).split())
        out.append(TaskRow.model_validate(data))
    if len(out) == 2 and normalise_text(out[0].text) == normalise_text(out[1].text):
        raise ValueError("the paraphrase repeats the question: a test row must not repeat its train row")
    return out


def decide(corpus: Path, item: str, decision: str, reviewer: str, edits: dict | None = None) -> ReviewItem:
    """Accept, edit or reject a generated item in tasks/generated.jsonl, with the reviewer's name and the time;
    an edit is checked as generation checks it (the answer stated in the document) and validated as a task row."""
    from datetime import UTC, datetime

    name = reviewer_name(reviewer)  # as answer reviews take it
    if decision not in ("accept", "edit", "reject"):
        raise ValueError(f"decision '{decision}': use accept, edit or reject")
    with locked(corpus) as path:
        rows = read_generated(path)
        found = [i for i in review_items(rows) if i.item == item]
        if not found:
            raise KeyError(f"no generated item '{item}' in {path}")
        target = found[0]
        changed = list(target.rows)
        status = {"accept": "accepted", "reject": "rejected", "edit": "edited"}[decision]
        if decision == "edit":
            documents = {d.doc_id: d.text for d in load_documents(Path(corpus) / "documents")}
            changed = _edited(target, edits or {}, documents)
            if [r.model_dump() for r in changed] == [r.model_dump() for r in target.rows]:
                status = "accepted"  # nothing changed: an accept
        stamp = {"status": status, "reviewer": name, "at": datetime.now(UTC).isoformat(timespec="seconds")}
        new = {r.id: TaskRow.model_validate(r.model_dump(by_alias=True) | {"review": stamp}) for r in changed}
        replace_file(path, dump_rows([new.get(r.id, r) for r in rows]))
    return ReviewItem(item, target.family, status, tuple(new.values()))


def note_in_data_card(corpus: Path, report: GenerationReport, model: str) -> Path | None:
    """Append what a generate run made to the corpus's DATA_CARD.md (when it has one): when, with which model and
    prompts, how many rows, and every rejection by reason."""
    from datetime import UTC, datetime

    card = Path(corpus) / "DATA_CARD.md"
    if not card.is_file():
        return None
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["", f"## Generated rows ({when})", "",
             f"`ragft corpus generate` with model `{model}`, prompts {', '.join(sorted(PROMPT_VERSIONS.values()))}; "
             f"written to `tasks/{GENERATED_FILE}` as pending: a run counts them once reviewed.", ""]  # fmt: skip
    lines += [f"- {line.strip()}" for line in report.summary()]
    with open(card, "a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return card
