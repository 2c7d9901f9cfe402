"""Batched greedy generation with the model's chat template.

Greedy decoding makes answers a function of the inputs, so a rerun gives the same numbers.
Prompts are sorted by length and batched up to a token cap (less padding; long rag prompts
run faster in smaller batches on CPU); answers are returned in the caller's order.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass

import torch
from ragft.service.settings import GenerationSettings

Messages = list[dict[str, str]]

STREAM_TOKEN_TIMEOUT_S = 120  # a streamed token waited for at most this long; CPU prefill of 1536 tokens takes ~5 s
FALLBACK_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    generated_tokens: int
    latency_ms: float  # wall time of the batch that produced this answer
    batch_size: int
    # the batch's share of the machine's wall clock: its latency, or, where batches ran side by side, the call's
    # wall time split over its batches by latency (`machine_shares`); None where nothing was timed here
    machine_ms: float | None = None


def machine_shares(call_ms: float, latencies: list[float]) -> list[float]:
    """Each batch's share of a call's wall time, in proportion to its latency: batches that ran side by side on
    replicas each took longer than their share of the machine, so their latencies sum to more than the call.
    Sequential batches (latencies summing to the call's time) keep their latencies, up to the call's overhead.

    Example: two batches of 100 ms each, side by side in a 110 ms call, cost 55 ms of machine time each.
        >>> machine_shares(110.0, [100.0, 100.0])
        [55.0, 55.0]
    """
    total = sum(latencies)
    if total <= 0:
        return [0.0 for _ in latencies]
    return [call_ms * x / total for x in latencies]


def plan_batches(lengths: list[int], settings: GenerationSettings, max_spread: int | None = None) -> list[list[int]]:
    """Prompt indices grouped by length, at most `batch_size` prompts and `max_batch_tokens` padded tokens each,
    and, given `max_spread`, at most that many tokens between a batch's shortest and longest prompt.

    The grouping depends only on the prompts of one call, so a call repeated with the same prompts in the same
    order (an eval batch, fixed by row order) forms the same batches and gets the same answers."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    for i in order:
        if batches:
            current = batches[-1]
            rows = len(current) + 1
            spread_ok = max_spread is None or lengths[i] - lengths[current[0]] <= max_spread
            if rows <= settings.batch_size and rows * lengths[i] <= settings.max_batch_tokens and spread_ok:
                current.append(i)
                continue
        batches.append([i])
    return batches


_TOKENIZE = threading.Lock()  # see Generator.tokenize; encoding takes milliseconds


class Generator:
    """A causal LM and its tokenizer, ready to answer chat prompts in batches."""

    engine = "transformers"  # which engine answered, recorded with a run's results
    fingerprint: str | None = None  # manifest fingerprint of the trained artifact answering; None: base weights

    def __init__(self, model, tokenizer, model_id: str, settings: GenerationSettings):
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.settings = settings
        tokenizer.padding_side = "left"  # decoder-only models continue from the right edge
        tokenizer.truncation_side = "left"  # keep the question, which comes last
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if not tokenizer.chat_template:
            tokenizer.chat_template = FALLBACK_TEMPLATE

    def render(self, messages: Messages) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def tokenize(self, texts, **kwargs):
        """The tokenizer's encoding of `texts`, one thread at a time: arms generate on several threads (CTranslate2
        outside the runtime lock, conversions inside it) over one tokenizer, and a fast tokenizer refuses a call
        that changes its padding or truncation settings while another uses it ("Already borrowed")."""
        with _TOKENIZE:
            return self.tokenizer(texts, **kwargs)

    def count_tokens(self, messages: Messages) -> int:
        return len(self.tokenize(self.render(messages), add_special_tokens=False)["input_ids"])

    def _answer_length(self, tokens: torch.Tensor) -> int:
        """Generated tokens up to (not including) the first end-of-turn token."""
        stop = (tokens == self.tokenizer.eos_token_id).nonzero()
        return int(stop[0]) if len(stop) else len(tokens)

    def stream(self, messages: Messages, max_new_tokens: int | None = None, on_done=None, stop=None):
        """Yield the answer's text piece by piece as it is generated (greedy, one prompt).

        `on_done(Generation)` receives the token counts once generation ends. Setting `stop` (a
        threading.Event) ends generation at the next token: the reader went away.
        """
        from threading import Thread

        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        class Stopped(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs) -> bool:
                return stop is not None and stop.is_set()

        enc = self.tokenize(
            [self.render(messages)],
            return_tensors="pt",
            truncation=True,
            max_length=self.settings.max_prompt_tokens,
            add_special_tokens=False,
        ).to(self.model.device)
        # a timeout, so a reader never waits for ever on a generate() that died or hangs (it holds the model lock)
        streamer = TextIteratorStreamer(
            self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=STREAM_TOKEN_TIMEOUT_S
        )
        output: dict = {}

        def run() -> None:
            try:
                with torch.inference_mode():
                    output["ids"] = self.model.generate(
                        **enc,
                        max_new_tokens=max_new_tokens or self.settings.max_new_tokens,
                        do_sample=False,
                        pad_token_id=self.tokenizer.pad_token_id,
                        eos_token_id=self.tokenizer.eos_token_id,
                        streamer=streamer,
                        stopping_criteria=StoppingCriteriaList([Stopped()]),
                    )
            except BaseException as exc:  # the reader re-raises it; without end() it would wait for the timeout
                output["error"] = exc
                streamer.end()

        t0 = time.perf_counter()
        worker = Thread(target=run, daemon=True)
        worker.start()
        pieces = []
        try:
            for piece in streamer:
                pieces.append(piece)
                yield piece
        except queue.Empty:
            raise TimeoutError(
                f"no token came for {STREAM_TOKEN_TIMEOUT_S} s while streaming; generation was stopped"
            ) from None
        finally:
            if stop is not None:
                stop.set()  # ends a generate() still running once the reader is gone or timed out
        worker.join()
        if "error" in output:
            raise output["error"]
        if on_done is not None:
            n = self._answer_length(output["ids"][0, enc["input_ids"].shape[1] :])
            on_done(Generation("".join(pieces).strip(), int(enc["attention_mask"].sum()), n,
                               (time.perf_counter() - t0) * 1000, 1))  # fmt: skip

    def _batches(self, texts: list[str]) -> list[list[int]]:
        """Indices grouped by length, at most `batch_size` prompts and `max_batch_tokens` padded tokens each."""
        limit = self.settings.max_prompt_tokens
        lengths = [min(len(ids), limit) for ids in self.tokenize(texts, add_special_tokens=False)["input_ids"]]
        return plan_batches(lengths, self.settings)

    @torch.inference_mode()
    def generate(self, prompts: list[Messages], max_new_tokens: int | None = None) -> list[Generation]:
        """One greedy answer per prompt, in the order given."""
        max_new = max_new_tokens or self.settings.max_new_tokens
        texts = [self.render(p) for p in prompts]
        results: list[Generation | None] = [None] * len(texts)
        for batch in self._batches(texts):
            enc = self.tokenize(
                [texts[i] for i in batch],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=self.settings.max_prompt_tokens,
                add_special_tokens=False,
            ).to(self.model.device)
            t0 = time.perf_counter()
            out = self.model.generate(
                **enc,
                max_new_tokens=max_new,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.tokenizer.eos_token_id,
            )
            latency_ms = (time.perf_counter() - t0) * 1000
            new = out[:, enc["input_ids"].shape[1] :]
            for row, i in enumerate(batch):
                tokens = new[row]
                n = self._answer_length(tokens)
                results[i] = Generation(
                    text=self.tokenizer.decode(tokens[:n], skip_special_tokens=True).strip(),
                    prompt_tokens=int(enc["attention_mask"][row].sum()),
                    generated_tokens=n,
                    latency_ms=latency_ms,
                    batch_size=len(batch),
                    machine_ms=latency_ms,  # one batch at a time, on every thread
                )
        return results
