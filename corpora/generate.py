"""Regenerate the shipped corpora: `python -m ragft.corpora.generate [OUT_DIR]`.

Deterministic: the same code gives byte-identical files (a test checks it), so the
committed files are exactly what this script writes.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ragft.corpora import entityq, ostwick, quillmark
from ragft.corpora.common import write_files

GENERATORS = {quillmark.NAME: quillmark.build, ostwick.NAME: ostwick.build, entityq.NAME: entityq.build}


def generate(out_dir: Path) -> list[Path]:
    """Write every shipped corpus under `out_dir`; returns the corpus folders."""
    folders = []
    for name, build in GENERATORS.items():
        write_files(build(), Path(out_dir) / name)
        folders.append(Path(out_dir) / name)
    return folders


if __name__ == "__main__":
    for folder in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent):
        print(f"wrote {folder}")
