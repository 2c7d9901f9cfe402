"""The run contract: what a run answers (`RunSpec`), how its training-seed replicates are named, and how a caller
stops it. One shape of it travels from the CLI options or the HTTP request through the jobs table to the run's
stored config and its results; the runner, the job worker and results all import it from here.

Example:
    >>> # spec = RunSpec.resolve(settings, Path("corpora/quillmark"), arms=["base", "rag"], families=["knowledge"])
    >>> replicate_name("lora", 1), replicated_arm("lora@seed1")
    ('lora@seed1', 'lora')
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from ragft.eval.families import FAMILIES, FamilyName, FamilyNames
from ragft.service.arms import ArmNames, external_arm, runnable
from ragft.service.settings import RowCount, Settings

Progress = Callable[[str, int, int], None]  # (stage description, done, total)


class RunCancelled(RuntimeError):
    """The caller asked the run to stop; what was answered so far is stored and the run can be resumed."""


def known_family_limits(limits: dict) -> dict:
    """`limits` unchanged, or a ValueError naming the keys that are no registered family."""
    unknown = sorted(set(limits) - set(FAMILIES))
    if unknown:
        raise ValueError(f"family_limits names no family: {', '.join(unknown)} (known: {', '.join(FAMILIES)})")
    return limits


# Per row family, test rows that replace a run's `limit` for it (None: every row); validated wherever it arrives.
# The keys' enum reaches the OpenAPI schema as propertyNames, so the schema says what the validator accepts.
FamilyLimits = Annotated[dict[FamilyName, RowCount | None], AfterValidator(known_family_limits)]


# numpy's seeded generators take 0 .. 2**32 - 1; half of that leaves room for the seeds derived from one
# (training seeds seed+1, seed+2, ...). A seed of -1 used to answer every row and then fail when the report was built.
SEED_MAX = 2**31 - 1
Seed = Annotated[int, Field(ge=0, le=SEED_MAX, description=f"A seed from 0 to {SEED_MAX}.")]


def check_seed(seed: int) -> int:
    """`seed`, or a ValueError naming the range: checked before a run starts, not after hours of answers."""
    if not 0 <= seed <= SEED_MAX:
        raise ValueError(f"seed {seed} is out of range: choose one from 0 to {SEED_MAX}")
    return seed


class RunSpec(BaseModel):
    """What a run answers: one model from the HTTP request or CLI options through the jobs table to the run's
    stored config and its results. Build it with `RunSpec.resolve`, which fills the defaults from settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    corpus: Path
    arms: ArmNames = Field(min_length=1, description="Arm ids ('rag+lora' accepted), duplicates dropped.")
    families: FamilyNames = Field(min_length=1, description="Report families (eval/families.py).")
    limit: int | None = Field(None, ge=1, description="Test rows per family (a seeded sample); None: all.")
    family_limits: FamilyLimits = Field(
        default_factory=dict,
        description="Per row family, test rows that replace `limit` for it (None: every row), e.g. "
        '{"behaviour": null} to answer every behaviour row in a run sampled at 40 elsewhere.',
    )
    seed: int = 0
    run_id: str | None = None
    include_unreviewed: bool = Field(
        False, description="Count generated rows no person has reviewed yet (the report says so on its first line)."
    )
    extra: dict = Field(default_factory=dict, description='Recorded in the config, e.g. {"demo": true}.')

    @classmethod
    def resolve(
        cls,
        settings: Settings,
        corpus: Path,
        *,
        arms: list[str] | None = None,
        families: list[str] | None = None,
        limit: int | None = None,
        family_limits: dict[str, int | None] | None = None,
        seed: int | None = None,
        run_id: str | None = None,
        extra: dict | None = None,
        include_unreviewed: bool = False,
    ) -> RunSpec:
        """The one place defaults are resolved: every arm, eval.families (else every registered family),
        eval.limit and generation.seed."""
        return cls(
            corpus=Path(corpus),
            arms=arms or runnable(),
            families=families or settings.eval.families or list(FAMILIES),
            limit=limit if limit is not None else settings.eval.limit,
            family_limits=family_limits or {},
            seed=check_seed(seed if seed is not None else settings.generation.seed),
            run_id=run_id,
            include_unreviewed=include_unreviewed,
            extra=extra or {},
        )


REPLICATE_MARK = "@seed"


def replicate_name(arm: str, replicate: int) -> str:
    """The arm name answers of training seed + `replicate` are stored under ("lora@seed1"; the first: "lora")."""
    return f"{arm}{REPLICATE_MARK}{replicate}" if replicate else arm


def replicated_arm(stored: str) -> str:
    """The arm a stored answer belongs to, whichever training seed gave it ("lora@seed1" -> "lora")."""
    return stored.split(REPLICATE_MARK)[0]


def register_external_arms(config: dict) -> None:
    """Make a scored run's own arms known again (in a new process, `ragft report` re-renders it)."""
    for name, facts in config.get("external_arms", {}).items():
        external_arm(facts.get("label", name), facts.get("retrieve", False))
