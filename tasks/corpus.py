"""Read and validate an ARFBench corpus (arfbench-qa.csv + arfbench-ts-data/*.parquet), local or on S3.

A corpus location is a local directory or `s3://bucket/prefix` (tasks/storage.py: S3 settings, I/O retries).

Every problem names the file, the question id and the field. A bad question does not stop the corpus:
it is kept with its problems so the scoring run writes an error row for it and goes on.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import fsspec
import pandas as pd

from model.errors import ArfscoreError
from model.records import TIERS, Question, SeriesGroup, canonical_category
from tasks.series import GroupFile, SeriesError, parse_group_file_name, read_dense
from tasks.storage import filesystem_for, is_transient_io_error, with_io_retries

QA_FILE = "arfbench-qa.csv"
SERIES_DIR = "arfbench-ts-data"
REQUIRED_QA_COLUMNS: tuple[str, ...] = (
    "question",
    "task_category",
    "difficulty",
    "options_str",
    "correct_answer",
    "query_group",
)
ID_COLUMNS: tuple[str, ...] = ("question_id", "id")


@dataclass(frozen=True)
class Problem:
    """One validation problem: where it is and what is wrong."""

    file: str
    question_id: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"question {self.question_id}: " if self.question_id is not None else ""
        return f"{self.file}: {where}{self.field}: {self.message}"


class CorpusError(ArfscoreError):
    """The corpus as a whole cannot be read (no csv, missing columns, listed file gone)."""


class _TrackedReads:
    """A file handle that remembers the first error its reads raised.

    pyarrow reports a failed read from a Python file as a corrupt file in some code paths; with this record a
    storage outage in the middle of a Parquet read is retried as I/O instead of becoming an error row.
    """

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self.error: BaseException | None = None

    def _tracked(self, method: str, *args: Any) -> Any:
        try:
            return getattr(self._handle, method)(*args)
        except Exception as error:
            if self.error is None:
                self.error = error
            raise

    def read(self, *args: Any) -> Any:
        return self._tracked("read", *args)

    def readinto(self, *args: Any) -> Any:
        return self._tracked("readinto", *args)

    def seek(self, *args: Any) -> Any:
        return self._tracked("seek", *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


@dataclass
class Corpus:
    """A corpus index: questions (with their problems) and where each query group's file is."""

    location: str
    questions: list[Question]
    group_files: dict[str, GroupFile]
    problems: list[Problem] = field(default_factory=list)
    checksum: str = ""

    def problems_for(self, question_id: int) -> list[Problem]:
        return [problem for problem in self.problems if problem.question_id == question_id]

    def question(self, question_id: int) -> Question:
        for question in self.questions:
            if question.question_id == question_id:
                return question
        raise KeyError(question_id)

    def open_group(self, group_id: str) -> SeriesGroup:
        """Read one query group as a dense array (SeriesError on bad data, CorpusError on storage failure)."""
        group_file = self.group_files.get(group_id)
        if group_file is None:
            raise SeriesError(f"{SERIES_DIR}/{group_id}_*.parquet", "query_group", f"no parquet file for {group_id!r}")
        fs, root = filesystem_for(self.location)
        # The path as users know it: relative to the corpus location.
        label = group_file.path[len(root) :].lstrip("/") if group_file.path.startswith(root) else group_file.path
        where = f"{self.location.rstrip('/')}/{label}"

        def read() -> SeriesGroup:
            try:
                with fs.open(group_file.path, "rb") as raw:
                    handle = _TrackedReads(raw)
                    try:
                        return read_dense(handle, group_file, file=label)
                    except SeriesError:
                        if handle.error is not None and is_transient_io_error(handle.error):
                            raise handle.error from None  # an outage mid-read, not a bad file: retry
                        raise
            except FileNotFoundError as error:
                raise CorpusError(f"{where}: listed when the corpus was indexed but now missing ({error})") from error

        return with_io_retries(read, where)


def _parse_options(raw: Any) -> list[str] | None:
    """JSON list of strings or of {"value": str}; None when it is anything else."""
    try:
        parsed = json.loads(raw) if isinstance(raw, str) else None
    except json.JSONDecodeError:
        return None
    if not isinstance(parsed, list):
        return None
    options: list[str] = []
    for item in parsed:
        if isinstance(item, dict) and isinstance(item.get("value"), str):
            options.append(item["value"])
        elif isinstance(item, str):
            options.append(item)
        else:
            return None
    return options


def _list_group_files(fs: fsspec.AbstractFileSystem, root: str) -> tuple[dict[str, GroupFile], list[Problem], dict[str, list[str]]]:
    """Series files by query group (the finest interval where a group has several), file-level problems, and the
    groups whose files cannot be told apart (two files at one interval: every question using one gets a problem,
    so validate and score agree)."""
    series_root = f"{root}/{SERIES_DIR}"
    problems: list[Problem] = []
    files: dict[str, GroupFile] = {}
    ambiguous: dict[str, list[str]] = {}
    try:
        paths = fs.ls(series_root, detail=False)
    except FileNotFoundError as error:
        raise CorpusError(f"{SERIES_DIR}/: directory not found under {root}: the corpus has no series") from error
    for path in sorted(paths):
        name = path.rsplit("/", 1)[-1]
        if not name.endswith(".parquet"):
            continue
        group_file = parse_group_file_name(name, path)
        if group_file is None:
            problems.append(Problem(f"{SERIES_DIR}/{name}", None, "file name", "expected {incident}_{index}_{interval_seconds}.parquet"))
        elif group_file.group_id not in files:
            files[group_file.group_id] = group_file
        elif group_file.interval_s == files[group_file.group_id].interval_s:  # e.g. "0060" beside "60"
            ambiguous.setdefault(group_file.group_id, [files[group_file.group_id].path.rsplit("/", 1)[-1]]).append(name)
        elif group_file.interval_s < files[group_file.group_id].interval_s:
            # The same group at several resolutions (rollups): full fidelity reads the finest.
            files[group_file.group_id] = group_file
    return files, problems, ambiguous


def _read_qa_table(fs: fsspec.AbstractFileSystem, root: str) -> tuple[pd.DataFrame, str]:
    path = f"{root}/{QA_FILE}"
    try:
        with fs.open(path, "rb") as handle:
            payload = handle.read()
    except FileNotFoundError as error:
        raise CorpusError(f"{QA_FILE}: not found under {root}") from error
    checksum = hashlib.sha256(payload).hexdigest()
    try:
        # utf-8-sig drops a BOM; the csv module handles quoted newlines inside fields.
        table = pd.read_csv(io.BytesIO(payload), dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as error:
        raise CorpusError(f"{QA_FILE}: not a readable csv ({error})") from error
    table.columns = [str(column).strip() for column in table.columns]
    missing = [column for column in REQUIRED_QA_COLUMNS if column not in table.columns]
    if missing:
        raise CorpusError(f"{QA_FILE}: missing column(s) {missing}; found {list(table.columns)}")
    return table, checksum


def load_corpus(location: str) -> Corpus:
    """Index a corpus: parse and check every question row, list series files. Reads no series data."""
    fs, root = filesystem_for(location)
    where = location.rstrip("/")
    table, checksum = with_io_retries(lambda: _read_qa_table(fs, root), f"{where}/{QA_FILE}")
    group_files, problems, ambiguous = with_io_retries(lambda: _list_group_files(fs, root), f"{where}/{SERIES_DIR}")
    id_column = next((column for column in ID_COLUMNS if column in table.columns), None)
    questions: list[Question] = []
    seen_ids: set[int] = set()
    for row_number, row in enumerate(table.to_dict("records")):
        question_id = row_number
        if id_column is not None:
            try:
                question_id = int(str(row[id_column]).strip())
            except ValueError:
                problems.append(Problem(QA_FILE, row_number, id_column, f"not an integer: {row[id_column]!r}; using the row index"))
        if question_id in seen_ids:
            problems.append(Problem(QA_FILE, question_id, id_column or "row", "duplicate question id"))
            continue
        seen_ids.add(question_id)
        question, row_problems = _check_question(row, question_id, group_files, ambiguous)
        questions.append(question)
        problems.extend(row_problems)
    return Corpus(location=location, questions=questions, group_files=group_files, problems=problems, checksum=checksum)


def _check_question(
    row: dict[str, str], question_id: int, group_files: dict[str, GroupFile], ambiguous: dict[str, list[str]]
) -> tuple[Question, list[Problem]]:
    problems: list[Problem] = []

    def problem(field_name: str, message: str, file: str = QA_FILE) -> None:
        problems.append(Problem(file, question_id, field_name, message))

    raw_category = row["task_category"].strip()
    category = canonical_category(raw_category)
    if category is None:
        problem("task_category", f"unknown category {raw_category!r}")
    tier = " ".join(row["difficulty"].split()).title()
    if tier not in TIERS:
        problem("difficulty", f"unknown difficulty {row['difficulty']!r}; expected one of {list(TIERS)}")
    options = _parse_options(row["options_str"])
    if options is None:
        problem("options_str", f"not a JSON list of strings or of {{'value': str}}: {row['options_str'][:80]!r}")
        options = []
    elif len(options) < 2:
        problem("options_str", f"needs at least 2 options, got {len(options)}")
    else:
        duplicates = sorted(option for option, count in Counter(options).items() if count > 1)
        if duplicates:
            problem("options_str", f"duplicate options {duplicates}")
    correct = row["correct_answer"]
    if options and correct not in options:
        problem("correct_answer", f"{correct!r} is not one of the options {options}")
    group_ids = tuple(part.strip() for part in row["query_group"].split(",") if part.strip())
    if not group_ids:
        problem("query_group", "empty")
    for group_id in group_ids:
        if group_id in ambiguous:
            listed = ", ".join(ambiguous[group_id])
            problem("query_group", f"{len(ambiguous[group_id])} parquet files for {group_id} at one interval ({listed}): which one is unknown")
        elif group_id not in group_files:
            problem("query_group", f"no parquet file {SERIES_DIR}/{group_id}_<interval>.parquet")
    question = Question(
        question_id=question_id,
        question=row["question"],
        category=category or raw_category,
        tier=tier,
        options=tuple(options),
        correct_answer=correct,
        query_groups=group_ids,
        raw_category=raw_category,
    )
    return question, problems


@dataclass(frozen=True)
class ValidationReport:
    """What `arfscore validate` prints."""

    location: str
    n_questions: int
    by_category_tier: dict[tuple[str, str], int]
    n_groups: int
    max_variates: int
    max_steps: int
    problems: list[Problem]

    @property
    def ok(self) -> bool:
        return not self.problems


def validate_corpus(
    location: str | Corpus, *, read_series: bool = True, on_group: Callable[[str], None] | None = None
) -> ValidationReport:
    """Check the question table and (by default) read every referenced query group once.
    `location` may be a corpus already indexed with load_corpus (the csv is not read again)."""
    corpus = location if isinstance(location, Corpus) else load_corpus(location)
    problems = list(corpus.problems)
    referenced: dict[str, list[int]] = {}
    for question in corpus.questions:
        for group_id in question.query_groups:
            referenced.setdefault(group_id, []).append(question.question_id)
    max_variates = max_steps = 0
    if read_series:
        for group_id, question_ids in sorted(referenced.items()):
            if group_id not in corpus.group_files:
                continue  # already reported per question
            try:
                group = corpus.open_group(group_id)
            except SeriesError as error:
                for question_id in question_ids:
                    problems.append(Problem(error.file, question_id, error.field, error.message))
            else:
                max_variates = max(max_variates, group.n_variates)
                max_steps = max(max_steps, group.n_steps)
                del group
            if on_group is not None:
                on_group(group_id)
    counts = Counter((question.category, question.tier) for question in corpus.questions)
    return ValidationReport(
        location=corpus.location,
        n_questions=len(corpus.questions),
        by_category_tier=dict(sorted(counts.items())),
        n_groups=len(referenced),
        max_variates=max_variates,
        max_steps=max_steps,
        problems=problems,
    )
