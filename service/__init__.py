"""ragft service: corpora in, indexes, models and arms, answers out."""

import logging
import os
import sys

# OpenMP's default active waiting made 2-thread PyTorch 15-20x slower whenever anything else used the CPU (an eval
# job beside live queries); OpenMP reads this once, when torch loads, so it is set before any module imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def spin_before_sleep(rounds: int) -> None:
    """Let torch's OpenMP threads spin `rounds` times (libgomp's GOMP_SPINCOUNT, about 100 a microsecond) before
    they sleep, on a machine the job has to itself (`models.omp_spin_count`). Sleeping at once costs every parallel
    region a wake-up: training ran 1.28x faster alone at 5,000-20,000 rounds, but beside another busy process the
    spinning threads took its CPU. libgomp reads the count when torch loads, so a process that has already
    imported torch keeps its count, and says so."""
    if str(rounds) == os.environ.get("GOMP_SPINCOUNT", "0"):
        return
    if "torch" in sys.modules:
        logging.getLogger(__name__).warning(
            "models.omp_spin_count=%d is not applied: torch is already loaded; set GOMP_SPINCOUNT=%d (or "
            "RAGFT_MODELS__OMP_SPIN_COUNT) before the process starts",
            rounds,
            rounds,
        )
        return
    os.environ["GOMP_SPINCOUNT"] = str(rounds)
