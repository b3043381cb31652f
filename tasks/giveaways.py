"""Does a corpus give its answers away? An options-only answerer (it never sees the series) against chance.

Chance, for an answerer without the series, is the best it can do knowing only how often each kind of answer is
right: always the most frequent answer class of the category (ARFBench's answer bins: "Before the earliest",
the earliest / middle / latest timestamp, "No anomaly", ...). The options-only answerer learns, on one corpus,
how often an option is right given everything the question's text shows (the option's answer class, its place in
the list, its length rank, whether a timestamp falls on a round tenth of the window the caption describes) and
picks the likeliest option on another corpus.
If it beats chance, the options leak the answer (e.g. distractor timestamps on a regular grid the true one never
lands on). tests/test_synthetic.py holds the synthetic generator to this and prints the table (pytest -s).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Sequence

from model.records import Question
from tasks.metrics import bin_answer, option_timestamp

__all__ = ["chance_and_options_only"]

def _seconds(option: str) -> int | None:
    stamp = option_timestamp(option)
    return int(stamp.timestamp()) if stamp is not None else None


_CAPTION = re.compile(r"one point every (\d+) seconds, from (\S+ \S+) to (\S+ \S+)")


def _grid_aligned(question: Question, option: str) -> bool | None:
    """Whether a timestamp option sits on a step that is a multiple of a tenth of the series (the old generator put
    its distractors there), read from the question's caption; None when there is no caption or timestamp."""
    caption = _CAPTION.search(question.question)
    own = _seconds(option)
    if caption is None or own is None:
        return None
    interval, first, last = int(caption.group(1)), _seconds(caption.group(2)), _seconds(caption.group(3))
    n_steps = (last - first) // interval + 1
    return ((own - first) // interval) % max(1, n_steps // 10) == 0


def _features(question: Question, option: str) -> tuple:
    options = list(question.options)
    lengths = sorted(len(o) for o in options)
    return (
        bin_answer(question.category, option, options),
        options.index(option),
        _grid_aligned(question, option),
        lengths.index(len(option)),
    )


def chance_and_options_only(train: Sequence[Question], test: Sequence[Question]) -> dict[str, dict[str, float]]:
    """Per category of ``test``: n, uniform (1 / options), chance (most frequent answer class learned on
    ``train``) and options_only accuracy (learned on ``train``)."""
    right: dict[tuple, int] = defaultdict(int)
    seen: dict[tuple, int] = defaultdict(int)
    classes: dict[str, Counter] = defaultdict(Counter)
    for question in train:
        classes[question.category][bin_answer(question.category, question.correct_answer, list(question.options))] += 1
        for option in question.options:
            key = (question.category, *_features(question, option))
            seen[key] += 1
            right[key] += option == question.correct_answer

    def score(question: Question, option: str) -> float:
        key = (question.category, *_features(question, option))
        return (right[key] + 1) / (seen[key] + len(question.options))  # Laplace: unseen features are neutral

    out: dict[str, dict[str, float]] = {}
    by_category: dict[str, list[Question]] = defaultdict(list)
    for question in test:
        by_category[question.category].append(question)
    for category, questions in sorted(by_category.items()):
        common = classes[category].most_common(1)[0][0] if classes[category] else None
        chance = sum(bin_answer(category, q.correct_answer, list(q.options)) == common for q in questions) / len(questions)
        picked = [max(q.options, key=lambda option, q=q: (score(q, option), -q.options.index(option))) for q in questions]
        out[category] = {
            "n": len(questions),
            "uniform": sum(1 / len(q.options) for q in questions) / len(questions),
            "chance": chance,
            "options_only": sum(p == q.correct_answer for p, q in zip(picked, questions)) / len(questions),
        }
    return out
