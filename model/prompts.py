"""Prompt text for language-model answerers, and the deterministic per-question option shuffle.

Pure functions, no I/O. The prompt asks for a JSON object ``{"reasoning": ..., "answer": ...}`` whose answer is
the exact text of one option; model/parsing.py reads the reply back (it also accepts the option letters shown here).
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Sequence

import numpy as np

from model.records import Question, SeriesGroup

__all__ = [
    "ARFBENCH_SYSTEM_PROMPT",
    "DEFAULT_MAX_NEW_TOKENS",
    "NO_SHUFFLE",
    "PLOT_MAX_VARIATES",
    "REASONING_WORDS",
    "build_prompt",
    "option_label",
    "option_seed",
    "plotted_variates",
    "question_options",
    "series_as_text",
    "shuffle_options",
]

# A seed below zero means "keep the corpus order"; callers record it as option_order_seed all the same.
NO_SHUFFLE = -1

# The reply the prompt asks for, and the generation budget it needs: reasoning of at most REASONING_WORDS words
# (~1.3 tokens per English word in Qwen's BPE), the JSON frame (~16 tokens) and the copied option text (up to
# ~110 tokens for a long channel list). A reply cut off by this limit is recorded as truncated, never parsed.
REASONING_WORDS = 100
DEFAULT_MAX_NEW_TOKENS = int(REASONING_WORDS * 1.3) + 16 + 110  # 256

_SYSTEM_HINT = (
    "You are an expert site reliability engineer analysing monitoring time series during an incident."
)


def option_label(index: int) -> str:
    """0 -> "A", 25 -> "Z", 26 -> "AA", 27 -> "AB", ... (spreadsheet-style column letters)."""
    if index < 0:
        raise ValueError(f"option index must be >= 0, got {index}")
    label = ""
    n = index + 1
    while n > 0:
        n, rem = divmod(n - 1, 26)
        label = chr(ord("A") + rem) + label
    return label


def build_prompt(question: Question, options: Sequence[str], series_summary: str | None = None) -> str:
    """The full user prompt for one question.

    ``options`` is passed separately from ``question.options`` because the caller may have shuffled them
    (see :func:`shuffle_options`); they are listed in the given order with letters A., B., ...
    ``series_summary`` is optional text describing the series (for text-only answerers).
    """
    if not options:
        raise ValueError(f"question {question.question_id}: no options to present")
    lines: list[str] = [_SYSTEM_HINT, ""]
    if question.category:
        lines.append(f"Task: {question.category} ({question.tier})" if question.tier else f"Task: {question.category}")
    lines += ["Question:", question.question.strip(), ""]
    if series_summary:
        lines += ["Time series summary:", series_summary.strip(), ""]
    lines.append("Options:")
    lines += [f"{option_label(i)}. {text}" for i, text in enumerate(options)]
    lines += [
        "",
        "Think step by step, then reply with only a JSON object of this form:",
        f'{{"reasoning": "<your reasoning, at most {REASONING_WORDS} words>", "answer": "<the exact text of one option>"}}',
        "The answer must be copied exactly from the options above (not the letter).",
    ]
    return "\n".join(lines)


def option_seed(base_seed: int, question_id: int) -> int:
    """A per-question seed derived from a run-level seed: stable across processes and Python versions."""
    if base_seed < 0:
        return NO_SHUFFLE
    # splitmix64-style mixing, kept in the non-negative int64 range so it fits option_order_seed.
    x = (int(base_seed) * 0x9E3779B97F4A7C15 + int(question_id) + 1) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (x ^ (x >> 31)) & 0x7FFFFFFFFFFFFFFF


def shuffle_options(options: Sequence[str], seed: int) -> tuple[list[str], int]:
    """Deterministically shuffle ``options`` with ``seed``; returns (shuffled options, seed to record).

    The same (options, seed) always gives the same order. A negative seed (``NO_SHUFFLE``) keeps the given
    order. The input is not modified. The option texts themselves are unchanged, so the correct answer is still
    found by its text.
    """
    shuffled = list(options)
    seed = int(seed)
    if seed >= 0:
        random.Random(seed).shuffle(shuffled)
    return shuffled, seed


def question_options(question: Question, base_seed: int, shuffle: bool) -> tuple[list[str], int]:
    """The options in the order an answerer shows them, and the seed to record: shuffled with the question's own
    seed (:func:`option_seed`) when ``shuffle``, else as given (``NO_SHUFFLE``)."""
    return shuffle_options(question.options, option_seed(base_seed, question.question_id) if shuffle else NO_SHUFFLE)


# The system message API and VLM answerers send (the reference's drivers frame the task the same way).
ARFBENCH_SYSTEM_PROMPT = (
    "You are an expert in analysing observability metrics (time series) during incidents. You are given one or two "
    "groups of time series, as plots and/or as text, and a multiple-choice question about an anomaly in them. "
    "Answer with exactly one of the given options."
)
PLOT_MAX_VARIATES = 20  # lines per plot for vision answerers (the most anomalous when there are more: tasks/plots.py)


def plotted_variates(groups: Sequence[SeriesGroup]) -> int:
    """Variates a vision answerer sees: the lines drawn in each group's plot."""
    return sum(min(PLOT_MAX_VARIATES, group.n_variates) for group in groups)

TEXT_MAX_POINTS = 240  # points per variate in a text rendering (bucket means)
TEXT_MAX_VARIATES = 20  # variates per group in a text rendering (the most anomalous when there are more)


def series_as_text(groups: Sequence[SeriesGroup], max_points: int = TEXT_MAX_POINTS, max_variates: int = TEXT_MAX_VARIATES) -> tuple[str, str, int]:
    """The series as text for text-only models, and the downsampling rule applied (recorded with each answer).

    Each group: its time range and interval, then one line per variate with ``max_points`` values at most, each the
    mean of consecutive equal buckets of steps (NaN where a bucket has no value); with more than ``max_variates``
    variates, those with the largest deviation from their median. Returns (text, rule, variates shown).
    """
    blocks, shown = [], 0
    rules = []
    for index, group in enumerate(groups):
        rows = [int(r) for r in group.deviation_order()[:max_variates]] if group.n_variates > max_variates else list(range(group.n_variates))
        rows.sort()
        bucket = max(1, math.ceil(group.n_steps / max_points))
        n_buckets = math.ceil(group.n_steps / bucket)
        padded = np.full((len(rows), n_buckets * bucket), np.nan, dtype=np.float64)
        padded[:, : group.n_steps] = group.values[rows]
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN bucket is NaN
            means = np.nanmean(padded.reshape(len(rows), n_buckets, bucket), axis=2)
        start = np.datetime64(group.start_ns, "ns").astype("datetime64[s]")
        header = (
            f"Series group {index + 1} (query group {group.group_id}): {group.n_steps} steps, one every {group.interval_s} s, "
            f"from {str(start).replace('T', ' ')}; {len(rows)} of {group.n_variates} variates shown, each as {n_buckets} "
            f"means of {bucket}-step buckets ({bucket * group.interval_s} s each)"
        )
        lines = [f"{group.variate_names[r]}: " + ", ".join("nan" if not np.isfinite(v) else f"{v:.4g}" for v in means[i]) for i, r in enumerate(rows)]
        blocks.append("\n".join([header, *lines]))
        rules.append(f"g{index}: {len(rows)}/{group.n_variates} variates (largest deviation), {bucket}-step bucket means")
        shown += len(rows)
    return "\n\n".join(blocks), "; ".join(rules), shown
