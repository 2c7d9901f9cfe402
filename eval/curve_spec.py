"""The learning-curve contract: `CurveSpec` (sizes, noise, arms, families; defaults resolved once), its
points and its id, shared by the run, the analysis and the report."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from ragft.eval.families import FAMILIES, FamilyNames
from ragft.eval.spec import check_seed
from ragft.service.arms import ARMS, Arm, ArmNames, curve_defaults, runnable
from ragft.service.settings import Settings

ALL = "all"
Size = Annotated[int, Field(ge=1)] | Literal["all"]
SCHEMA = "curve/1"


def learns(arm: Arm) -> bool:
    """The arm reads train rows: its adapter is trained on them, or its prompt shows them (fewshot)."""
    return arm.adapter is not None or arm.fewshot


def parse_sizes(text: str) -> list[int | str]:
    """`--rows`: comma-separated positive row counts and `all`, ascending, `all` last."""
    sizes: set[int] = set()
    full = False
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        if item.lower() == ALL:
            full = True
        elif item.isdigit() and int(item) > 0:
            sizes.add(int(item))
        else:
            raise ValueError(f"--rows: '{item}' is neither a positive number of rows nor 'all' (e.g. 10,25,50,all)")
    if not sizes and not full:
        raise ValueError("--rows: give at least one size, e.g. 10,25,50,100,all")
    return [*sorted(sizes), *([ALL] if full else [])]


def parse_noise(text: str) -> list[float]:
    """`--noise`: comma-separated shares of train rows given a wrong target, each in [0, 1), ascending."""
    shares = set()
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        try:
            share = float(item)
        except ValueError:
            raise ValueError(f"--noise: '{item}' is not a number; give shares in [0, 1), e.g. 0,0.1,0.3") from None
        if not 0 <= share < 1:
            raise ValueError(f"--noise: {item} is outside [0, 1): the share of train rows given a wrong target")
        shares.add(share)
    return sorted(shares) or [0.0]


class CurveSpec(BaseModel):
    """What a curve measures: one model from the CLI options or the HTTP request through the jobs table to the
    curve's results. Build it with `CurveSpec.resolve`, which fills the defaults from settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    corpus: Path
    arms: ArmNames = Field(min_length=1, description="Arms; at least one must learn from train rows.")
    families: FamilyNames = Field(min_length=1, description="Report families (eval/families.py).")
    rows: list[Size] = Field(min_length=1, description="Train rows per family at each point; 'all': every row.")
    noise: list[float] = Field([0.0], min_length=1, description="Shares of train rows given a wrong target.")
    limit: int | None = Field(None, ge=1, description="Test rows per family (a seeded sample); None: all.")
    seed: int = Field(0, description="Seeds the subsets, the noise, the test-row sample and the statistics.")

    @field_validator("rows")
    @classmethod
    def _sizes(cls, rows: list) -> list:
        return parse_sizes(",".join(str(r) for r in rows))

    @field_validator("noise")
    @classmethod
    def _shares(cls, noise: list[float]) -> list[float]:
        return parse_noise(",".join(str(x) for x in noise))

    @field_validator("arms")
    @classmethod
    def _one_learner(cls, arms: list[str]) -> list[str]:
        if not any(learns(ARMS[a]) for a in arms):
            learners = ", ".join(name for name in runnable() if learns(ARMS[name]))
            raise ValueError(f"arms {arms} learn nothing from train rows: add one of {learners}")
        return arms

    @classmethod
    def resolve(
        cls,
        settings: Settings,
        corpus: Path,
        *,
        arms: list[str] | None = None,
        families: list[str] | None = None,
        rows: list | None = None,
        noise: list[float] | None = None,
        limit: int | None = None,
        seed: int | None = None,
    ) -> CurveSpec:
        """Defaults: the arms marked `in_default_curve` (base, fewshot, rag and lora); eval.families (else every
        family); 10,25,50,100,all rows; no noise; eval.limit; generation.seed."""
        return cls(
            corpus=Path(corpus),
            arms=arms or curve_defaults(),
            families=families or settings.eval.families or list(FAMILIES),
            rows=rows or [10, 25, 50, 100, ALL],
            noise=noise or [0.0],
            limit=limit if limit is not None else settings.eval.limit,
            seed=check_seed(seed if seed is not None else settings.generation.seed),
        )


# --- nested subsets -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Corruption:
    """One train row given a wrong target: which field, what it was, what it became (JSON values as JSON)."""

    row_id: str
    family: str
    field: str
    was: str
    now: str
    same_type: bool = True  # knowledge: another answer of the question's answer type (else: of any type)


@dataclass(frozen=True)
class CurvePoint:
    """One point of a curve: its size and noise, the corpus (view) it ran on, the run, and what it trained on."""

    size: int | str
    noise: float
    corpus: str  # folder
    run_id: str
    train_rows: dict[str, int]  # per trainable family
    corrupted: tuple[Corruption, ...] = ()


def curve_id_for(spec: CurveSpec, reference: str | None, points: list[CurvePoint]) -> str:
    """A name that changes whenever a run of the curve or what it asks changes (its runs are content hashes)."""
    key = [spec.model_dump(mode="json", exclude={"corpus"}), reference, [p.run_id for p in points]]
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
    return f"{Path(spec.corpus).resolve().name}-curve-{digest}"


# --- results ------------------------------------------------------------------------------------------------
