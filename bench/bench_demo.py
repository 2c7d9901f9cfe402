"""Wall time of `ragft demo` from nothing (fresh data folder: GGUF conversion, index, training, every arm),
then of a second run that reuses the index, the adapters and the stored predictions.

Usage: python bench/bench_demo.py [--keep DIR]
The issue's target is a first run under 15 minutes on the 2-core development machine.
Prints figures only; asserts nothing (this machine is shared and noisy).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_demo(root: Path) -> tuple[float, str]:
    env = os.environ | {
        "RAGFT_DATA_DIR": str(root),
        "RAGFT_ARTIFACT_DIR": str(root / "artifacts"),
        "RAGFT_EVAL__REPORTS_DIR": str(root / "reports"),
        "HF_HUB_OFFLINE": "1",
    }
    ragft = Path(sys.executable).with_name("ragft")
    t0 = time.perf_counter()
    done = subprocess.run([str(ragft), "demo"], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"ragft demo failed:\n{done.stderr[-3000:]}")
    stages = [line for line in done.stderr.splitlines() if re.match(r"\[\s*\d+s\] \w+", line)]
    firsts = {}
    for line in stages:
        at, stage = re.match(r"\[\s*(\d+)s\] (\w+)", line).groups()
        firsts.setdefault(stage, int(at))
    print("  stage start times (s):", firsts)
    return seconds, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keep", type=Path, help="Use (and keep) this data folder instead of a temporary one.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        first, out = run_demo(root)
        print(f"first ragft demo (from nothing): {first / 60:.1f} min")
        second, _ = run_demo(root)
        print(f"second ragft demo (everything reused): {second:.0f} s")
        print(out)


if __name__ == "__main__":
    main()
