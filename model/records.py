"""Plain records shared by every layer: a question, the dense series it refers to, and an answer.

No I/O here: tasks/ builds these from files, model/ answers them.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

CATEGORIES: tuple[str, ...] = (
    "Anomaly Presence",
    "Anomaly Start",
    "Anomaly End",
    "Anomaly Categorization",
    "Anomaly Magnitude",
    "Anomaly Identification",
    "Anomaly Indicator",
    "Anomaly Correlation",
)
TIERS: tuple[str, ...] = ("Tier 1", "Tier 2", "Tier 3")

# Key words -> canonical category, in the order the reference's binning (compute_statistics.apply_binning) tests
# its phrases, with its aliases "Anomaly Channel" (Identification) and "Anomaly Recovery" (End); then the
# categories it bins as plain answers.
_CATEGORY_KEYS: tuple[tuple[str, str], ...] = (
    ("identification", "Anomaly Identification"),
    ("channel", "Anomaly Identification"),
    ("magnitude", "Anomaly Magnitude"),
    ("start", "Anomaly Start"),
    ("end", "Anomaly End"),
    ("recover", "Anomaly End"),
    ("categorization", "Anomaly Categorization"),
    ("presence", "Anomaly Presence"),
    ("indicator", "Anomaly Indicator"),
    ("correlation", "Anomaly Correlation"),
)
_WORDS = re.compile(r"[a-z]+")
DEVIATION_SAMPLE = 8192  # steps used for a variate's median and MAD when ranking variates (SeriesGroup.deviation_order)


def canonical_category(raw: str) -> str | None:
    """Map a free-form task_category ("anomaly  presence", "Tier-2 Anomaly Start", "Anomaly Recovery") to its
    canonical name. Keys match whole words ("recover" as a word prefix: recovery, recovered), so "Anomaly
    Magnitude (extended)" is Magnitude, never End."""
    words = _WORDS.findall(str(raw).lower())
    for key, name in _CATEGORY_KEYS:
        if any(word == key or (key == "recover" and word.startswith(key)) for word in words):
            return name
    return None


@dataclass(frozen=True)
class Question:
    """One row of arfbench-qa.csv, validated."""

    question_id: int
    question: str
    category: str  # canonical name, one of CATEGORIES
    tier: str  # one of TIERS
    options: tuple[str, ...]
    correct_answer: str
    query_groups: tuple[str, ...]  # one id, or two for pair questions
    raw_category: str = ""

    @property
    def is_pair(self) -> bool:
        return len(self.query_groups) > 1


@dataclass(frozen=True, eq=False)
class SeriesGroup:
    """One query group on its regular grid: values[v, t] at start + t * interval, NaN where missing."""

    group_id: str
    values: np.ndarray  # float32 [variates, steps]
    variate_names: tuple[str, ...]  # sorted
    start_ns: int  # epoch nanoseconds of step 0
    interval_s: int
    image_png: bytes | None = None  # the group's plot (arfbench-images/), given to answerers that read plots

    @property
    def n_variates(self) -> int:
        return int(self.values.shape[0])

    @property
    def n_steps(self) -> int:
        return int(self.values.shape[1])

    def timestamp_ns(self, step: int) -> int:
        return self.start_ns + int(step) * self.interval_s * 1_000_000_000

    def deviation_order(self) -> np.ndarray:
        """Variate rows, most anomalous first: largest deviation from their own median in units of their MAD (the
        rule plots and text renderings use when they show only some variates). Median and MAD come from at most
        DEVIATION_SAMPLE evenly strided steps (enough to rank; a full-size group would take seconds), the largest
        deviation from every step so a one-step spike counts; rows are scored in blocks to bound memory."""
        stride = max(1, -(-self.n_steps // DEVIATION_SAMPLE))
        score = np.empty(self.n_variates, dtype=np.float64)
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows rank last
            for start in range(0, self.n_variates, 256):
                block = self.values[start: start + 256]
                sample = block[:, ::stride]
                median = np.nanmedian(sample, axis=1, keepdims=True)
                mad = np.nanmedian(np.abs(sample - median), axis=1) + 1e-12
                score[start: start + 256] = np.nanmax(np.abs(block - median), axis=1) / mad
        return np.argsort(-np.nan_to_num(score, nan=-1.0), kind="stable")


@dataclass(frozen=True)
class InputUse:
    """What an answerer saw of one question's series (all groups of a pair summed), recorded in typed columns.

    ``context_policy``: "full" (every step as given), "windows" / "recent" (the hybrid's long-context policies),
    "reference" (the published evaluation's reduced inputs), "plot" / "text" / "both" (what an API or VLM answerer
    was sent), "none" (the answerer did not look at the series).
    """

    variates_used: int
    variates_total: int
    steps_used: int
    steps_total: int
    context_policy: str
    context_windows: int | None = None
    channels_listed: int | None = None  # channel names given in the prompt
    channels_total: int | None = None
    images_given: int | None = None

    @property
    def full_input(self) -> bool:
        return self.variates_used == self.variates_total and self.steps_used == self.steps_total

    @classmethod
    def everything(cls, series: "Sequence[SeriesGroup]") -> "InputUse":
        """Every variate and every step of every group, as given."""
        variates, steps = sum(g.n_variates for g in series), sum(g.n_steps for g in series)
        return cls(variates, variates, steps, steps, "full")

    @classmethod
    def nothing(cls, series: "Sequence[SeriesGroup]") -> "InputUse":
        """An answerer that does not look at the series (random, frequent)."""
        return cls(0, sum(g.n_variates for g in series), 0, sum(g.n_steps for g in series), "none")


@dataclass(frozen=True)
class Answer:
    """What an answerer returns for one question."""

    raw_response: str
    parsed_answer: str | None  # exact option text, or None when it matched no option
    parse_status: str  # "json" | "answer_line" | "before_period" | "raw" | "direct" | "unmatched" | "truncated"
    latency_s: float = 0.0
    tokens_in: int | None = None
    tokens_out: int | None = None
    notes: dict[str, str] = field(default_factory=dict)
    inputs: InputUse | None = None  # None: the answerer did not say
    served_model: str | None = None  # the model name an API server says it used
    cost_usd: float | None = None  # what the call cost (API answerers; None for a cached reply or a local model)
    cache_hit: bool | None = None  # answered from the response cache (API answerers)

    @property
    def is_valid(self) -> bool:
        return self.parsed_answer is not None
