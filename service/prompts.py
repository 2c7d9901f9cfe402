"""The words every arm sends to the model, in one place so arms differ only by design.

For questions, the rag prompt tells the model to answer only from the passages and to say
the fixed abstention phrase otherwise; abstention metrics look for that phrase. A row with an
instruction (a behaviour or format task) is a job to do, not a fact to look up: its prompts
offer the passages as reference and never ask the model to abstain, so the rag arm is not
told to refuse a formatting task the passages cannot "answer".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import BeforeValidator
from ragft.service.retrieval import Passage


def require_encodable(text):
    """`text` unchanged, or a ValueError naming its first lone surrogate: JSON can carry one ("\\ud800"), but no
    tokenizer encodes it, so one such question in a batch failed every question batched with it. Checked before
    any other check of the field, whose error would echo the text (and fail to encode); a non-string passes on to
    the type check."""
    try:
        if isinstance(text, str):
            text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"the text holds an unpaired UTF-16 surrogate (U+{ord(text[exc.start]):04X}) at character {exc.start}, "
            "which is not Unicode text: send the character whole (both halves of a surrogate pair) or drop it"
        ) from None
    return text


# Text that goes into a prompt or an error message, as request bodies declare it: a 422 when it cannot be encoded.
PromptText = Annotated[str, BeforeValidator(require_encodable)]

SYSTEM = "You are a concise assistant. Answer in one or two sentences."


@dataclass(frozen=True)
class Example:
    """A worked example for the fewshot arm: a question (with its instruction) and the expected answer."""

    question: str
    answer: str
    instruction: str | None = None


def user_text(question: str, instruction: str | None) -> str:
    return f"{instruction}\n\n{question}" if instruction else question


def format_passages(passages: list[Passage]) -> str:
    return "\n\n".join(f"[{p.citation}]\n{p.text}" for p in passages)


def build_messages(
    question: str,
    *,
    instruction: str | None = None,
    passages: list[Passage] | None = None,
    examples: list[Example] = (),
    abstention_phrase: str,
) -> list[dict[str, str]]:
    """Chat messages for one question; for questions without an instruction, passages switch on the
    answer-only-from-context rule."""
    if instruction:
        system = SYSTEM if passages is None else f"{SYSTEM} Use the passages below where they help.\n\nPassages:\n{format_passages(passages)}"  # fmt: skip
    elif passages is None:
        system = f'{SYSTEM} If you do not know the answer, reply exactly: "{abstention_phrase}"'
    else:
        system = (
            f"{SYSTEM} Answer using only the passages below. If they do not contain the answer, "
            f'reply exactly: "{abstention_phrase}"\n\nPassages:\n{format_passages(passages)}'
        )
    messages = [{"role": "system", "content": system}]
    for ex in examples:
        messages.append({"role": "user", "content": user_text(ex.question, ex.instruction)})
        messages.append({"role": "assistant", "content": ex.answer})
    messages.append({"role": "user", "content": user_text(question, instruction)})
    return messages
