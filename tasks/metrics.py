"""ARFBench metrics: accuracy and binned macro F1 per category, tier and overall (pure functions, no I/O).

The definitions restate DataDog's ARFBench ``utils/compute_statistics.py`` (see DESIGN.md section 8):

- accuracy: parsed answer == correct option text, per category, per tier (pooling the tier's rows) and overall;
- macro F1 per category after binning truth and prediction into classes (``bin_answer``); rows whose truth bins
  to nothing are left out; labels = sorted set of truth classes; an invalid prediction (missing, or binned outside
  the labels) is replaced by ``rng.choice(labels other than the truth)`` with ONE ``random.Random(0)`` shared
  across categories (taken in order of first appearance, rows in order); sklearn, average="macro", fixed labels,
  zero_division=0; tier and overall F1 = category F1s averaged with the category's F1 row count as weight.

Deliberate differences from the reference (all reference behaviours are available on request:
``reference_compatible=True`` for the first three and the fifth, ``reference_metrics`` for the fourth):

1. Single-class truth: where a category's truth has one class, the reference maps an invalid prediction onto that
   class, i.e. scores it correct. Here it is mapped to a sentinel class outside the labels, so it counts as a miss.
2. Magnitude numbers are parsed whole ("1,000" -> 1000.0, "-5" -> -5.0, ".5" -> 0.5, "1e3" -> 1000.0); the
   reference's regex ``(\\d+\\.?\\d*)`` reads "1,000" as 1, which can merge distinct options into one magnitude.
3. No pooling across answerers or runs: the reference's F1 pools every row handed to it (every run, and every
   model if several are present). Here every metric is computed per (run_id, answerer), each with its own
   ``random.Random(0)``.
4. Runs: the reference takes accuracy from run 1 only but pools every run into F1. Here every metric is reported
   per run; ``summarize_repeats`` then gives mean / std / min / max over repeat runs (never a pooled figure).
5. Skipped / error rows: the reference skips questions whose input is missing (they drop out of its
   denominators) but keeps answerer failures (an API error is a wrong answer). Here every error row
   (status == "error") and unparsed answer counts as wrong and stays in every denominator; for F1 they are invalid
   predictions. ``reference_compatible`` drops only input errors (``error_kind`` "input"), like the reference.

Other notes: accuracy is a fraction in [0, 1] (the reference prints percent); tiers come from the answers'
``tier`` column (the reference uses a fixed category -> tier map, identical on the ARFBench corpus); ``is_correct``
in the input is not trusted, correctness is recomputed from parsed_answer, correct_answer and status.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_fscore_support

from model.records import CATEGORIES, TIERS, canonical_category

SCOPES: tuple[str, ...] = ("category", "tier", "overall")
METRIC_COLUMNS: tuple[str, ...] = (
    "run_id",
    "answerer",
    "scope",
    "key",
    "n",
    "n_correct",
    "accuracy",
    "macro_f1",
    "invalid",
    "f1_invalid",
    "n_f1",
    "precision",
    "recall",
)

_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
_NUMBER_REFERENCE = re.compile(r"(\d+\.?\d*)")
# A whole number: optional sign (not after a word character), thousands groups, decimals, exponent.
_NUMBER_WHOLE = re.compile(r"(?:(?<![\w.])-)?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|(?<!\d)\.\d+")
_COMMA_CHANNEL = re.compile(r", (?=[a-zA-Z_])")
_DIMENSION = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*):")
_NO_ANOMALY_IDENTIFICATION = frozenset({"no anomaly", "no anomaly among the listed channels"})
_SEASONALITY_VARIANCE = "Change in Seasonality/Variance"


# ---------------------------------------------------------------------------------------------------------------
# Options and binning
# ---------------------------------------------------------------------------------------------------------------


def parse_options(options_str: Any) -> list[str]:
    """Parse ``options_str``: a JSON list of strings or of {"value": str}; anything else gives [] (never raises).

    As in the reference, JSON numbers are accepted and turned into their Python ``str`` (10 -> "10").
    """
    if not isinstance(options_str, (str, bytes, bytearray)):
        return []
    try:
        items = json.loads(options_str)
    except (ValueError, TypeError, RecursionError):
        return []
    if not isinstance(items, list) or not items:
        return []
    if all(isinstance(item, dict) for item in items):
        items = [item.get("value") for item in items]
    out: list[str] = []
    for item in items:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, (int, float)) and not isinstance(item, bool):
            out.append(str(item))
        else:
            return []
    return out


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return False
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _as_options(value: Any) -> list[str]:
    """Options as stored in answers (list / tuple / ndarray) or as the corpus's JSON string."""
    if isinstance(value, (str, bytes, bytearray)):
        return parse_options(value)
    if isinstance(value, (list, tuple, np.ndarray, pd.Series)):
        return [str(v) for v in value]
    return []


def _norm(text: str) -> str:
    return text.strip().lower()


def count_channels(text: str) -> int:
    """Channels named in an identification option: " and " / ", x" separators, else a repeated first dimension."""
    n_and = text.count(" and ")
    if n_and:
        return n_and + 1
    n_comma = len(_COMMA_CHANNEL.findall(text))
    if n_comma:
        return n_comma + 1
    dims = _DIMENSION.findall(text)
    if dims:
        repeats = dims.count(dims[0])
        if repeats > 1:
            return repeats
    return 1


def _bin_identification(text: str, options: Sequence[str]) -> str:
    answer = text.strip()
    if _norm(answer) in _NO_ANOMALY_IDENTIFICATION:
        return "no_anomaly"
    channels = count_channels(answer)
    if channels >= 3:
        return "three_channel"
    if channels == 2:
        return "two_channel"
    singles = sorted(
        o.strip() for o in options if _norm(o) not in _NO_ANOMALY_IDENTIFICATION and count_channels(o.strip()) == 1
    )
    if len(singles) < 2 or answer < singles[1]:
        return "one_channel_small"
    return "one_channel_large"


def _first_number(text: str, *, reference_compatible: bool) -> float | None:
    pattern = _NUMBER_REFERENCE if reference_compatible else _NUMBER_WHOLE
    match = pattern.search(text)
    if match is None:
        return None
    try:
        return float(match.group().replace(",", ""))
    except ValueError:
        return None


def _bin_magnitude(text: str, options: Sequence[str], *, reference_compatible: bool) -> str | None:
    answer = text.strip()
    if _norm(answer) == "no anomaly":
        return "no_anomaly"
    values = set()
    for option in options:
        if _norm(option) == "no anomaly":
            continue
        value = _first_number(option.strip(), reference_compatible=reference_compatible)
        if value is not None:
            values.add(value)
    magnitudes = sorted(values)
    value = _first_number(answer, reference_compatible=reference_compatible)
    if not magnitudes or value is None or value not in magnitudes:
        return None
    idx, k = magnitudes.index(value), min(4, len(magnitudes))
    if idx == 0:
        return "smallest"
    if k == 2:
        return "large"
    if k == 3:
        return "medium" if idx == 1 else "large"
    if idx == 1:
        return "small"
    return "large" if idx == len(magnitudes) - 1 else "medium"


def option_timestamp(text: str) -> datetime | None:
    """The first "YYYY-MM-DD HH:MM:SS" in an option or answer, as a UTC time (ARFBench's timestamps are UTC)."""
    match = _TIMESTAMP.search(text)
    return datetime.strptime(match.group(), "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc) if match else None


def _timestamps(options: Sequence[str], special: str) -> list[str]:
    found = set()
    for option in options:
        low = _norm(option)
        if low == "no anomaly" or special in low:
            continue
        match = _TIMESTAMP.search(option.strip())
        if match:
            found.add(match.group())
    return sorted(found)


def _answer_index(answer: str, stamps: list[str]) -> int | None:
    match = _TIMESTAMP.search(answer)
    if not stamps or match is None or match.group() not in stamps:
        return None
    return stamps.index(match.group())


def _bin_start(text: str, options: Sequence[str]) -> str | None:
    answer = text.strip()
    low = answer.lower()
    if low == "no anomaly":
        return "no_anomaly"
    if "before the earliest" in low:
        return "earliest"
    stamps = _timestamps(options, "before the earliest")
    idx = _answer_index(answer, stamps)
    if idx is None:
        return None
    last = len(stamps) - 1
    if any("before the earliest" in _norm(o) for o in options):
        if idx == 0:
            return "early"
        return "late" if idx == last else "medium"
    k = min(4, len(stamps))
    if idx == 0:
        return "earliest"
    if k == 2:
        return "late"
    if k == 3:
        return "medium" if idx == 1 else "late"
    if idx == 1:
        return "early"
    return "late" if idx == last else "medium"


def _bin_end(text: str, options: Sequence[str]) -> str | None:
    answer = text.strip()
    low = answer.lower()
    if low == "no anomaly":
        return "no_anomaly"
    if "not resolved" in low:
        return "latest"
    stamps = _timestamps(options, "not resolved")
    idx = _answer_index(answer, stamps)
    if idx is None:
        return None
    last = len(stamps) - 1
    if any("not resolved" in _norm(o) for o in options):
        if len(stamps) == 1:
            return "late"
        if idx == 0:
            return "early"
        return "late" if idx == last else "medium"
    k = min(4, len(stamps))
    if k == 1:
        return "latest"
    if idx == 0:
        return "early"
    if idx == last:
        return "latest"
    if k >= 4 and idx == last - 1:
        return "late"
    return "medium"


def _bin_categorization(text: str) -> str:
    answer = text.strip()
    low = answer.lower()
    if "no anomaly" in low:
        return "No Anomaly"
    if "level shift" in low:
        return "Level Shift"
    if "transient spike" in low:
        return "Transient Spike"
    if "change in seasonality" in low or "change in variance" in low:
        return _SEASONALITY_VARIANCE
    if "change in trend" in low:
        return "Change in Trend"
    return answer


def bin_answer(
    category: str,
    answer: str | None,
    options: Sequence[str],
    *,
    reference_compatible: bool = False,
) -> str | None:
    """The class of ``answer`` for macro F1 (None = no class). ``category``: canonical or raw task_category.

    Presence, Indicator, Correlation and unknown categories use the answer text itself (as the reference does).
    ``reference_compatible`` only changes magnitude numbers (the reference's ``(\\d+\\.?\\d*)``: "1,000" -> 1).
    """
    if _is_missing(answer) or answer == "":
        return None
    text = str(answer)
    opts = [str(o) for o in options]
    name = canonical_category(category)
    if name == "Anomaly Identification":
        return _bin_identification(text, opts)
    if name == "Anomaly Magnitude":
        return _bin_magnitude(text, opts, reference_compatible=reference_compatible)
    if name == "Anomaly Start":
        return _bin_start(text, opts)
    if name == "Anomaly End":
        return _bin_end(text, opts)
    if name == "Anomaly Categorization":
        return _bin_categorization(text)
    return text


# ---------------------------------------------------------------------------------------------------------------
# F1 for one category
# ---------------------------------------------------------------------------------------------------------------


def _sentinel(labels: Iterable[str]) -> str:
    taken = set(labels)
    name = "__invalid__"
    while name in taken:
        name = f"_{name}_"
    return name


def binned_pairs(
    rows: pd.DataFrame, *, rng: random.Random, reference_compatible: bool = False
) -> tuple[list[int], list[str], list[str], list[str], int]:
    """The F1 procedure's classes for one category's rows, in order: (positions of the rows whose truth has a
    class, their truth classes, their predicted classes after the invalid-prediction rule, the labels, the
    number of invalid predictions). ``rng`` is consumed once per invalid prediction that has a wrong class."""
    positions: list[int] = []
    truths: list[str] = []
    preds: list[str | None] = []
    for position, (category, options, truth, pred) in enumerate(zip(
        rows["category"], rows["options"], rows["correct_answer"], rows["parsed_answer"], strict=True
    )):
        opts = _as_options(options)
        cat = str(category)
        binned_truth = bin_answer(cat, truth, opts, reference_compatible=reference_compatible)
        if binned_truth is None:
            continue
        positions.append(position)
        truths.append(binned_truth)
        preds.append(bin_answer(cat, pred, opts, reference_compatible=reference_compatible))
    labels = sorted(set(truths))
    label_set = set(labels)
    sentinel = _sentinel(labels)
    invalid = 0
    y_pred: list[str] = []
    for truth, pred in zip(truths, preds, strict=True):
        if pred is not None and pred in label_set:
            y_pred.append(pred)
            continue
        invalid += 1
        wrong = [c for c in labels if c != truth]
        if wrong:
            y_pred.append(rng.choice(wrong))
        else:
            y_pred.append(labels[0] if reference_compatible else sentinel)
    return positions, truths, y_pred, labels, invalid


def category_f1(rows: pd.DataFrame, *, rng: random.Random, reference_compatible: bool = False) -> dict[str, Any]:
    """Binned macro F1 of one category's rows, in order (columns category, options, correct_answer, parsed_answer).

    Returns n (rows whose truth has a class), macro_f1, precision, recall, invalid (predictions missing or outside
    the labels) and labels. ``rng`` is consumed once per invalid prediction that has a wrong class to pick.
    """
    _, truths, y_pred, labels, invalid = binned_pairs(rows, rng=rng, reference_compatible=reference_compatible)
    if not truths:
        nan = float("nan")
        return {"n": 0, "macro_f1": nan, "precision": nan, "recall": nan, "invalid": 0, "labels": []}
    precision, recall, f1, _ = precision_recall_fscore_support(
        truths, y_pred, labels=labels, average="macro", zero_division=0
    )
    return {
        "n": len(truths),
        "macro_f1": float(f1),
        "precision": float(precision),
        "recall": float(recall),
        "invalid": invalid,
        "labels": labels,
    }


# ---------------------------------------------------------------------------------------------------------------
# Metrics tables
# ---------------------------------------------------------------------------------------------------------------


def _prepare(answers: pd.DataFrame) -> pd.DataFrame:
    """Canonical category keys, parsed answers nulled on error rows, a boolean ``correct`` column."""
    df = answers.copy()
    df["category"] = [canonical_category(c) or str(c) for c in df["category"]]
    df["tier"] = df["tier"].astype(str)
    errored = (
        df["status"].astype(str).str.lower().eq("error").to_numpy()
        if "status" in df
        else np.zeros(len(df), dtype=bool)
    )
    parsed = df["parsed_answer"].astype(object).to_numpy(copy=True)
    parsed[errored] = None
    df["parsed_answer"] = [None if _is_missing(p) else p for p in parsed]
    df["_error"] = errored
    # Rows the reference would never have scored: bad or missing input (not an answerer's failure). Rows written
    # before error_kind existed count as input errors, as the reference-compatible figures always treated them.
    kinds = df["error_kind"].astype(object).to_numpy() if "error_kind" in df else np.full(len(df), None, dtype=object)
    df["_input_error"] = errored & np.array([k != "answerer" for k in kinds], dtype=bool)
    df["_invalid"] = df["parsed_answer"].isna()
    df["correct"] = [
        (not _is_missing(p)) and (not _is_missing(t)) and str(p) == str(t)
        for p, t in zip(df["parsed_answer"], df["correct_answer"], strict=True)
    ]
    return df


def _sort_rows(df: pd.DataFrame, first: Sequence[str] = ()) -> pd.DataFrame:
    """Deterministic row order: ``first`` columns, then question_id, ties broken on the row's text."""
    tie = df["category"].astype(str) + "\x00" + df["correct_answer"].astype(str) + "\x00"
    tie = tie + df["parsed_answer"].astype(str)
    keyed = df.assign(_tie=tie.to_numpy())
    return keyed.sort_values([*first, "question_id", "_tie"], kind="mergesort").drop(columns="_tie")


def _ordered(values: Iterable[str], canonical: Sequence[str]) -> list[str]:
    present = list(dict.fromkeys(values))
    known = [v for v in canonical if v in present]
    return known + sorted(v for v in present if v not in canonical)


def _weighted(parts: list[dict[str, Any]], field: str) -> float:
    used = [p for p in parts if p["n"] > 0 and not math.isnan(p[field])]
    total = sum(p["n"] for p in used)
    if total == 0:
        return float("nan")
    return float(sum(p["n"] * p[field] for p in used) / total)


def _accuracy_row(rows: pd.DataFrame) -> dict[str, Any]:
    n = len(rows)
    n_correct = int(rows["correct"].sum())
    return {
        "n": n,
        "n_correct": n_correct,
        "accuracy": n_correct / n if n else float("nan"),
        "invalid": int(rows["_invalid"].sum()),
    }


def _f1_row(parts: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "macro_f1": _weighted(parts, "macro_f1"),
        "f1_invalid": int(sum(p["invalid"] for p in parts)),
        "n_f1": int(sum(p["n"] for p in parts)),
        "precision": _weighted(parts, "precision"),
        "recall": _weighted(parts, "recall"),
    }


def _scope_rows(acc: pd.DataFrame, f1_rows: pd.DataFrame, *, reference_compatible: bool) -> list[dict[str, Any]]:
    """Category, tier and overall rows: accuracy from ``acc``, F1 from ``f1_rows`` (both already in order)."""
    rng = random.Random(0)
    per_category: dict[str, dict[str, Any]] = {}
    for category in dict.fromkeys(f1_rows["category"]):
        rows = f1_rows[f1_rows["category"] == category]
        per_category[category] = category_f1(rows, rng=rng, reference_compatible=reference_compatible)
    empty = {"n": 0, "macro_f1": float("nan"), "precision": float("nan"), "recall": float("nan"), "invalid": 0}
    out: list[dict[str, Any]] = []
    for category in _ordered(list(acc["category"]) + list(per_category), CATEGORIES):
        f1 = _f1_row([per_category.get(category, empty)])
        out.append({"scope": "category", "key": category, **_accuracy_row(acc[acc["category"] == category]), **f1})
    for tier in _ordered(acc["tier"], TIERS):
        rows = acc[acc["tier"] == tier]
        parts = [per_category[c] for c in dict.fromkeys(rows["category"]) if c in per_category]
        out.append({"scope": "tier", "key": tier, **_accuracy_row(rows), **_f1_row(parts)})
    out.append({"scope": "overall", "key": "all", **_accuracy_row(acc), **_f1_row(list(per_category.values()))})
    return out


def _empty(columns: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})


def _finish(records: list[dict[str, Any]], columns: Sequence[str]) -> pd.DataFrame:
    if not records:
        return _empty(columns)
    frame = pd.DataFrame.from_records(records, columns=list(columns))
    for column in ("n", "n_correct", "invalid", "f1_invalid", "n_f1", "n_runs"):
        if column in frame:
            frame[column] = frame[column].astype("int64")
    return frame


def compute_metrics(answers: pd.DataFrame, *, reference_compatible: bool = False) -> pd.DataFrame:
    """Metrics per (run_id, answerer, scope, key); scope in category / tier / overall, key a name or "all".

    Columns: run_id, answerer, scope, key, n, n_correct, accuracy, macro_f1, invalid (rows with no parsed answer,
    error rows included), f1_invalid (invalid predictions in the F1 procedure), n_f1 (rows in F1), precision,
    recall. Each (run_id, answerer) is computed on its own with one ``random.Random(0)``, rows sorted by
    question_id. ``reference_compatible``: the reference's magnitude parsing and single-class mapping, and error
    rows of bad input dropped (the reference skipped those questions; answerer failures stay as wrong answers);
    still per run (see ``reference_metrics``).
    """
    if answers.empty:
        return _empty(METRIC_COLUMNS)
    df = _prepare(answers)
    if reference_compatible:
        df = df[~df["_input_error"]]
    records: list[dict[str, Any]] = []
    for (run_id, answerer), group in df.groupby(["run_id", "answerer"], sort=True, dropna=False):
        rows = _sort_rows(group)
        for row in _scope_rows(rows, rows, reference_compatible=reference_compatible):
            records.append({"run_id": run_id, "answerer": answerer, **row})
    return _finish(records, METRIC_COLUMNS)


REFERENCE_COLUMNS: tuple[str, ...] = (
    "answerer",
    "scope",
    "key",
    "first_run_id",
    "n_runs",
    "n",
    "n_correct",
    "accuracy",
    "macro_f1",
    "invalid",
    "f1_invalid",
    "n_f1",
    "precision",
    "recall",
)


def reference_metrics(answers: pd.DataFrame) -> pd.DataFrame:
    """The published-leaderboard figures, per answerer, reproducing the reference's quirks on purpose.

    Accuracy from the first run only (smallest run_id), macro F1 pooled over all runs of the answerer (rows in
    run_id then question_id order, one ``random.Random(0)``), reference binning and single-class mapping, input
    error rows dropped (answerer failures kept as wrong). Use for comparison with published numbers only;
    ``compute_metrics`` is the corrected figure.
    """
    if answers.empty:
        return _empty(REFERENCE_COLUMNS)
    df = _prepare(answers)
    df = df[~df["_input_error"]]
    records: list[dict[str, Any]] = []
    for answerer, group in df.groupby("answerer", sort=True, dropna=False):
        runs = sorted(group["run_id"].unique(), key=str)
        pooled = _sort_rows(group.assign(_run=group["run_id"].astype(str)), first=("_run",))
        first = pooled[pooled["run_id"] == runs[0]]
        for row in _scope_rows(first, pooled, reference_compatible=True):
            records.append({"answerer": answerer, "first_run_id": runs[0], "n_runs": len(runs), **row})
    return _finish(records, REFERENCE_COLUMNS)


def summarize_repeats(metrics: pd.DataFrame, group_of_run: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Mean / std / min / max over repeat runs of accuracy and macro_f1, per (answerer, group, scope, key).

    Runs are repeats when they share the answerer and the group: ``group_of_run[run_id]`` (a run missing from the
    mapping is its own group), or "all" without a mapping. std is the population std (ddof=0), so one run gives 0.
    Runs are never pooled into one metric: every figure here is a statistic of per-run metrics.
    """
    stats = ("mean", "std", "min", "max")
    columns = ["answerer", "group", "scope", "key", "n_runs", "n_mean"]
    columns += [f"{m}_{s}" for m in ("accuracy", "macro_f1") for s in stats]
    if metrics.empty:
        return _empty(columns)
    df = metrics.copy()
    if group_of_run is None:
        df["group"] = "all"
    else:
        df["group"] = [str(group_of_run.get(r, r)) for r in df["run_id"]]
    records: list[dict[str, Any]] = []
    keys = ["answerer", "group", "scope", "key"]
    for (answerer, group, scope, key), rows in df.groupby(keys, sort=False, dropna=False):
        record: dict[str, Any] = {
            "answerer": answerer,
            "group": group,
            "scope": scope,
            "key": key,
            "n_runs": int(rows["run_id"].nunique()),
            "n_mean": float(rows["n"].mean()),
        }
        for metric in ("accuracy", "macro_f1"):
            values = rows[metric].astype(float)
            record[f"{metric}_mean"] = float(values.mean())
            record[f"{metric}_std"] = float(values.std(ddof=0))
            record[f"{metric}_min"] = float(values.min())
            record[f"{metric}_max"] = float(values.max())
        records.append(record)
    out = _finish(records, columns)
    scope_rank = {s: i for i, s in enumerate(SCOPES)}
    out["_rank"] = out["scope"].map(scope_rank).fillna(len(SCOPES))
    out = out.sort_values(["answerer", "group", "_rank"], kind="mergesort").drop(columns="_rank")
    return out.reset_index(drop=True)
