"""Check the general-knowledge probe candidates against a generator: `python -m corpora.check_general`.

Forgetting can only be measured on what the base model knew, so corpus 1 keeps only the
probes the embedded default answers correctly (greedy, base-arm prompt, answer contained).
Run it again after changing the probes or the default model, and copy the failures into
`quillmark.GENERAL_FAILED`.
"""

from __future__ import annotations

from pathlib import Path

from corpora.quillmark import GENERAL_PROBES
from eval.metrics.knowledge import answer_contained
from service.arms import ARMS, Query, answer
from service.runtime import Runtime
from service.settings import get_settings


def main() -> None:
    runtime = Runtime(get_settings(), Path("corpora/quillmark"))
    answers = answer(ARMS["base"], runtime, [Query(q) for q, _ in GENERAL_PROBES])
    failed = [
        (q, a.text)
        for (q, accepted), a in zip(GENERAL_PROBES, answers, strict=True)
        if not answer_contained(a.text, accepted)
    ]
    for q, text in failed:
        print(f"FAILED {q!r}: {text!r}")
    correct = len(GENERAL_PROBES) - len(failed)
    print(
        f"{correct}/{len(GENERAL_PROBES)} correct ({correct / len(GENERAL_PROBES):.0%}) with {runtime.generator().model_id}"
    )


if __name__ == "__main__":
    main()
