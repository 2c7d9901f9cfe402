"""Predictions made outside ragft, scored exactly like its own arms (`ragft score`).

A team compares a hosted fine-tune or its production RAG with ragft's arms by answering the
corpus's test rows with it and handing the answers over as JSON lines:

    {"row_id": "k-017", "arm": "prod_rag", "text": "The K2 costs $249.", "passages": ["..."]}
    {"row_id": "f-003", "arm": "prod_rag", "text": "...", "phase": "after_update"}

`passages` (optional) are what the system retrieved, as texts or as {"doc_id", "text"}
objects: given, the arm counts as retrieving and retrieval metrics apply. A plain text is
traced to the corpus document that contains it (whitespace-insensitive), so recall@k and MRR
work for chunks of the same documents; a text found in no document counts as no source. `phase` is "after_update" for freshness rows (answered after the
documents in updates/ were applied) and absent otherwise. An arm named like a ragft arm keeps
that arm's facts; any other name becomes an arm of its own, whose cost is unknown. The rows
become a stored run, so results.json, report.md and report.html are the same as `ragft eval`'s.

Example:
    >>> # run_id = import_predictions(settings, Path("corpora/quillmark"), Path("prod.jsonl"), name="prod-vs-ragft")
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ragft.eval.families import FAMILIES
from ragft.eval.spec import RunSpec
from ragft.eval.store import Prediction, RunNotFound, Store, StoredPassage
from ragft.eval.tasks import load_tasks
from ragft.service.arms import UnknownArm, external_arm
from ragft.service.documents import load_documents
from ragft.service.settings import Settings

PHASES = {None: "main", "main": "main", "after_update": "fresh"}
RUN_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class PredictionsError(ValueError):
    """A predictions file that cannot be scored; every problem is listed with its line and field."""

    def __init__(self, path: Path, problems: list[str]):
        self.problems = problems
        shown = "\n".join(f"  {path}:{p}" for p in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__(f"{len(problems)} problem(s) in the predictions file:\n{shown}{more}")


@dataclass(frozen=True)
class ExternalRow:
    line: int
    arm: str
    row_id: str
    phase: str
    text: str
    passages: tuple[tuple[str | None, str], ...] | None  # (doc id if given, text)


def _parse_line(lineno: int, line: str, problems: list[str]) -> ExternalRow | None:
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        problems.append(f"{lineno}: not valid JSON ({exc.msg} at column {exc.colno})")
        return None
    if not isinstance(data, dict):
        problems.append(f"{lineno}: a prediction must be a JSON object")
        return None
    unknown = sorted(set(data) - {"row_id", "arm", "text", "passages", "phase"})
    if unknown:
        problems.append(f"{lineno}: unknown field(s) {unknown}; use row_id, arm, text, passages, phase")
    for field in ("row_id", "arm", "text"):
        if not isinstance(data.get(field), str):
            problems.append(f"{lineno}: field '{field}' is missing or not a string")
    passages = data.get("passages")
    if passages is not None and not (isinstance(passages, list) and all(_passage_ok(p) for p in passages)):
        problems.append(f'{lineno}: field \'passages\' must be a list of texts or {{"doc_id", "text"}} objects')
    if data.get("phase") not in PHASES:
        problems.append(f"{lineno}: field 'phase' must be \"after_update\" (freshness rows) or absent")
    if problems and problems[-1].startswith(f"{lineno}:"):
        return None
    if passages is not None:
        passages = tuple((p.get("doc_id"), p["text"]) if isinstance(p, dict) else (None, p) for p in passages)
    return ExternalRow(lineno, data["arm"], data["row_id"], PHASES[data.get("phase")], data["text"], passages)


def _passage_ok(p) -> bool:
    if isinstance(p, str):
        return True
    return isinstance(p, dict) and isinstance(p.get("text"), str) and isinstance(p.get("doc_id", ""), str)


def _trace(text: str, documents: dict[str, str]) -> str:
    """The id of the corpus document holding `text` (whitespace-insensitive), or 'unknown'."""
    needle = " ".join(text.split())
    return next((doc_id for doc_id, body in documents.items() if needle and needle in body), "unknown")


def read_predictions(path: Path, test_rows: dict) -> list[ExternalRow]:
    """Every prediction in the file, checked against the corpus's test rows; PredictionsError lists what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise PredictionsError(path, ["0: no such file"])
    problems: list[str] = []
    rows: list[ExternalRow] = []
    seen: dict[tuple[str, str, str], int] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        parsed = _parse_line(lineno, line, problems)
        if parsed is None:
            continue
        task = test_rows.get(parsed.row_id)
        if task is None:
            problems.append(f"{lineno}: row_id '{parsed.row_id}' is not a test row of this corpus")
            continue
        wanted = FAMILIES[task.family].phase
        if parsed.phase != wanted:
            hint = 'add "phase": "after_update"' if wanted == "fresh" else 'remove "phase"'
            problems.append(f"{lineno}: row '{parsed.row_id}' is a {task.family} row: {hint}")
            continue
        key = (parsed.arm.lower(), parsed.row_id, parsed.phase)
        if key in seen:
            problems.append(f"{lineno}: duplicate prediction for arm '{parsed.arm}', row '{parsed.row_id}' "
                            f"(first at line {seen[key]})")  # fmt: skip
            continue
        seen[key] = lineno
        rows.append(parsed)
    if not rows and not problems:
        problems.append("0: the file holds no predictions")
    if problems:
        raise PredictionsError(path, problems)
    return rows


def import_predictions(settings: Settings, corpus: Path, path: Path, name: str | None = None) -> str:
    """Store the file's predictions as a run of `corpus` and return its id (the same file gives the same run)."""
    import re

    corpus = Path(corpus)
    tasks = load_tasks(corpus)
    test_rows = {r.id: r for r in tasks if r.split == "test"}
    rows = read_predictions(path, test_rows)
    try:
        arm_of = {r.line: external_arm(r.arm, retrieve=r.passages is not None) for r in rows}
    except UnknownArm as exc:
        raise PredictionsError(Path(path), [f"0: {exc}"]) from exc
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    run_id = name or f"{corpus.resolve().name}-score-{digest[:10]}"
    if not re.match(RUN_NAME_PATTERN, run_id):
        raise ValueError(f"run name '{run_id}' must be 1-64 letters, digits, '.', '_' or '-'")
    answered = {r.row_id for r in rows}
    families = [f.name for f in FAMILIES.values() if any(test_rows[i].family in f.row_families for i in answered)]
    arms = {a.name: a for a in arm_of.values()}
    spec = RunSpec(corpus=corpus, arms=list(arms), families=families, seed=settings.generation.seed, run_id=run_id,
                   extra={"scored_from": Path(path).name, "predictions_sha256": digest})  # fmt: skip
    store = Store(settings.database)
    try:
        try:
            existing = store.run(run_id)
        except RunNotFound:
            existing = None
        if existing is not None:
            if existing.config.get("spec", {}).get("extra", {}).get("predictions_sha256") != digest:
                raise ValueError(f"a run named '{run_id}' already exists with other predictions; pick another --name")
            return run_id
        external = {a.name: {"label": a.label, "retrieve": a.retrieve} for a in arms.values() if a.external}
        store.create_run(run_id, corpus.resolve().name, {"spec": spec.model_dump(mode="json"),
                                                          "settings": settings.recorded(), "external_arms": external})  # fmt: skip
        by_family: dict[str, list[str]] = {}
        for i in sorted(answered):
            by_family.setdefault(test_rows[i].family, []).append(i)
        store.update_meta(run_id, rows=by_family, scored_from=Path(path).name)
        documents = {d.doc_id: " ".join(d.text.split()) for d in load_documents(corpus / "documents")}
        store.add_predictions(run_id, [
            Prediction(arm_of[r.line].name, r.row_id, r.phase, r.text,
                       tuple(StoredPassage(f"{r.row_id}#{k}", doc or _trace(t, documents), t)
                             for k, (doc, t) in enumerate(r.passages or ())),
                       0, 0, 0.0, 0.0, 1)
            for r in rows
        ])  # fmt: skip
        store.set_status(run_id, "done")
    finally:
        store.close()
    return run_id
