"""How far a run's answering has got: the answers it plans per arm and the time left.

Read by everything that shows a run in progress (`ragft eval`'s progress lines, the job worker's
`progress.eta_s`, the runs page's planned answers), from what the run has stored so far.

Example:
    >>> planned_answers({"knowledge": ["k1", "k2"], "general": ["g1"]}, ["rag", "lora"], training_seeds=1)
    {'rag': 2, 'lora': 3}
    >>> eta_s({"rag": 4}, {"rag": (2, 1000.0)})
    1.0
"""

from __future__ import annotations

from ragft.eval.families import FAMILIES
from ragft.eval.spec import replicate_name, replicated_arm
from ragft.eval.store import Store
from ragft.service.arms import ARMS


def planned_answers(rows: dict[str, list[str]], arms: list[str], training_seeds: int) -> dict[str, int]:
    """Answers a run gives per stored arm: the chosen rows (`rows`: row family -> ids, as the run's meta records
    them) of every family that scores the arm, and again for each extra training seed of an adapter arm."""
    stored = [*arms, *(replicate_name(a, i) for i in range(1, training_seeds) for a in arms if ARMS[a].adapter)]
    return {name: sum(len(ids) for family, ids in rows.items()
                      if family in FAMILIES and FAMILIES[family].scores(ARMS[replicated_arm(name)]))
            for name in stored}  # fmt: skip


def eta_s(planned: dict[str, int], answered: dict[str, tuple[int, float]]) -> float | None:
    """Seconds left in a run's answering: each arm's remaining answers times its own measured cost per answer
    (`answered[arm]` = (answers, summed ms), from the stored predictions), not one flat rate: a rag answer reads a
    long prompt and can cost several base answers. An arm not started yet is priced like the started arms that
    retrieve as it does, else like the dearest started arm (rather late than early). None before any answer."""
    per_answer = {arm: total / n for arm, (n, total) in answered.items() if n}
    if not per_answer:
        return None
    left_ms = 0.0
    for arm, want in planned.items():
        remaining = want - answered.get(arm, (0, 0.0))[0]
        if remaining <= 0:
            continue
        cost = per_answer.get(arm)
        if cost is None:
            retrieves = ARMS[replicated_arm(arm)].retrieve
            alike = [c for a, c in per_answer.items() if ARMS[replicated_arm(a)].retrieve == retrieves]
            cost = sum(alike) / len(alike) if alike else max(per_answer.values())
        left_ms += remaining * cost
    return left_ms / 1000


def answering_eta_s(store: Store, run_id: str, arms: list[str], training_seeds: int) -> float | None:
    """Seconds left in run `run_id`'s answering, from what it has stored so far (`eta_s` of `planned_answers`)."""
    planned = planned_answers(store.run(run_id).meta.get("rows", {}), arms, training_seeds)
    return eta_s(planned, store.arm_costs(run_id))
