"""Reviewers' marks on answers: "this answer is right" or "wrong", stored apart from the measured scores.

A review is one row in the `reviews` table of the results database (one per run, arm and task row; marking
again replaces the earlier mark), with the reviewer's name as entered. Measured scores, results.json and the
report never change: `publish_reviewed` renders a second, reviewed report under
`<reports_dir>/reviewed/<run-id>/`, in which every headline metric that scores a reviewed answer takes the
reviewer's mark (1 for right, 0 for wrong) and the report says how many answers were overridden and by whom.

Example:
    >>> # reviews = Reviews(settings.database)
    >>> # reviews.mark("quillmark-1a2b3c4d5e", "rag", "k2", correct=True, reviewer="Ada")
    >>> # results, folder = publish_reviewed(settings, "quillmark-1a2b3c4d5e")
"""

from __future__ import annotations

import threading
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ragft.eval.scoring.metrics import METRICS, headline, report_families
from ragft.eval.store import Store, connect, now, transaction
from ragft.eval.tasks import TaskRow
from ragft.service.settings import Settings

SCHEMA = """
CREATE TABLE IF NOT EXISTS reviews (
    run_id TEXT NOT NULL,
    arm TEXT NOT NULL,
    row_id TEXT NOT NULL,
    correct INTEGER NOT NULL,
    reviewer TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (run_id, arm, row_id)
);
"""
MAX_REVIEWER_CHARS = 80
# control, format (bidi overrides, zero-width marks), surrogate, private-use, line and paragraph separators
HIDDEN_CATEGORIES = ("Cc", "Cf", "Cs", "Co", "Zl", "Zp")


def reviewer_name(given: str) -> str:
    """A reviewer's name as stored and shown (answer marks, generated rows): whitespace folded to one space, 1 to
    MAX_REVIEWER_CHARS characters, no invisible or control character (ValueError saying which)."""
    name = " ".join(given.split())
    if not name or len(name) > MAX_REVIEWER_CHARS:
        raise ValueError(f"reviewer: give your name (1 to {MAX_REVIEWER_CHARS} characters), as it should appear")
    hidden = [c for c in name if unicodedata.category(c) in HIDDEN_CATEGORIES]
    if hidden:  # bidi overrides and zero-width marks would reorder or hide text in report.md and the review page
        raise ValueError(f"reviewer: the name holds an invisible or control character (U+{ord(hidden[0]):04X}); "
                         "type it as plain text")  # fmt: skip
    return name


@dataclass(frozen=True)
class Review:
    """A reviewer's mark on one arm's answer to one task row."""

    run_id: str
    arm: str
    row_id: str
    correct: bool
    reviewer: str
    created_at: str


class Reviews:
    """A thread-safe handle on the reviews table."""

    def __init__(self, path: Path):
        self._conn = connect(path, SCHEMA)
        self._lock = threading.RLock()

    def close(self) -> None:
        self._conn.close()

    def mark(self, run_id: str, arm: str, row_id: str, *, correct: bool, reviewer: str) -> Review:
        """Store (or replace) the mark on `arm`'s answer to `row_id`."""
        name = reviewer_name(reviewer)
        with transaction(self._conn, self._lock) as conn:
            conn.execute(
                "INSERT OR REPLACE INTO reviews VALUES (?,?,?,?,?,?)", (run_id, arm, row_id, int(correct), name, now())
            )
        return self.for_run(run_id)[(arm, row_id)]

    def clear(self, run_id: str, arm: str, row_id: str) -> None:
        """Take a mark back; the measured score stands alone again."""
        with transaction(self._conn, self._lock) as conn:
            conn.execute("DELETE FROM reviews WHERE run_id=? AND arm=? AND row_id=?", (run_id, arm, row_id))

    def for_run(self, run_id: str) -> dict[tuple[str, str], Review]:
        """Every mark on `run_id`, by (arm, row id)."""
        rows = self._conn.execute(
            "SELECT run_id, arm, row_id, correct, reviewer, created_at FROM reviews WHERE run_id=? ORDER BY arm, row_id",
            (run_id,),
        )
        return {(r[1], r[2]): Review(r[0], r[1], r[2], bool(r[3]), r[4], r[5]) for r in rows}


def apply_reviews(values: dict, reviews: dict[tuple[str, str], Review], rows: dict[str, TaskRow]) -> dict:
    """`values` ((arm, metric) -> {row: value}, as `score_predictions` gives) with every headline metric that
    scores a reviewed answer set to the reviewer's mark; the other metrics stay as measured. A new dict."""
    headlines = {headline(f).name for f in report_families()}
    out = {key: dict(per_row) for key, per_row in values.items()}
    for (arm, name), per_row in out.items():
        if name not in headlines:
            continue
        for row_id in per_row:
            review = reviews.get((arm, row_id))
            if review is not None and row_id in rows:
                right = 1.0 if METRICS[name].higher_is_better else 0.0
                per_row[row_id] = right if review.correct else 1.0 - right
    return out


def review_summary(reviews: dict[tuple[str, str], Review]) -> dict:
    """What a reviewed report says about its overrides: answers and rows overridden, and by whom."""
    by = Counter(r.reviewer for r in reviews.values())
    return {
        "answers_overridden": len(reviews),
        "rows_overridden": len({r.row_id for r in reviews.values()}),
        "right": sum(r.correct for r in reviews.values()),
        "wrong": sum(not r.correct for r in reviews.values()),
        "by": dict(sorted(by.items())),
    }


def reviewed_dir(settings: Settings) -> Path:
    """Where reviewed reports go: apart from the measured ones."""
    return Path(settings.eval.reports_dir) / "reviewed"


def publish_reviewed(settings: Settings, run_id: str, embed=None) -> tuple[dict, Path]:
    """Render the run's report with reviewers' marks in place of the measured headline scores, under
    `reviewed_dir`; the measured results.json and reports are not touched."""
    from ragft.eval.reporting.report import write_report
    from ragft.eval.scoring.results import build_results

    if embed is None:
        from ragft.service import models

        embedder = models.load_embedder(settings.models)
        embed = lambda texts: embedder.encode(texts).tolist()  # noqa: E731
    reviews_db = Reviews(settings.database)
    try:
        reviews = reviews_db.for_run(run_id)
    finally:
        reviews_db.close()
    store = Store(settings.database)
    try:
        results = build_results(
            store, run_id, settings, embed=embed, adjust=lambda values, rows: apply_reviews(values, reviews, rows)
        )
    finally:
        store.close()
    results["review"] = review_summary(reviews) | {
        "measured_report": f"../../{run_id}/report.html"  # from the reviewed report's folder: no server path in it
    }
    return results, write_report(results, reviewed_dir(settings))
