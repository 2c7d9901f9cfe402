"""Making a corpus from a team's own files: a folder of documents, a sheet of questions, a sheet of examples.

`ragft corpus init FOLDER --documents DIR --questions FILE --examples FILE` turns what a team has into ragft's
corpus format (corpora/README.md), so nobody writes task rows by hand:

- questions (CSV, TSV, XLSX or JSONL) become knowledge rows, each answer located in the converted documents
  (normalised as the knowledge metric normalises values: "$1,250" is "1250 dollars"), which fills
  `source_docs`; a question without an answer, or marked unanswerable in a kind column, becomes an abstention
  row. A question whose answer no document holds is listed and left out unless the team keeps it
  (`keep_unlocated`), since the RAG arm could never find it. The team's questions are all test rows of the
  `unseen` view: the fine-tuned arm learns the documents themselves, never these answers.
- examples (input -> expected) become behaviour rows: a closed label set when the expected values are few
  distinct strings, a JSON Schema inferred from expected JSON objects, otherwise free text judged by the style
  rules the team names. Splits are seeded and stratified by label, with at least `test_share` test rows.

Bad input (a missing column, an empty question, duplicate questions, an over-long cell) is an error naming the
file, row and column; the corpus folder is written whole in a temporary folder and renamed into place, so it
appears complete or not at all.

Example:
    >>> plan = plan_corpus(Path("docs"), questions=Path("faq.csv"))  # doctest: +SKIP
    >>> write_corpus(plan, Path("corpora/mine"))  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
import random
import shutil
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ragft.eval.scoring.metrics.knowledge import stated_in
from ragft.eval.tasks import TaskRow
from ragft.service.documents import Document, DocumentScan, scan_documents
from ragft.service.folders import sync_folder
from ragft.service.training_data import normalise_text

# Column names recognised without a flag (lower-cased, spaces and dashes as underscores), in order of preference.
QUESTION_COLUMNS = ("question", "query", "prompt", "q")
ANSWER_COLUMNS = ("answer", "answers", "expected_answer", "expected", "gold", "a")
SOURCE_COLUMNS = ("source", "sources", "source_docs", "document", "doc", "file")
SPLIT_COLUMNS = ("split",)
KIND_COLUMNS = ("kind", "type", "answerable")
INPUT_COLUMNS = ("input", "text", "message", "prompt", "question")
EXPECTED_COLUMNS = ("expected", "expected_output", "output", "label", "desired_output", "answer")
INSTRUCTION_COLUMNS = ("instruction", "instructions")
UNANSWERABLE = {"unanswerable", "abstain", "abstention", "no_answer", "none", "false", "no", "n"}
ANSWER_SEPARATOR = "|"  # several accepted answers in one cell: "$249 | 249 dollars"
MAX_CELL_CHARS = 4000  # a longer cell is a pasted document, not a question or an answer
MAX_LABELS = 12  # expected values with at most this many distinct strings (each used twice or more) are labels


class SheetError(ValueError):
    """Bad input in a team's sheet; the message names the file, row and column, and the fix."""


@dataclass(frozen=True)
class Sheet:
    """A table file's rows as dicts keyed by normalised column name, with the line/row number each came from."""

    path: Path
    columns: list[str]
    rows: list[tuple[int, dict[str, str]]]

    def column(self, wanted: str | None, names: tuple[str, ...], what: str, required: bool = True) -> str | None:
        """The column to read `what` from: the one the team named, else the first recognised name."""
        if wanted is not None:
            key = _key(wanted)
            if key not in self.columns:
                raise SheetError(
                    f"{self.path}: no column '{wanted}' (for {what}); its columns are: {', '.join(self.columns)}"
                )
            return key
        for name in names:
            if name in self.columns:
                return name
        if required:
            raise SheetError(
                f"{self.path}: no {what} column; name one of {', '.join(names)}, or pass its name with "
                f"--{what.replace(' ', '-')}-column (columns found: {', '.join(self.columns) or 'none'})"
            )
        return None


def _key(name: str) -> str:
    return "_".join(str(name).strip().lower().replace("-", " ").split())


def read_sheet(path: Path, sheet: str | None = None) -> Sheet:
    """Rows of a CSV, TSV, XLSX or JSONL file; the first row of a CSV/TSV/XLSX names the columns."""
    path = Path(path)
    if not path.is_file():
        raise SheetError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv", ".txt"):
        text = path.read_bytes().decode("utf-8-sig", errors="replace")
        delimiter = "\t" if suffix == ".tsv" else _sniff(text)
        table = list(csv.reader(text.splitlines(), delimiter=delimiter))
        return _from_table(path, table, first_line=1)
    if suffix in (".xlsx", ".xlsm"):
        import openpyxl

        try:
            book = openpyxl.load_workbook(path, read_only=True, data_only=True)
        except Exception as exc:  # openpyxl raises zip, XML and key errors for a damaged or mislabelled file
            raise SheetError(f"{path}: not a readable Excel workbook ({type(exc).__name__}: {exc})") from exc
        if sheet is not None and sheet not in book.sheetnames:
            raise SheetError(f"{path}: no sheet '{sheet}'; its sheets are: {', '.join(book.sheetnames)}")
        ws = book[sheet] if sheet else book.worksheets[0]
        table = [["" if c is None else str(c) for c in row] for row in ws.iter_rows(values_only=True)]
        return _from_table(path, table, first_line=1)
    if suffix == ".jsonl":
        rows, columns = [], []
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SheetError(f"{path}:{n}: not valid JSON ({exc.msg})") from exc
            if not isinstance(data, dict):
                raise SheetError(f"{path}:{n}: each line must be a JSON object")
            row = {_key(k): v if isinstance(v, str) else json.dumps(v, ensure_ascii=False) for k, v in data.items()}
            columns.extend(k for k in row if k not in columns)
            rows.append((n, row))
        return Sheet(path, columns, rows)
    raise SheetError(f"{path}: unknown sheet type '{suffix}'; give a .csv, .tsv, .xlsx or .jsonl file")


def _sniff(text: str) -> str:
    head = "\n".join(text.splitlines()[:20])
    try:
        return csv.Sniffer().sniff(head, delimiters=",;\t").delimiter
    except csv.Error:
        return ","


def _from_table(path: Path, table: list[list[str]], first_line: int) -> Sheet:
    table = [row for row in table if any(str(c).strip() for c in row)]
    if not table:
        raise SheetError(f"{path}: the sheet is empty; its first row must name the columns")
    header = [_key(c) for c in table[0]]
    if len(set(h for h in header if h)) != len([h for h in header if h]):
        dupes = [h for h, n in Counter(header).items() if n > 1 and h]
        raise SheetError(f"{path}: column(s) {', '.join(dupes)} appear twice in the header row; rename one")
    rows = []
    for n, values in enumerate(table[1:], start=first_line + 1):
        rows.append((n, {h: str(v).strip() for h, v in zip(header, values, strict=False) if h}))
    return Sheet(path, [h for h in header if h], rows)


@dataclass
class CorpusPlan:
    """What `ragft corpus init` will write, and what it found on the way (printed for the team)."""

    scan: DocumentScan
    documents_dir: Path
    rows: list[TaskRow] = field(default_factory=list)
    unlocated: list[str] = field(default_factory=list)  # "faq.csv:7: answer '$9' is in no document"
    kept_unlocated: bool = False
    schema: dict | None = None  # the JSON Schema inferred from expected objects, for the team to confirm
    behaviour_kind: str | None = None  # "labels", "json" or "style"
    notes: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)  # what each input was, for the data card


def _cell(sheet: Sheet, line: int, row: dict, column: str | None) -> str:
    value = (row.get(column) or "").strip() if column else ""
    if len(value) > MAX_CELL_CHARS:
        raise SheetError(
            f"{sheet.path}:{line}: column '{column}' holds {len(value)} characters (the limit is {MAX_CELL_CHARS}); "
            "a question, answer or example must be short: put long text in the documents folder"
        )
    return value


class _Locator:
    """Finds which documents state an answer, normalised as the knowledge metric reads replies."""

    def __init__(self, documents: list[Document]):
        self.documents = documents

    def find(self, answers: list[str], named: str | None) -> list[str]:
        """Ids of the documents stating one of `answers` (only the named source, when it states one)."""
        found = [d.doc_id for d in self.documents if any(stated_in(d.text, a) for a in answers)]
        if named:
            wanted = self.resolve(named)
            if wanted in found:
                return [wanted]
        return found[:3]  # an answer many documents state (a year, "yes") cites its first three

    def resolve(self, named: str) -> str | None:
        """A source cell ("report.pdf", "reports/report", "Report.PDF") as a document id, or None."""
        key = named.strip().lower()
        for d in self.documents:
            candidates = {d.doc_id.lower(), d.source.lower(), Path(d.source).name.lower(), Path(d.source).stem.lower()}
            if key in candidates:
                return d.doc_id
        return None


def plan_corpus(
    documents: Path,
    questions: Path | None = None,
    examples: Path | None = None,
    *,
    columns: dict[str, str | None] | None = None,
    sheet: str | None = None,
    keep_unlocated: bool = False,
    test_share: float = 0.3,
    seed: int = 0,
    instruction: str | None = None,
    style: dict | None = None,
) -> CorpusPlan:
    """Read everything, locate answers and infer labels or a schema; raises SheetError for bad input."""
    if questions is None and examples is None:
        raise SheetError("give --questions FILE, --examples FILE or both: a corpus needs rows to score")
    if not 0 < test_share < 1:
        raise SheetError(f"test share {test_share} must lie between 0 and 1")
    columns = columns or {}
    plan = CorpusPlan(scan_documents(documents), Path(documents))
    plan.kept_unlocated = keep_unlocated
    if questions is not None:
        _add_questions(plan, read_sheet(questions, sheet), columns, keep_unlocated, test_share, seed)
        plan.sources["questions"] = Path(questions).name
    if examples is not None:
        _add_examples(plan, read_sheet(examples, sheet), columns, test_share, seed, instruction, style or {})
        plan.sources["examples"] = Path(examples).name
    if not plan.rows:
        raise SheetError("no task rows came out of the sheets: every question was unlocated (see above)")
    return plan


def _add_questions(plan, sheet: Sheet, columns, keep_unlocated: bool, test_share: float, seed: int) -> None:
    q_col = sheet.column(columns.get("question"), QUESTION_COLUMNS, "question")
    a_col = sheet.column(columns.get("answer"), ANSWER_COLUMNS, "answer", required=False)
    s_col = sheet.column(columns.get("source"), SOURCE_COLUMNS, "source", required=False)
    split_col = sheet.column(columns.get("split"), SPLIT_COLUMNS, "split", required=False)
    kind_col = sheet.column(columns.get("kind"), KIND_COLUMNS, "kind", required=False)
    locator = _Locator(plan.scan.documents)
    seen: dict[str, int] = {}
    answerable, unanswerable = [], []
    for line, row in sheet.rows:
        question = _cell(sheet, line, row, q_col)
        if not question:
            raise SheetError(f"{sheet.path}:{line}: column '{q_col}' is empty; every row needs a question")
        norm = normalise_text(question)
        if norm in seen:
            raise SheetError(
                f"{sheet.path}:{line}: the question repeats row {seen[norm]} ({question!r}); remove one, or merge "
                f"their answers into one cell separated by '{ANSWER_SEPARATOR}'"
            )
        seen[norm] = line
        answers = [a.strip() for a in _cell(sheet, line, row, a_col).split(ANSWER_SEPARATOR) if a.strip()]
        kind = _key(_cell(sheet, line, row, kind_col))
        split = _split_cell(sheet, line, row, split_col)
        if kind in UNANSWERABLE or not answers:
            unanswerable.append((line, question, split))
            continue
        named = _cell(sheet, line, row, s_col) or None
        if named and locator.resolve(named) is None:
            raise SheetError(
                f"{sheet.path}:{line}: column '{s_col}' names '{named}', which is no document in {plan.documents_dir}"
                " (give a file name or document id, or leave the cell empty)"
            )
        found = locator.find(answers, named)
        if not found:
            plan.unlocated.append(f"{sheet.path.name}:{line}: answer {answers[0]!r} is in no document ({question!r})")
            if not keep_unlocated:
                continue
        answerable.append((line, question, answers, found, split))
    for line, question, answers, found, split in answerable:
        data = {"id": f"q-{line:04d}", "family": "knowledge", "split": split or "test", "question": question,
                "answers": answers, "source_docs": found, "tags": {"origin": "imported"}}  # fmt: skip
        if (split or "test") == "test":
            data["kind"] = "unseen"  # the fine-tuned arm learns the documents, never these answers
        plan.rows.append(TaskRow.model_validate(data))
    for line, question, split in unanswerable:
        plan.rows.append(
            TaskRow.model_validate(
                {
                    "id": f"a-{line:04d}",
                    "family": "abstention",
                    "split": split or "test",
                    "question": question,
                    "tags": {"origin": "imported"},
                }
            )  # fmt: skip
        )
    if plan.unlocated and not keep_unlocated:
        plan.notes.append(
            f"{len(plan.unlocated)} question(s) left out: no document states their answer, so the RAG arm could never "
            "find it. Fix the answer's wording, add the document, or keep them with --keep-unlocated."
        )


def _split_cell(sheet: Sheet, line: int, row: dict, column: str | None) -> str | None:
    value = _key(_cell(sheet, line, row, column))
    if not value:
        return None
    if value in ("train", "training"):
        return "train"
    if value in ("test", "eval", "evaluation", "held_out", "heldout"):
        return "test"
    raise SheetError(f"{sheet.path}:{line}: column '{column}' says {value!r}; use 'train' or 'test'")


def _add_examples(plan, sheet: Sheet, columns, test_share, seed, instruction, style) -> None:
    in_col = sheet.column(columns.get("input"), INPUT_COLUMNS, "input")
    out_col = sheet.column(columns.get("expected"), EXPECTED_COLUMNS, "expected")
    split_col = sheet.column(columns.get("split"), SPLIT_COLUMNS, "split", required=False)
    ins_col = sheet.column(columns.get("instruction"), INSTRUCTION_COLUMNS, "instruction", required=False)
    examples = []
    seen: dict[str, int] = {}
    for line, row in sheet.rows:
        given = _cell(sheet, line, row, in_col)
        expected = _cell(sheet, line, row, out_col)
        if not given or not expected:
            empty = in_col if not given else out_col
            raise SheetError(f"{sheet.path}:{line}: column '{empty}' is empty; every example needs an input and an expected output")  # fmt: skip
        norm = normalise_text(given)
        if norm in seen:
            raise SheetError(f"{sheet.path}:{line}: the input repeats row {seen[norm]}; remove one of them")
        seen[norm] = line
        examples.append((line, given, expected, _cell(sheet, line, row, ins_col), _split_cell(sheet, line, row, split_col)))  # fmt: skip
    objects = [_json_object(e[2]) for e in examples]
    distinct = Counter(e[2] for e in examples)
    if all(o is not None for o in objects):
        plan.behaviour_kind, plan.schema = "json", infer_schema(objects)
        make = _json_row(plan.schema, instruction)
    elif len(distinct) <= MAX_LABELS and min(distinct.values()) >= 2:
        plan.behaviour_kind = "labels"
        make = _label_row(sorted(distinct), instruction)
    else:
        if not any(style.values()):
            raise SheetError(
                f"{sheet.path}: the expected outputs are free text ({len(distinct)} different ones), which ragft can "
                "only judge by style rules: name at least one (--max-words N, --first-word-in Yes,No, --cite-source)"
            )
        plan.behaviour_kind = "style"
        make = _style_row(style, instruction)
    splits = assign_splits([e[2] if plan.behaviour_kind == "labels" else "" for e in examples],
                           [e[4] for e in examples], test_share, seed)  # fmt: skip
    for (line, given, expected, row_instruction, _), split in zip(examples, splits, strict=True):
        plan.rows.append(TaskRow.model_validate(make(line, given, expected, row_instruction, split)))


def _json_object(text: str) -> dict | None:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def infer_schema(objects: list[dict]) -> dict:
    """A JSON Schema every expected object satisfies: each key's type, required when every object has it, and an
    enum for string fields with few distinct values (what a behaviour row's format asks for)."""
    keys: dict[str, list] = defaultdict(list)
    for obj in objects:
        for k, v in obj.items():
            keys[k].append(v)
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}
    properties = {}
    for k, vals in keys.items():
        types = sorted({names.get(type(v), "null") if v is not None else "null" for v in vals})
        if types == ["integer", "number"]:
            types = ["number"]
        prop: dict = {"type": types[0] if len(types) == 1 else types}
        strings = [v for v in vals if isinstance(v, str)]
        if types == ["string"] and len(set(strings)) <= MAX_LABELS and len(strings) >= 2 * len(set(strings)):
            prop["enum"] = sorted(set(strings))
        properties[k] = prop
    required = sorted(k for k, vals in keys.items() if len(vals) == len(objects))
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def _json_row(schema: dict, instruction: str | None):
    def make(line, given, expected, row_instruction, split):
        ask = (
            row_instruction
            or instruction
            or ("Reply with one JSON object and nothing else, following this JSON Schema: " + json.dumps(schema))
        )
        return {"id": f"b-{line:04d}", "family": "behaviour", "split": split, "kind": "imported_json",
                "instruction": ask, "input": given, "schema": schema, "expected": json.loads(expected),
                "tags": {"origin": "imported"}}  # fmt: skip

    return make


def _label_row(labels: list[str], instruction: str | None):
    def make(line, given, expected, row_instruction, split):
        ask = row_instruction or instruction or f"Classify the input. Reply with one label: {', '.join(labels)}."
        return {"id": f"b-{line:04d}", "family": "behaviour", "split": split, "kind": "imported_labels",
                "instruction": ask, "input": given, "labels": labels, "label": expected,
                "tags": {"origin": "imported"}}  # fmt: skip

    return make


def _style_row(style: dict, instruction: str | None):
    rules = {k: v for k, v in style.items() if v}

    def make(line, given, expected, row_instruction, split):
        ask = row_instruction or instruction or "Reply in the house style."
        return {"id": f"b-{line:04d}", "family": "behaviour", "split": split, "kind": "imported_style",
                "instruction": ask, "input": given, "style": rules, "answers": [expected],
                "tags": {"origin": "imported"}}  # fmt: skip

    return make


def assign_splits(strata: list[str], given: list[str | None], test_share: float, seed: int) -> list[str]:
    """`given` splits where the sheet has them; the rest seeded and stratified by `strata` (the label), each
    stratum giving at least ceil(test_share * n) test rows and at least one train row when it has two or more."""
    out = list(given)
    by_stratum: dict[str, list[int]] = defaultdict(list)
    for i, (s, g) in enumerate(zip(strata, given, strict=True)):
        if g is None:
            by_stratum[s].append(i)
    rng = random.Random(f"{seed}:splits")
    for s in sorted(by_stratum):
        members = by_stratum[s]
        rng.shuffle(members)
        n_test = -(-len(members) * test_share // 1)  # ceil
        n_test = int(min(n_test, len(members) - 1)) if len(members) > 1 else 1
        for j, i in enumerate(members):
            out[i] = "test" if j < n_test else "train"
    return out


def data_card(plan: CorpusPlan, name: str) -> str:
    """DATA_CARD.md for the new corpus: where it came from, what was made of it, what was left out."""
    counts = Counter((r.family, r.split) for r in plan.rows)
    lines = [f"# {name}", "", "Made by `ragft corpus init` from a team's own files.", "",
             f"- documents: {len(plan.scan.documents)} read from `{plan.documents_dir.name}/`"
             + (f", {len(plan.scan.unreadable)} not read (below)" if plan.scan.unreadable else "")]  # fmt: skip
    lines += [f"- {what}: `{file}`" for what, file in plan.sources.items()]
    lines += ["", "| family | train | test |", "|---|---|---|"]
    for family in sorted({f for f, _ in counts}):
        lines.append(f"| {family} | {counts[(family, 'train')]} | {counts[(family, 'test')]} |")
    if plan.behaviour_kind:
        lines += ["", f"Behaviour rows are `{plan.behaviour_kind}` rows."]
    if plan.schema:
        lines += ["", "JSON Schema inferred from the expected objects (confirm it, or edit tasks/behaviour.jsonl):",
                  "", "```json", json.dumps(plan.schema, indent=2), "```"]  # fmt: skip
    if plan.unlocated:
        kept = "kept as knowledge rows (--keep-unlocated)" if plan.kept_unlocated else "left out"
        lines += ["", f"Questions whose answer no document states ({kept}):", ""]
        lines += [f"- {u}" for u in plan.unlocated]
    if plan.scan.unreadable:
        lines += ["", "Files not read:", ""] + [f"- {u}" for u in plan.scan.unreadable]
    lines += ["", "The team's questions are test rows of the `unseen` knowledge view: the fine-tuned arms learn the",
              "documents, never these answers. Check the corpus with `ragft corpus validate` and `ragft corpus audit`."]  # fmt: skip
    return "\n".join(lines) + "\n"


def write_corpus(plan: CorpusPlan, folder: Path) -> Path:
    """Write documents/, tasks/ and DATA_CARD.md into `folder`, all or nothing (a temporary folder renamed into
    place); refuses a folder that already exists, so nothing stored is overwritten."""
    folder = Path(folder)
    if folder.exists():
        raise SheetError(f"{folder} already exists; give a new folder name (nothing was written)")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.init-{uuid.uuid4().hex[:8]}"
    try:
        source = plan.documents_dir / "documents" if (plan.documents_dir / "documents").is_dir() else plan.documents_dir
        shutil.copytree(source, tmp / "documents", ignore=shutil.ignore_patterns(".*"))
        (tmp / "tasks").mkdir()
        by_family: dict[str, list[TaskRow]] = defaultdict(list)
        for row in plan.rows:
            by_family["behaviour" if row.family == "behaviour" else "questions"].append(row)
        for name, rows in by_family.items():
            text = "".join(json.dumps(r.model_dump(by_alias=True, exclude_defaults=True), ensure_ascii=False) + "\n" for r in rows)  # fmt: skip
            (tmp / "tasks" / f"{name}.jsonl").write_text(text, encoding="utf-8")
        (tmp / "DATA_CARD.md").write_text(data_card(plan, folder.name), encoding="utf-8")
        sync_folder(tmp)
        tmp.rename(folder)
        sync_folder(folder.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def summary(plan: CorpusPlan) -> list[str]:
    """What the CLI prints after planning: rows made, answers located, files and questions left out."""
    counts = Counter((r.family, r.split) for r in plan.rows)
    asked = sum(1 for r in plan.rows if r.family == "knowledge") + (0 if plan.kept_unlocated else len(plan.unlocated))
    located = sum(1 for r in plan.rows if r.family == "knowledge" and r.source_docs)
    out = [f"documents: {len(plan.scan.documents)} read, {len(plan.scan.unreadable)} not read"]
    out += [f"  not read: {u}" for u in plan.scan.unreadable]
    if asked:
        out.append(f"answers located in the documents: {located} of {asked} ({located / asked:.0%})")
    out += [f"  unlocated: {u}" for u in plan.unlocated]
    out += [f"{family} rows: {counts[(family, 'train')]} train, {counts[(family, 'test')]} test"
            for family in sorted({f for f, _ in counts})]  # fmt: skip
    if plan.schema:
        out.append(
            "JSON Schema inferred from the expected objects (confirm it, or replace it in tasks/behaviour.jsonl):"
        )
        out.append("  " + json.dumps(plan.schema))
    out += plan.notes
    return out
