"""Synthetic ARFBench-style corpora: realistic multivariate metrics with injected anomalies, answers known.

Base series per variate = level + noise + daily/weekly seasonality + drift; one anomaly (level shift,
transient spike, change in trend, change in seasonality or change in variance) is injected into chosen
variates at a chosen window with a chosen magnitude, or none at all. Questions of all 8 categories and
3 tiers are written in the release's formats ("YYYY-MM-DD HH:MM:SS" timestamps, magnitudes, channel tag
lists, "No Anomaly" variants), with the true answer known by construction.

Series files are written variate chunk by variate chunk (one Parquet row group each), so a full-size
2,283 x 40,000 group never exists as a long table in memory. Seeded and deterministic.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from model.records import CATEGORIES
from tasks.corpus import QA_FILE, SERIES_DIR

TIER_OF_CATEGORY: dict[str, str] = {
    "Anomaly Presence": "Tier 1",
    "Anomaly Start": "Tier 2",
    "Anomaly End": "Tier 2",
    "Anomaly Categorization": "Tier 2",
    "Anomaly Magnitude": "Tier 2",
    "Anomaly Identification": "Tier 2",
    "Anomaly Indicator": "Tier 3",
    "Anomaly Correlation": "Tier 3",
}
ANOMALY_KINDS: tuple[str, ...] = (
    "Level Shift",
    "Transient Spike",
    "Change in Trend",
    "Change in Seasonality",
    "Change in Variance",
)
NO_ANOMALY = "No Anomaly"
PRESENCE_YES = "Yes, there is an anomaly in the time-series"
PRESENCE_NO = "No, there is no anomaly in the time-series"
BEFORE_EARLIEST = "Before the earliest timestamp"
NOT_RESOLVED = "Not resolved"
NO_CHANNEL = "No anomaly among the listed channels"
INDICATOR_DEGRADED = "Yes, the anomaly indicates a degradation"
INDICATOR_IMPROVED = "No, the anomaly indicates an improvement"
CORRELATION_SAME_TIME = "Yes, both series show an anomaly at the same time"
CORRELATION_DIFFERENT_TIME = "No, the anomalies occur at different times"
CORRELATION_ONE_ONLY = "No, only one of the series shows an anomaly"
CORRELATION_NEITHER = "No anomaly in either series"
# Magnitude answers are percent deviations from the baseline level, as in the release ("0.1", "25", "1,000"). The
# smallest, 5%, is at the noise level (noise sd 2-6% of the level, 4-12% with production-like noise).
MAGNITUDE_LADDER: tuple[float, ...] = (5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0)
# Shares of anomalies already under way when the window opens (start: "Before the earliest timestamp") and still
# under way when it closes (end: "Not resolved"), for the kinds that can last (not transient spikes).
BEFORE_EARLIEST_SHARE = 0.15
NOT_RESOLVED_SHARE = 0.25
INTERVALS_S: tuple[int, ...] = (10, 60, 300, 1800, 3600, 86400)
METRICS: tuple[tuple[str, str], ...] = (  # (metric name, which direction is worse)
    ("trace.http.request.errors", "higher"),
    ("trace.http.request.duration.p99", "higher"),
    ("system.cpu.user", "higher"),
    ("kafka.consumer.lag", "higher"),
    ("trace.http.request.hits", "lower"),
    ("aws.elb.healthy_host_count", "lower"),
    ("queue.throughput", "lower"),
)
TAG_KEYS: tuple[str, ...] = ("service", "host", "pod_name", "region", "env")
_NS_PER_S = 1_000_000_000
_EPOCH_2024_NS = int(datetime(2024, 1, 1, tzinfo=timezone.utc).timestamp()) * _NS_PER_S


@dataclass(frozen=True)
class SynthConfig:
    """What to synthesize. Sizes are per query group: variates and steps are drawn log-uniformly up to the max."""

    n_questions: int = 40
    max_variates: int = 16
    max_steps: int = 512
    seed: int = 0
    min_variates: int = 1
    min_steps: int = 64
    questions_per_group: int = 3
    no_anomaly_fraction: float = 0.2
    missing_fraction: float = 0.01  # rows dropped from the long table (gaps)
    null_fraction: float = 0.002  # rows kept with a null value
    target_rows_per_row_group: int = 1_000_000
    # Fraction of groups with production-like noise: autocorrelated (AR(1)), twice as loud, with benign one-step
    # outliers in any variate. 0 keeps every group clean white noise (the default for tests).
    realism: float = 0.0

    def __post_init__(self) -> None:
        if self.n_questions < 1:
            raise ValueError("n_questions must be >= 1")
        if self.max_variates < 2:
            raise ValueError("max_variates must be >= 2 (identification questions need two channels)")
        if not 1 <= self.min_variates <= self.max_variates:
            raise ValueError(f"need 1 <= min_variates <= max_variates, got {self.min_variates}, {self.max_variates}")
        if self.max_steps < 16:
            raise ValueError(f"max_steps must be >= 16, got {self.max_steps}")
        if not 0.0 <= self.realism <= 1.0:
            raise ValueError(f"realism must be in [0, 1], got {self.realism}")
        if not 0 <= self.missing_fraction < 0.5 or not 0 <= self.null_fraction < 0.5:
            raise ValueError("missing_fraction and null_fraction must be in [0, 0.5)")


@dataclass(frozen=True)
class AnomalySpec:
    """One injected anomaly: steps [start, end) of the chosen variates; end == n_steps means not resolved."""

    kind: str
    start: int
    end: int
    variates: tuple[int, ...]  # rows in the sorted variate order
    magnitude_pct: float
    direction: int  # +1 up, -1 down


@dataclass(frozen=True)
class GroupPlan:
    """Everything needed to write one query group's series file, deterministically."""

    incident: int
    index: int
    n_variates: int
    n_steps: int
    interval_s: int
    start_ns: int
    metric: str
    worse: str
    variate_names: tuple[str, ...]  # sorted
    anomaly: AnomalySpec | None
    seed: int
    noise_ar: float = 0.0  # > 0: production-like noise (AR(1) coefficient), louder, with benign outliers

    @property
    def group_id(self) -> str:
        return f"{self.incident}_{self.index}"

    @property
    def file_name(self) -> str:
        return f"{self.incident}_{self.index}_{self.interval_s}.parquet"

    def timestamp(self, step: int) -> str:
        stamp = self.start_ns + step * self.interval_s * _NS_PER_S
        return datetime.fromtimestamp(stamp / _NS_PER_S, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


@dataclass(frozen=True)
class QuestionPlan:
    question: str
    category: str
    options: tuple[str, ...]
    correct_answer: str
    query_groups: tuple[str, ...]
    options_as_values: bool = False  # write options_str as [{"value": ...}] (the release uses both)


@dataclass
class CorpusPlan:
    groups: list[GroupPlan] = field(default_factory=list)
    questions: list[QuestionPlan] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------------
# Planning (cheap, no series data)
# ----------------------------------------------------------------------------------------------------


def _log_uniform_int(rng: np.random.Generator, low: int, high: int) -> int:
    if high <= low:
        return int(high)
    return int(round(math.exp(rng.uniform(math.log(low), math.log(high)))))


def _variate_names(rng: np.random.Generator, count: int) -> tuple[str, ...]:
    keys = list(rng.choice(TAG_KEYS, size=2, replace=False))
    names: set[str] = set()
    while len(names) < count:
        first = f"{keys[0]}:{rng.choice(['web', 'api', 'db', 'cache', 'auth', 'checkout', 'search'])}-{int(rng.integers(0, 10_000))}"
        names.add(f"{first},{keys[1]}:{int(rng.integers(0, 100_000)):05d}")
    return tuple(sorted(names))


def plan_group(
    rng: np.random.Generator,
    incident: int,
    index: int,
    n_variates: int,
    n_steps: int,
    *,
    interval_s: int | None = None,
    start_ns: int | None = None,
    anomaly_kind: str | None = "random",
    metric: tuple[str, str] | None = None,
) -> GroupPlan:
    """Plan one group. anomaly_kind: a kind, None for no anomaly, or "random"."""
    interval_s = int(rng.choice(INTERVALS_S)) if interval_s is None else interval_s
    if start_ns is None:
        start_ns = _EPOCH_2024_NS + int(rng.integers(0, 600)) * 86400 * _NS_PER_S
        start_ns -= start_ns % (interval_s * _NS_PER_S)
    metric_name, worse = metric if metric is not None else METRICS[int(rng.integers(0, len(METRICS)))]
    kind = str(rng.choice(ANOMALY_KINDS)) if anomaly_kind == "random" else anomaly_kind
    anomaly = _plan_anomaly(rng, kind, n_variates, n_steps) if kind is not None else None
    return GroupPlan(
        incident=incident,
        index=index,
        n_variates=n_variates,
        n_steps=n_steps,
        interval_s=interval_s,
        start_ns=start_ns,
        metric=metric_name,
        worse=worse,
        variate_names=_variate_names(rng, n_variates),
        anomaly=anomaly,
        seed=int(rng.integers(0, 2**31 - 1)),
    )


def _window(rng: np.random.Generator, kind: str, n_steps: int) -> tuple[int, int]:
    """[start, end) of an anomaly of ``kind``; start 0 = under way before the window, end n_steps = not resolved."""
    if kind == "Transient Spike":
        width = max(1, int(n_steps * rng.uniform(0.005, 0.02)))
        start = int(rng.integers(int(n_steps * 0.1), int(n_steps * 0.9)))
        return start, min(n_steps, start + width)
    length = max(4, int(n_steps * rng.uniform(0.1, 0.35)))
    if rng.random() < BEFORE_EARLIEST_SHARE:
        return 0, min(n_steps - 1, length)  # under way when the window opens; resolved inside it
    start = int(rng.integers(int(n_steps * 0.1), int(n_steps * 0.8)))
    return start, n_steps if rng.random() < NOT_RESOLVED_SHARE else min(n_steps, start + length)


def _plan_anomaly(rng: np.random.Generator, kind: str, n_variates: int, n_steps: int) -> AnomalySpec:
    n_affected = _n_affected(rng, n_variates)
    variates = tuple(sorted(int(v) for v in rng.choice(n_variates, size=n_affected, replace=False)))
    start, end = _window(rng, kind, n_steps)
    magnitude = _magnitude(rng, kind)
    direction = int(rng.choice([1, -1])) if magnitude < 100 else 1  # a drop cannot exceed 100%
    return AnomalySpec(kind, start, end, variates, magnitude, direction)


def _magnitude(rng: np.random.Generator, kind: str) -> float:
    return float(rng.choice(MAGNITUDE_LADDER[1:] if kind == "Transient Spike" else MAGNITUDE_LADDER))


def _n_affected(rng: np.random.Generator, n_variates: int) -> int:
    return 1 if n_variates < 2 else int(rng.choice([1, 1, 2, 3])) if n_variates >= 3 else int(rng.choice([1, 2]))


def _distractor_steps(rng: np.random.Generator, taken: list[int], n_steps: int, count: int, edge: str) -> list[int]:
    """``count`` wrong start (``edge`` "start") or last (``edge`` "end") steps drawn from the same distribution as
    true ones (windows of random kinds), at least 1/25 of the series from the true step and from each other: the
    options alone tell nothing about which one is right."""
    gap = max(1, n_steps // 25)
    picked: list[int] = []
    for _ in range(200 * count):
        start, end = _window(rng, str(rng.choice(ANOMALY_KINDS)), n_steps)
        if (edge == "start" and start == 0) or (edge == "end" and end >= n_steps):
            continue  # those are the special options, not timestamps
        step = start if edge == "start" else end - 1
        if all(abs(step - other) >= gap for other in taken + picked):
            picked.append(step)
            if len(picked) == count:
                break
    return sorted(picked)


def _caption(group: GroupPlan) -> str:
    keys = sorted({part.split(":", 1)[0] for part in group.variate_names[0].split(",")})
    return (
        f"The time series shows the metric {group.metric} grouped by {', '.join(keys)} "
        f"({group.n_variates} series, one point every {group.interval_s} seconds, "
        f"from {group.timestamp(0)} to {group.timestamp(group.n_steps - 1)}). "
        f"For this metric, {group.worse} values are worse."
    )


def _question_for(rng: np.random.Generator, category: str, group: GroupPlan) -> QuestionPlan:
    anomaly = group.anomaly
    caption = _caption(group)
    as_values = bool(rng.random() < 0.2)
    if category == "Anomaly Presence":
        options = [PRESENCE_YES, PRESENCE_NO]
        correct = PRESENCE_YES if anomaly else PRESENCE_NO
        text = "Is there an anomaly in this time series?"
    elif category == "Anomaly Start":
        text = "What is the start time of the anomaly?"
        if anomaly is None or anomaly.start == 0:
            stamps = _distractor_steps(rng, [], group.n_steps, 3, "start")
            correct = NO_ANOMALY if anomaly is None else BEFORE_EARLIEST
        else:
            stamps = sorted(_distractor_steps(rng, [anomaly.start], group.n_steps, 2, "start") + [anomaly.start])
            correct = group.timestamp(anomaly.start)
        options = [BEFORE_EARLIEST] + [group.timestamp(step) for step in stamps] + [NO_ANOMALY]
    elif category == "Anomaly End":
        text = "At what time had the metric recovered from the anomaly (its last anomalous point)?"
        if anomaly is None or anomaly.end >= group.n_steps:
            stamps = _distractor_steps(rng, [], group.n_steps, 3, "end")
            correct = NO_ANOMALY if anomaly is None else NOT_RESOLVED
        else:
            last = anomaly.end - 1
            stamps = sorted(_distractor_steps(rng, [last], group.n_steps, 2, "end") + [last])
            correct = group.timestamp(last)
        options = [group.timestamp(step) for step in stamps] + [NOT_RESOLVED, NO_ANOMALY]
    elif category == "Anomaly Categorization":
        text = "Which category best describes the anomaly?"
        options = list(ANOMALY_KINDS) + [NO_ANOMALY]
        correct = anomaly.kind if anomaly else NO_ANOMALY
    elif category == "Anomaly Magnitude":
        text = "By how many percent does the anomalous series deviate from its normal level at the anomaly's peak?"
        # Four sizes: the true one and three drawn from the same distribution as true sizes (anomalies of the kinds
        # magnitude questions ask about), so neither the values nor their order point at the answer.
        truth = anomaly.magnitude_pct if anomaly else _magnitude(rng, str(rng.choice(["Level Shift", "Transient Spike"])))
        sizes = {truth}
        while len(sizes) < 4:
            sizes.add(_magnitude(rng, str(rng.choice(["Level Shift", "Transient Spike"]))))
        options = [f"{value:,.0f}" for value in sorted(sizes)] + [NO_ANOMALY]
        correct = f"{truth:,.0f}" if anomaly else NO_ANOMALY
    elif category == "Anomaly Identification":
        text = "Which of the listed channels show the anomaly?"
        options, correct = _identification_options(rng, group)
    elif category == "Anomaly Indicator":
        text = "Does the anomaly indicate a degradation of the service?"
        options = [INDICATOR_DEGRADED, INDICATOR_IMPROVED, NO_ANOMALY]
        if anomaly is None:
            correct = NO_ANOMALY
        else:
            went_up = anomaly.direction > 0
            correct = INDICATOR_DEGRADED if went_up == (group.worse == "higher") else INDICATOR_IMPROVED
    else:
        raise ValueError(f"{category} is not a single-group category")
    order = rng.permutation(len(options)) if category in ("Anomaly Categorization", "Anomaly Indicator") else range(len(options))
    options = [options[int(i)] for i in order]
    return QuestionPlan(f"{caption}\n{text}", category, tuple(options), correct, (group.group_id,), as_values)


def _identification_options(rng: np.random.Generator, group: GroupPlan) -> tuple[list[str], str]:
    """Up to four channel sets (the true one among them) of 1-3 channels, plus the no-anomaly option."""
    names = group.variate_names
    truth = tuple(names[i] for i in group.anomaly.variates) if group.anomaly else ()
    joiner = " and " if rng.random() < 0.3 else ", "
    channel_sets: list[tuple[str, ...]] = [truth] if truth else []
    for _ in range(80):  # distractor sets sized like true ones, so the number of channels says nothing
        if len(channel_sets) >= 4:
            break
        size = _n_affected(rng, len(names))
        candidate = tuple(sorted(str(name) for name in rng.choice(names, size=size, replace=False)))
        if candidate not in channel_sets:
            channel_sets.append(candidate)
    order = rng.permutation(len(channel_sets))
    options = [joiner.join(channel_sets[int(i)]) for i in order] + [NO_CHANNEL]
    return options, joiner.join(truth) if truth else NO_CHANNEL


def _correlation_question(rng: np.random.Generator, first: GroupPlan, second: GroupPlan) -> QuestionPlan:
    a, b = first.anomaly, second.anomaly
    if a is None and b is None:
        correct = CORRELATION_NEITHER
    elif a is None or b is None:
        correct = CORRELATION_ONE_ONLY
    elif abs(a.start - b.start) <= max(1, first.n_steps // 50):
        correct = CORRELATION_SAME_TIME
    else:
        correct = CORRELATION_DIFFERENT_TIME
    options = (CORRELATION_SAME_TIME, CORRELATION_DIFFERENT_TIME, CORRELATION_ONE_ONLY, CORRELATION_NEITHER)
    text = (
        f"Series A: {_caption(first)}\nSeries B: {_caption(second)}\n"
        "Are the anomalies in series A and series B correlated in time?"
    )
    return QuestionPlan(text, "Anomaly Correlation", options, correct, (first.group_id, second.group_id))


def _compatible(category: str, group: GroupPlan) -> bool:
    if category == "Anomaly Identification":
        return group.n_variates >= 2
    if category == "Anomaly Magnitude":
        return group.anomaly is None or group.anomaly.kind in ("Level Shift", "Transient Spike")
    return True


def plan_corpus(config: SynthConfig) -> CorpusPlan:
    """Decide every group and question (no series data yet). Categories are taken round-robin."""
    rng = np.random.default_rng(config.seed)
    plan = CorpusPlan()
    open_groups: list[tuple[GroupPlan, set[str]]] = []
    incident = 30_000

    def new_group(index: int = 0, anomaly_kind: str | None | object = ..., **overrides) -> GroupPlan:
        n_variates = _log_uniform_int(rng, config.min_variates, config.max_variates)
        n_steps = overrides.pop("n_steps", None) or _log_uniform_int(rng, min(config.min_steps, config.max_steps), config.max_steps)
        if anomaly_kind is ...:
            anomaly_kind = None if rng.random() < config.no_anomaly_fraction else "random"
        group = plan_group(rng, incident, index, n_variates, n_steps, anomaly_kind=anomaly_kind, **overrides)
        # Drawn only when asked for, so corpora with realism 0 stay identical to earlier releases of a seed.
        if config.realism > 0 and rng.random() < config.realism:
            group = replace(group, noise_ar=float(rng.uniform(0.5, 0.9)))
        return group

    for number in range(config.n_questions):
        category = CATEGORIES[number % len(CATEGORIES)]
        incident += 1
        if category == "Anomaly Correlation":
            first = new_group(0)
            shared = {"interval_s": first.interval_s, "start_ns": first.start_ns, "n_steps": first.n_steps}
            second = new_group(1, **shared)
            if first.anomaly is not None and second.anomaly is not None and rng.random() < 0.6:
                # Correlated incident: the partner's anomaly starts (and ends) with the first one's.
                second = replace(second, anomaly=replace(second.anomaly, start=first.anomaly.start, end=first.anomaly.end))
            plan.groups += [first, second]
            plan.questions.append(_correlation_question(rng, first, second))
            continue
        slot = next(
            (entry for entry in open_groups if category not in entry[1] and _compatible(category, entry[0])),
            None,
        )
        if slot is None:
            group = new_group(0)
            while not _compatible(category, group):
                group = new_group(0, anomaly_kind="Level Shift" if category == "Anomaly Magnitude" else ...)
            slot = (group, set())
            plan.groups.append(group)
            open_groups.append(slot)
        group, used = slot
        used.add(category)
        if len(used) >= config.questions_per_group:
            open_groups.remove(slot)
        plan.questions.append(_question_for(rng, category, group))
    return plan


# ----------------------------------------------------------------------------------------------------
# Writing (streamed)
# ----------------------------------------------------------------------------------------------------

SERIES_SCHEMA = pa.schema(
    [
        ("timestamp", pa.timestamp("ns")),
        ("group", pa.string()),
        ("value", pa.float64()),
        ("num_groups", pa.int64()),
        ("query_name", pa.string()),
    ]
)


def _base_values(rng: np.random.Generator, group: GroupPlan, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Baseline values [len(rows), steps] plus each row's level and noise scale."""
    steps = np.arange(group.n_steps, dtype=np.float64)
    count = len(rows)
    level = np.exp(rng.normal(3.0, 1.5, size=count))
    noise_scale = level * rng.uniform(0.02, 0.06, size=count)
    noise = rng.standard_normal((count, group.n_steps))
    if group.noise_ar > 0:
        # Production-like noise: autocorrelated (stationary AR(1)), twice as loud, with benign one-step outliers.
        from scipy.signal import lfilter

        noise = lfilter([np.sqrt(1.0 - group.noise_ar**2)], [1.0, -group.noise_ar], noise, axis=1)
        noise_scale = noise_scale * 2.0
        outliers = rng.random(noise.shape) < 2e-4
        noise[outliers] += rng.choice([-1.0, 1.0], size=int(outliers.sum())) * rng.uniform(5.0, 9.0, size=int(outliers.sum()))
    values = level[:, None] + noise_scale[:, None] * noise
    for period_s, weight in ((86_400, 0.15), (7 * 86_400, 0.05)):
        period = period_s / group.interval_s
        if 4 <= period <= group.n_steps / 2:
            amplitude = level * rng.uniform(0.0, weight, size=count)
            phase = rng.uniform(0, 2 * np.pi, size=count)
            values += amplitude[:, None] * np.sin(2 * np.pi * steps[None, :] / period + phase[:, None])
    drift = level * rng.normal(0.0, 0.02, size=count) / group.n_steps
    values += drift[:, None] * steps[None, :]
    return values, level, noise_scale


def _inject(values: np.ndarray, rows: np.ndarray, level: np.ndarray, noise: np.ndarray, group: GroupPlan, rng: np.random.Generator) -> None:
    anomaly = group.anomaly
    if anomaly is None:
        return
    affected = np.flatnonzero(np.isin(rows, anomaly.variates))
    window = slice(anomaly.start, anomaly.end)
    length = anomaly.end - anomaly.start
    for row in affected:
        size = anomaly.direction * anomaly.magnitude_pct / 100.0 * level[row]
        if anomaly.kind in ("Level Shift", "Transient Spike"):
            values[row, window] += size
        elif anomaly.kind == "Change in Trend":
            values[row, window] += size * np.linspace(0.0, 1.0, length)  # back to baseline after the window
        elif anomaly.kind == "Change in Seasonality":
            period = max(4.0, length / 4)
            values[row, window] += abs(size) * np.sin(2 * np.pi * np.arange(length) / period)
        elif anomaly.kind == "Change in Variance":
            values[row, window] += (abs(size) + 3 * noise[row]) * rng.standard_normal(length)


def write_group(plan: GroupPlan, directory: str, config: SynthConfig | None = None) -> str:
    """Write one group's long Parquet file, a row group per variate chunk; returns its path."""
    config = config or SynthConfig()
    rng = np.random.default_rng(plan.seed)
    path = os.path.join(directory, plan.file_name)
    temp_path = path + ".tmp"
    per_chunk = max(1, config.target_rows_per_row_group // plan.n_steps)
    write_order = rng.permutation(plan.n_variates)  # files are not sorted by variate: the reader must sort
    stamps = plan.start_ns + np.arange(plan.n_steps, dtype=np.int64) * plan.interval_s * _NS_PER_S
    query_name = pa.scalar(f"avg:{plan.metric}{{*}} by {{{plan.variate_names[0].split(':')[0]}}}")
    with pq.ParquetWriter(temp_path, SERIES_SCHEMA, compression="snappy") as writer:
        for first in range(0, plan.n_variates, per_chunk):
            rows = np.sort(write_order[first : first + per_chunk])
            values, level, noise = _base_values(rng, plan, rows)
            _inject(values, rows, level, noise, plan, rng)
            keep = rng.random(values.shape) >= config.missing_fraction
            keep[:, 0] = True  # every variate keeps its first point, so the grid's start is the same
            keep[:, -1] = True
            nulls = (rng.random(values.shape) < config.null_fraction) & keep
            nulls[:, 0] = False
            row_index, step_index = np.nonzero(keep)
            chunk_values = values[row_index, step_index]
            null_mask = nulls[row_index, step_index]
            names = pa.array([plan.variate_names[int(r)] for r in rows], pa.string())
            table = pa.table(
                {
                    "timestamp": pa.array(stamps[step_index], pa.timestamp("ns")),
                    "group": names.take(pa.array(row_index, pa.int32())),
                    "value": pa.array(chunk_values, pa.float64(), mask=null_mask),
                    "num_groups": pa.array(np.full(len(row_index), plan.n_variates, dtype=np.int64)),
                    "query_name": pa.repeat(query_name, len(row_index)),
                },
                schema=SERIES_SCHEMA,
            )
            writer.write_table(table, row_group_size=len(row_index) + 1)
            del table, values, keep, nulls, row_index, step_index, chunk_values
    os.replace(temp_path, path)
    return path


def write_questions(questions: list[QuestionPlan], path: str) -> str:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["question", "task_category", "difficulty", "options_str", "correct_answer", "query_group", "interpolate_1", "interpolate_2"])
        for question in questions:
            if question.options_as_values:
                options_str = json.dumps([{"value": option} for option in question.options])
            else:
                options_str = json.dumps(list(question.options))
            writer.writerow(
                [
                    question.question,
                    question.category,
                    TIER_OF_CATEGORY[question.category],
                    options_str,
                    question.correct_answer,
                    ", ".join(question.query_groups),
                    "",
                    "",
                ]
            )
    return path


def synthesize_corpus(out: str, config: SynthConfig, on_group: Callable[[GroupPlan], None] | None = None) -> CorpusPlan:
    """Write a whole corpus (csv + one Parquet per group) under `out`; returns the plan."""
    plan = plan_corpus(config)
    series_dir = os.path.join(out, SERIES_DIR)
    os.makedirs(series_dir, exist_ok=True)
    for group in plan.groups:
        write_group(group, series_dir, config)
        if on_group is not None:
            on_group(group)
    write_questions(plan.questions, os.path.join(out, QA_FILE))
    return plan
