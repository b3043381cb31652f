"""Statistics behind the `stat` answerer: find, describe and measure the anomaly in one dense query group.

Pure numpy, no I/O. The caller passes a SeriesGroup (float32 [variates, steps], NaN = missing); nothing is
truncated: every variate and every step is used. The only reductions are explicit and recorded in
``GroupAnalysis.notes``: the scan over all variates runs on block sums of ``screen_block_steps`` steps (per
block the count, sum and sum of squares of z, so a spike inside a block still shows as variance), the exact
window search runs on at most ``search_blocks`` blocks and is then refined step by step, and medians / MADs
are estimated from at most ``sample_points`` evenly spaced points per variate.

Pipeline (vectorised over variates, in chunks of ``chunk_variates`` rows, two threads, so peak extra memory
stays bounded: ~250 MB at 2,283 x 40,000):

1. Baseline per variate: least squares on [1, daily and weekly harmonics where two periods fit], then again
   with a linear trend on the points within ``reject_sigma`` robust sigmas (so drift is removed but a large
   step or ramp does not tilt the line). Residual r = value - baseline.
2. Robust scale sigma = 1.4826 * MAD(first differences of r) / sqrt(2) (insensitive to level shifts), z = r / sigma.
3. Screen: per variate, the generalised likelihood ratio (GLR) of "a window [s, e) has its own mean and variance"
   against "one mean and variance", maximised over all prefixes, all suffixes and dyadic multi-scale windows of
   the block sums. It is scale-free and sees level shifts, spikes, ramps, oscillations and variance bursts.
4. Group window: the strongest variates (above a threshold that grows with the log of the number of tests) are
   re-fitted at full resolution, the window maximising the sum of their GLRs is searched exactly on a coarse
   grid and refined step by step, then the baseline (with trend) is re-fitted without the window and the window
   placed again until it settles. A change that lasts to the end is read as "started there, not resolved".
5. Per variate evidence at that window (a one-window test, so a lower threshold) -> which channels are anomalous.
6. Shape features inside the window on the strongest channels -> kind (level shift / spike / trend / seasonality
   / variance), direction, and the percent deviation at the peak relative to the baseline level. For a ramp
   (step-vs-ramp model comparison) the start moves back to where the ramp leaves the baseline.
"""

from __future__ import annotations

import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from model.records import SeriesGroup

__all__ = ["KINDS", "StatConfig", "GroupAnalysis", "analyze_group", "design_matrix", "glr"]

KINDS: tuple[str, ...] = ("level_shift", "spike", "trend", "seasonality", "variance")
_DAY_S = 86_400
_MAD_TO_SIGMA = 1.4826
_SORT_MEDIAN_MAX_STEPS = 2048  # longer rows: medians by partition (O(n)), not a full sort


@dataclass(frozen=True)
class StatConfig:
    """Knobs of the statistical analysis (defaults measured on synthetic corpora, see benchmarks/accuracy.py)."""

    chunk_variates: int = 128  # rows processed together in the full-resolution pass
    screen_blocks: int = 1024  # the all-variate scan works on at most this many blocks
    search_blocks: int = 384  # the exact window search (all start/end pairs) works on at most this many blocks
    sample_points: int = 2048  # points per variate for medians / MADs and the first baseline round
    reject_sigma: float = 4.0  # second baseline round drops points further than this (robust sigmas)
    max_refine_variates: int = 8  # strongest variates re-fitted at full resolution to place the window
    max_feature_variates: int = 4  # channels whose shape decides kind / direction / magnitude
    # Chance that a group without an anomaly is reported as anomalous (per group, over all its variates and
    # windows): sets both detection thresholds (see screen_threshold). Chosen on real incidents (WSD KPIs,
    # benchmarks/real_data.py calibration part), not on the synthetic generator.
    false_alarm_rate: float = 1e-4
    threshold_offset: float = 0.0  # added to both detection thresholds (higher = fewer detections)
    spike_max_fraction: float = 0.06  # a mean-like anomaly shorter than this fraction of the series is a spike
    same_time_fraction: float = 0.025  # correlation: onsets closer than this fraction of the span are "same time"
    threads: int = 0  # chunks processed in parallel; 0 = min(2, CPU count)

    def __post_init__(self) -> None:
        for name in ("chunk_variates", "screen_blocks", "search_blocks", "sample_points", "max_refine_variates", "max_feature_variates"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.search_blocks < 8 or self.screen_blocks < 8:
            raise ValueError("screen_blocks and search_blocks must be >= 8")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0, got {self.threads}")
        if self.reject_sigma <= 1:
            raise ValueError(f"reject_sigma must be > 1, got {self.reject_sigma}")
        if not 0.0 < self.false_alarm_rate < 1.0:
            raise ValueError(f"false_alarm_rate must be in (0, 1), got {self.false_alarm_rate}")


@dataclass
class GroupAnalysis:
    """What the statistics say about one query group. Steps index the group's grid; end is exclusive."""

    group_id: str
    n_variates: int
    n_steps: int
    start_ns: int
    interval_s: int
    detected: bool
    start: int | None = None
    end: int | None = None
    flagged: tuple[int, ...] = ()  # variate rows judged anomalous, strongest first
    evidence: np.ndarray = field(default_factory=lambda: np.zeros(0))  # per variate: > 0 means anomalous
    screen_scores: np.ndarray = field(default_factory=lambda: np.zeros(0))  # per variate GLR, best window
    window_scores: np.ndarray = field(default_factory=lambda: np.zeros(0))  # per variate GLR at the group window
    threshold: float = 0.0
    window_threshold: float = 0.0
    kind_scores: dict[str, float] = field(default_factory=dict)
    direction: int = 0  # +1 up, -1 down, 0 unknown
    direction_known: bool = False  # False for symmetric kinds (seasonality, variance): +1 is a prior
    magnitude_pct: float | None = None
    peak_step: int | None = None
    best_score: float = 0.0
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def kind(self) -> str | None:
        if not self.detected or not self.kind_scores:
            return None
        return max(self.kind_scores.items(), key=lambda item: (item[1], item[0]))[0]

    def timestamp_ns(self, step: float) -> float:
        return self.start_ns + float(step) * self.interval_s * 1e9

    def summary(self) -> str:
        if not self.detected:
            return f"no anomaly: max GLR {self.best_score:.1f} <= threshold {self.threshold:.1f}"
        kind = self.kind or "?"
        parts = [
            f"{kind} in {len(self.flagged)} of {self.n_variates} variates",
            f"steps {self.start}-{self.end}",
            f"GLR {self.best_score:.1f} (thr {self.threshold:.1f})",
            f"direction {'+' if self.direction > 0 else '-' if self.direction < 0 else '?'}",
        ]
        if self.magnitude_pct is not None:
            parts.append(f"peak {self.magnitude_pct:.0f}% of baseline")
        return "; ".join(parts)


# ----------------------------------------------------------------------------------------------------
# Small vectorised helpers
# ----------------------------------------------------------------------------------------------------


def design_matrix(n_steps: int, interval_s: int, dtype=np.float64) -> tuple[np.ndarray, list[str]]:
    """Baseline regressors [steps, k]: 1, t (scaled to [-1, 1]), daily (2 harmonics) and weekly sin/cos.

    A seasonal term is used only when at least two of its periods fit in the series and a period spans at
    least 4 steps (otherwise it cannot be told apart from the anomaly or the noise)."""
    steps = np.arange(n_steps, dtype=np.float64)
    columns = [np.ones(n_steps)]
    names = ["level"]
    if n_steps >= 8:
        half = max((n_steps - 1) / 2.0, 1.0)
        columns.append((steps - half) / half)
        names.append("trend")
    for period_s, harmonics, label in ((_DAY_S, 2, "daily"), (7 * _DAY_S, 1, "weekly")):
        period = period_s / max(int(interval_s), 1)
        if period < 4 or period > n_steps / 2:
            continue
        for harmonic in range(1, harmonics + 1):
            if period / harmonic < 4 or (harmonic > 1 and n_steps / period < 3):
                continue
            angle = 2 * np.pi * harmonic * steps / period
            columns += [np.sin(angle), np.cos(angle)]
            names += [f"{label}{harmonic}_sin", f"{label}{harmonic}_cos"]
    return np.stack(columns, axis=1).astype(dtype), names


def _row_nanmedian(a: np.ndarray) -> np.ndarray:
    """Median of each row ignoring NaN (NaN for an all-NaN row). Short rows: one sort (NaN sorts last); numpy's
    SIMD sort beats a two-point np.partition there. Long rows (the inflation profile's full-length differences):
    the two middle values by np.partition, rows with NaN through np.nanmedian; the same values, in O(n)."""
    if a.shape[1] == 0:
        return np.full(a.shape[0], np.nan)
    if a.shape[1] > _SORT_MEDIAN_MAX_STEPS:
        return _long_row_nanmedian(a)
    ordered = np.sort(a, axis=1)
    count = a.shape[1] - np.isnan(ordered).sum(axis=1)
    low = np.clip((count - 1) // 2, 0, a.shape[1] - 1)
    high = np.clip(count // 2, 0, a.shape[1] - 1)
    rows = np.arange(a.shape[0])
    median = 0.5 * (ordered[rows, low].astype(np.float64) + ordered[rows, high].astype(np.float64))
    median[count == 0] = np.nan
    return median


def _long_row_nanmedian(a: np.ndarray) -> np.ndarray:
    median = np.full(a.shape[0], np.nan)
    gaps = np.isnan(a).any(axis=1)
    if (~gaps).any():
        steps = a.shape[1]
        middle = [(steps - 1) // 2, steps // 2]
        part = np.partition(a[~gaps], middle, axis=1)
        median[~gaps] = 0.5 * (part[:, middle[0]].astype(np.float64) + part[:, middle[1]].astype(np.float64))
    if gaps.any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN row stays NaN
            median[gaps] = np.nanmedian(a[gaps].astype(np.float64), axis=1)
    return median


def _sample_index(n_steps: int, points: int) -> np.ndarray:
    if n_steps <= points:
        return np.arange(n_steps)
    return np.unique(np.linspace(0, n_steps - 1, points).astype(np.int64))


def _robust_scale(r: np.ndarray, sample: np.ndarray) -> np.ndarray:
    """sigma per row from first differences at the `sample` steps (see _robust_scale_from_diffs)."""
    first = sample[sample < r.shape[1] - 1]
    if first.size == 0:
        return np.full(r.shape[0], np.nan)
    return _robust_scale_from_diffs(r[:, first + 1].astype(np.float64) - r[:, first])


def _robust_scale_from_diffs(diffs: np.ndarray) -> np.ndarray:
    """1.4826 * MAD(diff) / sqrt(2) per row; mean-absolute-deviation fallback when the MAD is 0; NaN if flat."""
    if diffs.shape[1] == 0:
        return np.full(diffs.shape[0], np.nan)
    diffs = diffs.astype(np.float64, copy=False)
    centre = _row_nanmedian(diffs)
    deviation = np.abs(diffs - centre[:, None])
    sigma = _MAD_TO_SIGMA * _row_nanmedian(deviation) / math.sqrt(2.0)
    finite = np.isfinite(deviation)
    counts = finite.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        fallback = 1.2533 * np.where(finite, deviation, 0.0).sum(axis=1) / counts / math.sqrt(2.0)
    fallback = np.where(counts > 0, fallback, np.nan)
    sigma = np.where(np.isfinite(sigma) & (sigma > 0), sigma, fallback)
    return np.where(np.isfinite(sigma) & (sigma > 0), sigma, np.nan)


def _solve_batched(gram: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Solve gram[i] @ x = rhs[i] for many small systems, with a tiny ridge so empty rows stay finite."""
    k = gram.shape[-1]
    trace = np.trace(gram, axis1=-2, axis2=-1)
    ridge = 1e-9 * trace / k + 1e-12
    gram = gram + ridge[:, None, None] * np.eye(k)
    return np.linalg.solve(gram, rhs[..., None])[..., 0]


def glr(n_in, s1_in, s2_in, n_all, s1_all, s2_all):
    """GLR statistic (2 log likelihood ratio) of 'window has its own mean and variance' vs 'one of each'.

    Inputs are counts, sums and sums of squares (of z, so variances are in units of the noise sigma^2);
    arrays broadcast. Variance floors (0.5 sigma^2 everywhere, and 0.8 x the outside variance inside)
    keep tiny or flat windows from producing huge scores; quieter-than-noise windows are not anomalies here.
    """
    n_in = np.asarray(n_in, dtype=np.float64)
    n_out = n_all - n_in
    ok = (n_in >= 1) & (n_out >= 1)
    safe_in = np.maximum(n_in, 1.0)
    safe_out = np.maximum(n_out, 1.0)
    safe_all = np.maximum(n_all, 1.0)
    mean_in = s1_in / safe_in
    mean_out = (s1_all - s1_in) / safe_out
    var_in = s2_in / safe_in - mean_in * mean_in
    var_out = (s2_all - s2_in) / safe_out - mean_out * mean_out
    mean_all = s1_all / safe_all
    var_all = np.maximum(s2_all / safe_all - mean_all * mean_all, 0.5)
    var_out = np.maximum(var_out, 0.5)
    var_in = np.maximum(var_in, np.maximum(0.8 * var_out, 0.5))
    stat = n_all * np.log(var_all) - n_in * np.log(var_in) - n_out * np.log(var_out)
    return np.where(ok, np.maximum(stat, 0.0), 0.0)


def _screen_windows(n_blocks: int) -> tuple[np.ndarray, np.ndarray]:
    """Window (start block, end block) pairs: every prefix, every suffix and dyadic windows at half-length stride."""
    starts = [np.zeros(n_blocks - 1, dtype=np.int64), np.arange(1, n_blocks, dtype=np.int64)]
    ends = [np.arange(1, n_blocks, dtype=np.int64), np.full(n_blocks - 1, n_blocks, dtype=np.int64)]
    length = 1
    while length < n_blocks:
        stride = max(1, length // 2)
        first = np.arange(0, n_blocks - length + 1, stride, dtype=np.int64)
        starts.append(first)
        ends.append(first + length)
        length *= 2
    pairs = np.unique(np.stack([np.concatenate(starts), np.concatenate(ends)], axis=1), axis=0)
    pairs = pairs[(pairs[:, 0] < pairs[:, 1]) & ~((pairs[:, 0] == 0) & (pairs[:, 1] == n_blocks))]
    return pairs[:, 0], pairs[:, 1]


def _block_sums(z: np.ndarray, valid: np.ndarray, block: int, *, overwrite: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row and block of `block` steps: count, sum and sum of squares of the valid z (float64).
    With overwrite=True, z's missing entries are zeroed in place (saves a copy of the chunk)."""
    rows, steps = z.shape
    n_blocks = -(-steps // block)
    full = steps // block
    if overwrite:
        zv = z
        np.copyto(zv, 0, where=~valid)
    else:
        zv = np.where(valid, z, z.dtype.type(0))
    count = np.empty((rows, n_blocks))
    first = np.empty((rows, n_blocks))
    second = np.empty((rows, n_blocks))
    if full:
        head = zv[:, : full * block].reshape(rows, full, block)
        count[:, :full] = valid[:, : full * block].reshape(rows, full, block).sum(axis=2)
        first[:, :full] = head.sum(axis=2, dtype=np.float64)
        second[:, :full] = np.square(head).sum(axis=2, dtype=np.float64)
    if full < n_blocks:
        tail = zv[:, full * block :]
        count[:, full] = valid[:, full * block :].sum(axis=1)
        first[:, full] = tail.sum(axis=1, dtype=np.float64)
        second[:, full] = np.square(tail).sum(axis=1, dtype=np.float64)
    return count, first, second


def _cumsum0(a: np.ndarray) -> np.ndarray:
    out = np.zeros(a.shape[:-1] + (a.shape[-1] + 1,), dtype=np.float64)
    np.cumsum(a, axis=-1, out=out[..., 1:])
    return out


def screen_threshold(n_variates: int, n_windows: int, false_alarm_rate: float = 1e-4) -> float:
    """Threshold for the best-window GLR over all variates and windows at ``false_alarm_rate``: a Bonferroni bound
    on chi^2 with 2 degrees of freedom (a window's own mean and variance), P(GLR > t) = exp(-t/2), over
    variates x windows tests: t = 2 log(V W / alpha). The GLR is computed on each variate's own robust noise
    scale with autocorrelation taken out (see _long_run_factor), so this null holds for real series too."""
    return 2.0 * math.log(max(n_variates, 1) * max(n_windows, 1) / false_alarm_rate)


def window_threshold(n_variates: int, false_alarm_rate: float = 1e-4) -> float:
    """Threshold for one fixed window per variate (which channels are anomalous): the same chi^2_2 Bonferroni bound
    over the variates, plus 5 (about a 12x stricter rate per channel than per group: a flagged channel should be
    clearly anomalous, not merely the least normal)."""
    return 2.0 * math.log(max(n_variates, 1) / false_alarm_rate) + 5.0


# Window lengths (steps) at which the autocorrelation inflation of window means is measured; between them it is
# interpolated on log2(length).
_PROFILE_SCALES: tuple[int, ...] = tuple(2**k for k in range(0, 15))
_PROFILE_SAMPLE = 8192  # lag differences per row and scale in the inflation profile (all of them in shorter series)


def _inflation_profile(z: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per row and scale L in _PROFILE_SCALES: how much the variance of an L-step window mean exceeds that of
    independent noise (>= 1, non-decreasing in L; 1 for white noise).

    GLR scores assume independent points; real residuals wander (autocorrelation, cycles a window too short to fit
    leaves in), so a long window's mean drifts far more than 1/L of the point variance and a plain GLR fires on
    ordinary data. Estimated without a model and robustly to level shifts (which move only a few differences):
    f(L) = L * var(consecutive L-step block mean differences) / var(L-lag point differences), from robust scales.
    A window of length L (the shorter of inside and outside) has its GLR divided by f(L).
    """
    rows, steps = z.shape
    profile = np.ones((rows, len(_PROFILE_SCALES)))
    zf = np.where(valid, z, 0.0).astype(np.float64)
    lagged = np.where(valid, z, np.nan).astype(np.float64)
    for index, b in enumerate(_PROFILE_SCALES):
        if b == 1:
            continue
        full = steps // b
        if full < 8:  # too few blocks for a robust estimate: keep the largest scale measured
            profile[:, index] = profile[:, index - 1]
            continue
        counts = valid[:, : full * b].reshape(rows, full, b).sum(axis=2)
        with np.errstate(invalid="ignore", divide="ignore"):
            means = np.where(counts >= b / 2, zf[:, : full * b].reshape(rows, full, b).sum(axis=2) / np.maximum(counts, 1), np.nan)
            factor = b * np.square(_robust_scale_from_diffs(_lag_differences(means, 1)) / _robust_scale_from_diffs(_lag_differences(lagged, b)))
        profile[:, index] = np.where(np.isfinite(factor), factor, 1.0)
    profile = np.maximum.accumulate(np.clip(profile, 1.0, 1000.0), axis=1)
    return profile


def _lag_differences(lagged: np.ndarray, lag: int) -> np.ndarray:
    """x[t + lag] - x[t] per row (of points, or of block means at lag 1), at most _PROFILE_SAMPLE of them (evenly
    strided t): a robust scale needs no more, and every one of 40,000 steps at 14 scales costs seconds a group."""
    starts = lagged.shape[1] - lag
    stride = max(1, -(-starts // _PROFILE_SAMPLE))
    return lagged[:, lag::stride][:, : -(-starts // stride)] - lagged[:, : starts : stride]


def _inflation_at(profile: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """profile [rows, scales] at window ``lengths`` (steps, broadcast to [rows, windows]) by log2 interpolation."""
    position = np.clip(np.log2(np.maximum(np.asarray(lengths, dtype=np.float64), 1.0)), 0, len(_PROFILE_SCALES) - 1)
    low = np.floor(position).astype(np.int64)
    high = np.minimum(low + 1, len(_PROFILE_SCALES) - 1)
    weight = position - low
    if profile.ndim == 1:
        return profile[low] * (1 - weight) + profile[high] * weight
    take_low = np.take_along_axis(profile, np.broadcast_to(low, (profile.shape[0],) + low.shape[-1:]), axis=1)
    take_high = np.take_along_axis(profile, np.broadcast_to(high, (profile.shape[0],) + high.shape[-1:]), axis=1)
    return take_low * (1 - weight) + take_high * weight


def _window_lengths(n_in: np.ndarray, n_all: np.ndarray | float) -> np.ndarray:
    """The length that sets a window's inflation: the shorter of inside and outside."""
    return np.minimum(n_in, np.maximum(n_all - n_in, 1.0))


# ----------------------------------------------------------------------------------------------------
# Pass 1: all variates, chunked
# ----------------------------------------------------------------------------------------------------


@dataclass
class _Screen:
    block: int
    count: np.ndarray  # [V, B]
    first: np.ndarray
    second: np.ndarray
    score: np.ndarray  # [V] best-window GLR
    best_start: np.ndarray  # [V] block index
    best_end: np.ndarray
    sigma: np.ndarray  # [V] NaN = flat variate
    n_windows: int
    profile: np.ndarray  # [V, scales] autocorrelation inflation of window means (see _inflation_profile)


def _without_trend(design: np.ndarray) -> np.ndarray:
    """Column indexes of the baseline design without the linear trend (column 1 when present)."""
    k = design.shape[1]
    return np.array([0] + list(range(2, k)) if k >= 2 and _has_trend(design) else list(range(k)), dtype=np.int64)


def _has_trend(design: np.ndarray) -> bool:
    return design.shape[1] >= 2 and design.shape[0] >= 8 and abs(float(design[0, 1]) + 1.0) < 1e-6


@dataclass(frozen=True)
class _Design:
    """Baseline design for the chunked pass (float32) with the products x_i * x_j (i <= j) a WLS gram needs."""

    full: np.ndarray  # [T, k]
    full_products: np.ndarray  # [T, k (k + 1) / 2]
    first: np.ndarray  # [T, k1]: without the trend column
    first_products: np.ndarray

    @staticmethod
    def build(design: np.ndarray) -> "_Design":
        full = np.ascontiguousarray(design, dtype=np.float32)
        first = np.ascontiguousarray(full[:, _without_trend(design)])
        return _Design(full, _upper_products(full), first, _upper_products(first))


def _upper_products(x: np.ndarray) -> np.ndarray:
    rows, cols = np.triu_indices(x.shape[1])
    return np.ascontiguousarray(x[:, rows] * x[:, cols])


def _wls(y0: np.ndarray, weights: np.ndarray, design: np.ndarray, products: np.ndarray) -> np.ndarray:
    """Per-row weighted least squares coefficients [rows, k] (float32); y0 is zero where the weight is."""
    k = design.shape[1]
    upper = (weights @ products).astype(np.float64)
    rows, cols = np.triu_indices(k)
    gram = np.empty((upper.shape[0], k, k))
    gram[:, rows, cols] = upper
    gram[:, cols, rows] = upper
    rhs = (y0 @ design).astype(np.float64)
    coef = np.nan_to_num(_solve_batched(gram, rhs), nan=0.0, posinf=0.0, neginf=0.0)
    return coef.astype(np.float32)


def _fit_rows(y: np.ndarray, design: _Design, sample: np.ndarray, reject: float):
    """Robust baseline for a chunk of rows. Returns (z float32 with NaN where missing, valid mask, sigma).

    Round 1 fits level + seasonality (no trend: a linear term would tilt towards a large step and hide it) on the
    `sample` steps (at most ``sample_points``, evenly spaced): it only sets the robust sigma and the rejection
    limits. Round 2 fits level + trend + seasonality on EVERY step within `reject` robust sigmas of round 1 (its
    noise must stay far below that of the long-window means the scan compares), so drift is removed while a
    step, ramp or burst stays in the residual."""
    n_steps = y.shape[1]
    y_s = y[:, sample]
    valid_s = np.isfinite(y_s)
    centre = _row_nanmedian(y_s[:, :: max(1, sample.size // 256)])  # only centres the numbers
    centre = np.where(np.isfinite(centre), centre, 0.0).astype(np.float32)
    y0_s = np.where(valid_s, y_s - centre[:, None], np.float32(0))
    first_design = design.first[sample]
    coef = _wls(y0_s, valid_s.astype(np.float32), first_design, design.first_products[sample])
    resid_s = y0_s - coef @ first_design.T
    resid_s[~valid_s] = np.nan
    pairs = sample < n_steps - 1
    nxt = sample[pairs] + 1
    resid_n = (y[:, nxt] - centre[:, None]) - coef @ design.first[nxt].T
    sigma = _robust_scale_from_diffs(resid_n - resid_s[:, pairs])
    loc = np.nan_to_num(_row_nanmedian(resid_s)).astype(np.float32)
    limit = (reject * np.where(np.isfinite(sigma), sigma, np.inf)).astype(np.float32)
    # Round 2 at full resolution: keep = valid and within the limit of the round-1 baseline (NaN compares False).
    # Constants ride on the intercept column (all ones) to save passes over the chunk.
    coef[:, 0] += centre + loc
    work = coef @ design.first.T
    np.subtract(work, y, out=work)
    np.abs(work, out=work)
    keep = work <= limit[:, None]
    del work
    k = design.full.shape[1]
    enough = keep.sum(axis=1) >= max(2 * k, 4)
    if not enough.all():
        keep[~enough] = np.isfinite(y[~enough])
    y0 = np.where(keep, y - centre[:, None], np.float32(0))
    coef = _wls(y0, keep.astype(np.float32), design.full, design.full_products)
    del y0, keep
    # z = (y - centre - fit) / sigma, NaN where missing (NaN propagates from y).
    scale = np.maximum(np.nan_to_num(sigma, nan=0.0), 1e-6 * np.abs(centre) + 1e-30).astype(np.float32)
    coef[:, 0] += centre
    z = coef @ design.full.T
    np.subtract(y, z, out=z)
    z *= (1.0 / scale)[:, None]
    valid = np.isfinite(z)
    flat = ~np.isfinite(sigma)
    if flat.any():
        z[flat] = np.where(valid[flat], np.float32(0), np.float32(np.nan))  # flat variates carry no evidence
    return z, valid, sigma, _inflation_profile(z, valid)


def _screen(values: np.ndarray, design64: np.ndarray, config: StatConfig) -> _Screen:
    n_variates, n_steps = values.shape
    block = max(1, -(-n_steps // config.screen_blocks))
    n_blocks = -(-n_steps // block)
    starts, ends = _screen_windows(n_blocks) if n_blocks > 1 else (np.zeros(0, np.int64), np.zeros(0, np.int64))
    design = _Design.build(design64)
    sample = _sample_index(n_steps, config.sample_points)
    count = np.empty((n_variates, n_blocks))
    first = np.empty((n_variates, n_blocks))
    second = np.empty((n_variates, n_blocks))
    score = np.zeros(n_variates)
    best_start = np.zeros(n_variates, dtype=np.int64)
    best_end = np.full(n_variates, n_blocks, dtype=np.int64)
    sigma = np.empty(n_variates)
    profile = np.ones((n_variates, len(_PROFILE_SCALES)))

    def run(low: int) -> None:
        high = min(n_variates, low + config.chunk_variates)
        z, valid, sig, inflation = _fit_rows(values[low:high], design, sample, config.reject_sigma)
        sigma[low:high] = sig
        profile[low:high] = inflation
        cnt, s1, s2 = _block_sums(z, valid, block, overwrite=True)
        del z, valid
        count[low:high], first[low:high], second[low:high] = cnt, s1, s2
        if starts.size == 0:
            return
        c_cnt, c_s1, c_s2 = _cumsum0(cnt), _cumsum0(s1), _cumsum0(s2)
        n_in = c_cnt[:, ends] - c_cnt[:, starts]
        stats = glr(
            n_in,
            c_s1[:, ends] - c_s1[:, starts],
            c_s2[:, ends] - c_s2[:, starts],
            c_cnt[:, -1:],
            c_s1[:, -1:],
            c_s2[:, -1:],
        ) / _inflation_at(inflation, _window_lengths((ends - starts) * block, n_steps))
        best = np.argmax(stats, axis=1)
        score[low:high] = stats[np.arange(high - low), best]
        best_start[low:high] = starts[best]
        best_end[low:high] = ends[best]

    lows = list(range(0, n_variates, config.chunk_variates))
    threads = _threads(config, len(lows))
    # BLAS stays single-threaded: its matrices here are thin, and its spinning threads only cost CPU time.
    # numpy releases the GIL in the heavy loops, so chunks run in parallel threads instead.
    with _single_threaded_blas():
        if threads <= 1:
            for low in lows:
                run(low)
        else:
            with ThreadPoolExecutor(max_workers=threads) as pool:
                for future in [pool.submit(run, low) for low in lows]:
                    future.result()
    return _Screen(block, count, first, second, score, best_start, best_end, sigma, int(starts.size), profile)


def _threads(config: StatConfig, jobs: int) -> int:
    wanted = config.threads if config.threads > 0 else min(2, os.cpu_count() or 1)
    return max(1, min(wanted, jobs))


@contextmanager
def _single_threaded_blas():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


# ----------------------------------------------------------------------------------------------------
# Pass 2: the strongest variates at full resolution
# ----------------------------------------------------------------------------------------------------


@dataclass
class _RowDetail:
    row: int
    z: np.ndarray  # float64 [T], NaN where missing
    resid: np.ndarray  # value - baseline (original units), NaN where missing
    level: np.ndarray  # baseline without seasonality: intercept + slope * t (original units)
    sigma: float
    profile: np.ndarray | None = None  # [scales] autocorrelation inflation of window means (_inflation_profile)


def _row_detail(y: np.ndarray, row: int, design: np.ndarray, reject: float, exclude: tuple[int, int] | None = None) -> _RowDetail:
    """Robust baseline for one variate in float64; `exclude` = a window [s, e) left out of the fit."""
    y = y.astype(np.float64)
    valid = np.isfinite(y)
    n_steps = y.size
    keep = valid.copy()
    if exclude is not None:
        s, e = exclude
        pad = max(1, (e - s) // 20)
        keep[max(0, s - pad) : min(n_steps, e + pad)] = False
    k = design.shape[1]
    if keep.sum() < max(2 * k, 4):
        keep = valid.copy()
    if valid.sum() == 0:
        zeros = np.zeros(n_steps)
        return _RowDetail(row, np.full(n_steps, np.nan), np.full(n_steps, np.nan), zeros, float("nan"))
    centre = float(np.median(y[valid]))
    trend_free = _without_trend(design)

    def fit(mask: np.ndarray, cols: np.ndarray) -> np.ndarray:
        if mask.sum() < max(2 * cols.size, 4):
            cols = cols[:1]
        coef = np.zeros(k)
        try:
            coef[cols] = np.linalg.lstsq(design[mask][:, cols], y[mask] - centre, rcond=None)[0]
        except np.linalg.LinAlgError:  # only on non-finite sums (values near the float32 limit)
            pass
        return np.nan_to_num(coef, nan=0.0, posinf=0.0, neginf=0.0)

    # Without a known window the trend stays out of the fit altogether: a linear term tilts towards a step or a
    # ramp and moves the window found next (drift left in is small next to the anomalies that matter). With a
    # window, it is excluded from the fit and the trend is safe to estimate.
    all_cols = np.arange(k) if exclude is not None else trend_free
    coef = fit(keep, all_cols)
    resid = y - centre - design @ coef
    sample = _sample_index(n_steps, 8192)
    sig = _robust_scale(np.where(valid, resid, np.nan)[None, :], sample)[0]
    if np.isfinite(sig):
        inlier = keep & (np.abs(resid - np.median(resid[keep])) <= reject * sig)
        if inlier.sum() >= max(2 * k, 4):
            coef = fit(inlier, all_cols)
            resid = y - centre - design @ coef
            sig = _robust_scale(np.where(valid, resid, np.nan)[None, :], sample)[0]
    level = centre + design[:, :2] @ coef[:2] if k >= 2 else np.full(n_steps, centre + coef[0])
    resid = np.where(valid, resid, np.nan)
    scale = sig if np.isfinite(sig) and sig > 0 else float("nan")
    if np.isfinite(scale):
        scale = max(scale, 1e-6 * abs(centre) + 1e-30)
        base = resid[keep] if keep.any() else resid[valid]
        z = (resid - np.median(base)) / scale
    else:
        z = np.where(valid, 0.0, np.nan)
    profile = _inflation_profile(z[None, :], np.isfinite(z)[None, :])[0]
    return _RowDetail(row, z, resid, level, float(scale), profile)


def _pick_window(stats: np.ndarray, starts: np.ndarray, ends: np.ndarray | None = None, last: int | None = None) -> int:
    """Index of the best window, with a prior for one-change-point cases: when the best window is a prefix
    [0, c) and the complementary suffix [c, end) scores at least half as much, the suffix wins (the change at c
    is read as 'an anomaly starts at c and is not resolved', the usual incident shape). Pure mean shifts score
    the two the same; the variance floor in `glr` only favours the noisier side."""
    best = int(np.argmax(stats))
    if ends is not None and last is not None and starts[best] == 0:
        complement = np.flatnonzero((starts == ends[best]) & (ends == last))
        if complement.size and stats[complement[0]] >= 0.5 * stats[best]:
            return int(complement[0])
    return best


def _search_window(rows: list[_RowDetail], n_steps: int, blocks: int) -> tuple[int, int, float]:
    """Exact search of the window maximising the summed GLR of `rows`: all pairs on a coarse grid, then
    every start/end step within one coarse block of the coarse optimum."""
    z = np.stack([row.z for row in rows])
    valid = np.isfinite(z)
    block = max(1, -(-n_steps // blocks))
    cnt, s1, s2 = _block_sums(z.astype(np.float32) if block > 1 else z, valid, block)
    n_blocks = cnt.shape[1]
    if n_blocks < 2:
        return 0, n_steps, 0.0
    c_cnt, c_s1, c_s2 = _cumsum0(cnt), _cumsum0(s1), _cumsum0(s2)
    starts, ends = np.triu_indices(n_blocks + 1, k=1)
    keep = ~((starts == 0) & (ends == n_blocks))
    starts, ends = starts[keep], ends[keep]
    total = np.zeros(starts.size)
    for i in range(len(rows)):
        total += glr(
            c_cnt[i, ends] - c_cnt[i, starts], c_s1[i, ends] - c_s1[i, starts], c_s2[i, ends] - c_s2[i, starts],
            c_cnt[i, -1], c_s1[i, -1], c_s2[i, -1],
        ) / _inflation_at(rows[i].profile, _window_lengths((ends - starts) * block, n_steps))
    best = _pick_window(total, starts, ends, n_blocks)
    coarse_start, coarse_end = int(starts[best]) * block, min(n_steps, int(ends[best]) * block)
    if block == 1:
        return coarse_start, coarse_end, float(total[best])
    # Full-resolution refinement around the coarse boundaries.
    zf = np.where(valid, z, 0.0)
    f_cnt, f_s1, f_s2 = _cumsum0(valid.astype(np.float64)), _cumsum0(zf), _cumsum0(zf * zf)
    start_grid = np.arange(max(0, coarse_start - block), min(n_steps - 1, coarse_start + block) + 1)
    end_grid = np.arange(max(1, coarse_end - block), min(n_steps, coarse_end + block) + 1)
    s_idx, e_idx = np.meshgrid(start_grid, end_grid, indexing="ij")
    s_idx, e_idx = s_idx.ravel(), e_idx.ravel()
    keep = (s_idx < e_idx) & ~((s_idx == 0) & (e_idx == n_steps))
    s_idx, e_idx = s_idx[keep], e_idx[keep]
    if s_idx.size == 0:
        return coarse_start, coarse_end, float(total[best])
    fine = np.zeros(s_idx.size)
    for i in range(len(rows)):
        fine += glr(
            f_cnt[i, e_idx] - f_cnt[i, s_idx], f_s1[i, e_idx] - f_s1[i, s_idx], f_s2[i, e_idx] - f_s2[i, s_idx],
            f_cnt[i, -1], f_s1[i, -1], f_s2[i, -1],
        ) / _inflation_at(rows[i].profile, _window_lengths(e_idx - s_idx, n_steps))
    pick = int(np.argmax(fine))
    return int(s_idx[pick]), int(e_idx[pick]), float(fine[pick])


def _row_window_score(detail: _RowDetail, start: int, end: int) -> float:
    z = detail.z
    valid = np.isfinite(z)
    zf = np.where(valid, z, 0.0)
    inside = slice(start, end)
    score = glr(valid[inside].sum(), zf[inside].sum(), np.square(zf[inside]).sum(), valid.sum(), zf.sum(), np.square(zf).sum())
    return float(score) / float(_inflation_at(detail.profile, _window_lengths(np.float64(end - start), z.size)))


# ----------------------------------------------------------------------------------------------------
# Shape features
# ----------------------------------------------------------------------------------------------------


@dataclass
class _Shape:
    kind_scores: dict[str, float]
    direction: int
    direction_known: bool
    magnitude_pct: float | None
    peak_step: int | None
    ramp_start: int | None  # for ramps: where the fitted line leaves the baseline
    weight: float


def _step_vs_ramp(z: np.ndarray, start: int, end: int, mean_out: float, scale: float) -> tuple[float, float, int, float]:
    """Compare two ways for the deviation to reach `end`: a step (constant from s) and a ramp (0 at s, growing
    linearly to its peak at end - 1), each with its best start s in [start - 3 L, start + L / 4].

    Returns (step gain, ramp gain, ramp start, ramp peak): gains are the sum-of-squares reductions (in units of
    the noise variance) of each one-amplitude model, so they compare directly."""
    length = end - start
    low = max(0, start - 3 * length)
    high = max(low, min(end - 1, start + length // 4))
    segment = z[low:end]
    valid = np.isfinite(segment)
    d = np.where(valid, (segment - mean_out) / scale, 0.0)
    t = np.arange(low, end, dtype=np.float64)
    weights = valid.astype(np.float64)

    def from_each_start(a: np.ndarray) -> np.ndarray:  # sum over [s, end) for every s in [low, end)
        return np.cumsum(a[::-1])[::-1]

    s_d, s_td, s_w = from_each_start(d), from_each_start(t * d), from_each_start(weights)
    s_t, s_tt = from_each_start(t * weights), from_each_start(t * t * weights)
    starts = np.arange(low, high + 1)
    i = starts - low
    count = np.maximum(s_w[i], 1.0)
    step_gain = np.square(s_d[i]) / count
    m = (end - starts).astype(np.float64)
    shift = starts - 1.0  # ramp value (t - s + 1) / m: 1/m at s, 1 at end - 1
    rd = (s_td[i] - shift * s_d[i]) / m
    rr = (s_tt[i] - 2 * shift * s_t[i] + shift * shift * s_w[i]) / (m * m)
    usable = (rr > 0) & (m >= 5)
    ramp_gain = np.where(usable, np.square(rd) / np.where(usable, rr, 1.0), 0.0)
    best_ramp = int(np.argmax(ramp_gain))
    peak = float(rd[best_ramp] / rr[best_ramp]) if usable[best_ramp] else 0.0
    return float(step_gain.max()), float(ramp_gain[best_ramp]), int(starts[best_ramp]), peak


def _shape(detail: _RowDetail, start: int, end: int, n_steps: int, config: StatConfig, weight: float) -> _Shape | None:
    """Shape features of one variate in [start, end), against its baseline outside the window."""
    z = detail.z
    inside = z[start:end]
    positions = np.flatnonzero(np.isfinite(inside))
    outside = np.concatenate([z[:start], z[end:]])
    outside = outside[np.isfinite(outside)]
    if positions.size == 0:
        return None
    mean_out = float(outside.mean()) if outside.size else 0.0
    scale_out = math.sqrt(max(float(outside.var()) if outside.size > 1 else 1.0, 0.25))
    d = (inside[positions] - mean_out) / scale_out
    length = end - start
    u = positions / max(length - 1, 1)
    mean = float(d.mean())
    if positions.size >= 3 and np.ptp(u) > 0:
        slope, intercept = np.polyfit(u, d, 1)
    else:
        slope, intercept = 0.0, mean
    eps = d - (intercept + slope * u)
    var_line = float(np.square(eps).mean())
    p_level = mean * mean
    p_ramp = slope * slope / 12.0
    p_osc = max(var_line - 1.0, 0.0)
    # Periodicity: share of the in-window power (after the line) in the strongest 2 adjacent frequencies,
    # against ~ the 90th percentile of that share for white noise of the same length (2.5 ln K / K, K bins).
    periodic = 0.0
    if positions.size >= 8:
        series = np.zeros(length)
        series[positions] = eps
        power = np.square(np.abs(np.fft.rfft(series)))[1:]
        if power.size >= 4 and power.sum() > 0:
            share = float((power[:-1] + power[1:]).max() / power.sum())
            floor = min(0.95, 2.5 * math.log(power.size) / power.size)
            periodic = float(np.clip((share - floor) / max(0.1, (1.0 - floor) / 2.0), 0.0, 1.0))
    energy = p_osc / (p_osc + p_level + p_ramp + 1e-12)
    energy_like = float(np.clip((energy - 0.35) / 0.3, 0.0, 1.0))
    mean_like = 1.0 - energy_like
    step_gain, ramp_gain, ramp_from, ramp_peak = _step_vs_ramp(z, start, end, mean_out, scale_out)
    # A ramp must beat the step by a margin (the step is the simpler, commoner reading).
    rampish = 1.0 / (1.0 + math.exp(-float(np.clip((ramp_gain - step_gain - 3.0) / 4.0, -50, 50))))
    short = 1.0 if length / max(n_steps, 1) < config.spike_max_fraction else 0.0
    scores = {
        "seasonality": energy_like * periodic,
        "variance": energy_like * (1.0 - periodic),
        "trend": mean_like * rampish,
        "spike": mean_like * (1.0 - rampish) * short,
        "level_shift": mean_like * (1.0 - rampish) * (1.0 - short),
    }
    is_ramp = mean_like >= 0.5 and rampish >= 0.5
    if mean_like >= 0.5:
        signed = ramp_peak if is_ramp else mean
        direction, known = (1 if signed >= 0 else -1), True
    else:
        direction, known = 1, False  # symmetric kinds: an increase is the common case
    # Magnitude: deviation at the peak relative to the baseline level (intercept + trend, no seasonality).
    resid = detail.resid[start:end][positions]
    resid_out = np.concatenate([detail.resid[:start], detail.resid[end:]])
    resid_out = resid_out[np.isfinite(resid_out)]
    offset = float(np.median(resid_out)) if resid_out.size else 0.0
    level = float(np.nanmean(detail.level[start:end]))
    sigma = detail.sigma if math.isfinite(detail.sigma) else 0.0
    if is_ramp:
        peak = ramp_peak * scale_out * sigma
    elif mean_like >= 0.5:
        peak = float(np.median(resid - offset))
    else:
        peak = float(np.quantile(np.abs(resid - offset), 0.95))
    magnitude = 100.0 * abs(peak) / abs(level) if abs(level) > 1e-12 else None
    peak_step = int(start + positions[int(np.argmax(np.abs(d)))])
    ramp_start = ramp_from if is_ramp and ramp_from < start else None
    return _Shape(scores, direction, known, magnitude, peak_step, ramp_start, weight)


def _combine_kinds(shapes: list[_Shape]) -> dict[str, float]:
    if not shapes:
        return {}
    weights = np.array([s.weight for s in shapes])
    weights = weights / weights.sum()
    return {kind: float(sum(w * s.kind_scores[kind] for w, s in zip(weights, shapes))) for kind in KINDS}


# ----------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------


def analyze_group(group: SeriesGroup, config: StatConfig | None = None) -> GroupAnalysis:
    """Detect, place, classify and measure the anomaly of one query group (all variates, all steps)."""
    config = config or StatConfig()
    values = np.asarray(group.values)
    if values.ndim != 2:
        raise ValueError(f"group {group.group_id}: values must be 2-D [variates, steps], got shape {values.shape}")
    if values.dtype != np.float32:
        values = values.astype(np.float32)
    n_variates, n_steps = values.shape
    analysis = GroupAnalysis(group.group_id, n_variates, n_steps, int(group.start_ns), int(group.interval_s), detected=False)
    analysis.evidence = np.full(n_variates, -1.0)
    analysis.screen_scores = np.zeros(n_variates)
    analysis.window_scores = np.zeros(n_variates)
    if n_variates == 0 or n_steps < 3:
        analysis.notes["reason"] = "too small to analyse"
        return analysis
    design64, names = design_matrix(n_steps, group.interval_s)
    screen = _screen(values, design64, config)
    threshold = screen_threshold(n_variates, screen.n_windows, config.false_alarm_rate) + config.threshold_offset
    analysis.threshold = threshold
    analysis.screen_scores = screen.score
    analysis.best_score = float(screen.score.max()) if n_variates else 0.0
    analysis.notes.update(
        {
            "baseline": "+".join(names),
            "screen_block_steps": str(screen.block),
            "screen_blocks": str(screen.count.shape[1]),
            "scan_windows_per_variate": str(screen.n_windows),
            "median_sample_points": str(min(n_steps, config.sample_points)),
            "flat_variates": str(int((~np.isfinite(screen.sigma)).sum())),
        }
    )
    candidates = np.flatnonzero(screen.score > threshold)
    if candidates.size == 0:
        return analysis
    candidates = candidates[np.argsort(-screen.score[candidates], kind="stable")]
    refine_rows = [int(v) for v in candidates[: config.max_refine_variates]]
    details, start, end, total = _place_window(values, refine_rows, design64, config)
    detail_of = {d.row: d for d in details}
    _flag_variates(analysis, screen, detail_of, start, end, threshold, config)
    analysis.best_score = max(analysis.best_score, total)
    # Shape of the anomaly on the strongest channels at the group window.
    shape_rows = [int(v) for v in analysis.flagged[: config.max_feature_variates]] or refine_rows[:1]
    start, shapes = _measure_shapes(values, shape_rows, detail_of, analysis.window_scores, start, end, design64, config)
    _record_shapes(analysis, shapes)
    analysis.start, analysis.end = int(start), int(end)
    analysis.notes["window_search"] = f"exact on {min(n_steps, config.search_blocks)} blocks, refined per step; {len(refine_rows)} variates re-fitted"
    return analysis


def _place_window(values: np.ndarray, refine_rows: list[int], design64: np.ndarray, config: StatConfig) -> tuple[list, int, int, float]:
    """Place the group's anomaly window on the strongest variates at full resolution: search, then re-fit the
    baseline (now with its trend) without the window and place it again until it settles."""
    n_steps = values.shape[1]
    details = [_row_detail(values[v], v, design64, config.reject_sigma) for v in refine_rows]
    start, end, total = _search_window(details, n_steps, config.search_blocks)
    for _ in range(3):
        details = [_row_detail(values[v], v, design64, config.reject_sigma, exclude=(start, end)) for v in refine_rows]
        new_start, new_end, total = _search_window(details, n_steps, config.search_blocks)
        settled = abs(new_start - start) + abs(new_end - end) <= max(2, n_steps // 200)
        start, end = new_start, new_end
        if settled:
            break
    return details, start, end, total


def _flag_variates(analysis: GroupAnalysis, screen: _Screen, detail_of: dict, start: int, end: int, threshold: float, config: StatConfig) -> None:
    """Evidence of every variate at the group window (screen resolution; full resolution for refined rows)."""
    block = screen.block
    n_blocks = screen.count.shape[1]
    b_start = int(np.clip(round(start / block), 0, n_blocks - 1))
    b_end = int(np.clip(round(end / block), b_start + 1, n_blocks))
    inside = slice(b_start, b_end)
    at_window = glr(
        screen.count[:, inside].sum(axis=1),
        screen.first[:, inside].sum(axis=1),
        screen.second[:, inside].sum(axis=1),
        screen.count.sum(axis=1),
        screen.first.sum(axis=1),
        screen.second.sum(axis=1),
    ) / _inflation_at(screen.profile, np.array([_window_lengths(float(end - start), analysis.n_steps)]))[:, 0]
    for row, detail in detail_of.items():
        at_window[row] = _row_window_score(detail, start, end)
    w_threshold = window_threshold(analysis.n_variates, config.false_alarm_rate) + config.threshold_offset
    evidence = np.maximum((at_window - w_threshold) / max(4.0, 0.25 * w_threshold), (screen.score - threshold) / max(4.0, 0.25 * threshold))
    flagged = np.flatnonzero(evidence > 0)
    flagged = flagged[np.argsort(-at_window[flagged], kind="stable")]
    analysis.detected = True
    analysis.window_scores = at_window
    analysis.window_threshold = w_threshold
    analysis.evidence = evidence
    analysis.flagged = tuple(int(v) for v in flagged)


def _measure_shapes(
    values: np.ndarray, shape_rows: list[int], detail_of: dict, at_window: np.ndarray, start: int, end: int,
    design64: np.ndarray, config: StatConfig,
) -> tuple[int, list[_Shape]]:
    """The anomaly's shape on ``shape_rows``; a ramp's start moves back to where it leaves the baseline."""
    n_steps = values.shape[1]

    def describe(window_start: int) -> list[_Shape]:
        shapes = []
        for row in shape_rows:
            detail = detail_of.get(row) if window_start == start else None
            if detail is None:
                detail = _row_detail(values[row], row, design64, config.reject_sigma, exclude=(window_start, end))
            shape = _shape(detail, window_start, end, n_steps, config, max(float(at_window[row]), 1e-6))
            if shape is not None:
                shapes.append(shape)
        return shapes

    shapes = describe(start)
    kind_scores = _combine_kinds(shapes)
    if kind_scores and max(kind_scores, key=kind_scores.get) == "trend":
        # A ramp leaves the baseline gradually, so the GLR window starts late: move the start to where the
        # fitted ramp meets the baseline, re-fit the baseline without it and measure again (settles in 1-2).
        for _ in range(3):
            ramp_starts = [s.ramp_start for s in shapes if s.ramp_start is not None]
            if not ramp_starts or int(np.median(ramp_starts)) >= start:
                break
            refined = describe(int(np.median(ramp_starts)))
            if not refined or _combine_kinds(refined).get("trend", 0.0) < 0.5:
                break
            start, shapes = int(np.median(ramp_starts)), refined
    return start, shapes


def _record_shapes(analysis: GroupAnalysis, shapes: list[_Shape]) -> None:
    """Kind scores, direction (weighted vote of the channels that know it), median magnitude, peak step."""
    if not shapes:
        return
    weights = np.array([s.weight for s in shapes])
    weights = weights / weights.sum()
    analysis.kind_scores = _combine_kinds(shapes)
    lead = shapes[0]
    votes = sum(w * s.direction for w, s in zip(weights, shapes) if s.direction_known)
    known = any(s.direction_known for s in shapes)
    analysis.direction = (1 if votes >= 0 else -1) if known else lead.direction
    analysis.direction_known = known
    mags = [s.magnitude_pct for s in shapes if s.magnitude_pct is not None]
    analysis.magnitude_pct = float(np.median(mags)) if mags else None
    analysis.peak_step = lead.peak_step
