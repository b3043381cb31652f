"""Prompt text for language-model answerers, and the deterministic per-question option shuffle.

Pure functions, no I/O. The prompt asks for a JSON object ``{"reasoning": ..., "answer": ...}`` whose answer is
the exact text of one option; model/parsing.py reads the reply back (it also accepts the option letters shown here).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from model.records import Question

__all__ = [
    "DEFAULT_MAX_NEW_TOKENS",
    "NO_SHUFFLE",
    "REASONING_WORDS",
    "build_prompt",
    "option_label",
    "option_seed",
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
