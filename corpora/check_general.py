"""How the configured generator does on the general-knowledge probes: `python -m ragft.corpora.check_general`.

Informational only: corpus 1 keeps every probe whatever a model answers. Keeping only the probes the
base model got right would bias forgetting upward: the items a model gets right partly by luck
(a greedy decode that happened to land) are the ones it loses again after any change, so "forgetting"
would be measured on exactly the items most likely to flip. Forgetting is the base-to-arm difference
on the same fixed probes; this script prints the base model's own score for the data card.
"""

from __future__ import annotations

from pathlib import Path

from ragft.corpora.quillmark import GENERAL_PROBES
from ragft.eval.scoring.metrics.knowledge import answer_contained
from ragft.service.arms import ARMS, Query, answer
from ragft.service.runtime import Runtime
from ragft.service.settings import get_settings


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
