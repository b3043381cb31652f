"""Uncertainty of the metrics: cluster-bootstrap intervals and paired run comparisons (pure functions, no I/O).

Questions that share a query group are not independent (they ask about the same incident), so the bootstrap
resamples clusters, not questions: a cluster is a connected set of questions linked by shared query groups (a pair
question joins its two groups' clusters). Each of ``B`` resamples draws as many clusters as there are, with
replacement (seeded: the same seed gives the same intervals); every metric is recomputed on the resample with the
exact definitions of tasks/metrics.py (accuracy; binned macro F1 per category with its invalid-prediction rule
applied once on the original rows; tier and overall F1 weighted by category size) and the interval is the 2.5th
and 97.5th percentile. With one question per group this is the plain (row) bootstrap.

A paired comparison of two runs uses the same resamples for both, on the questions both answered, so the interval
of the difference reflects only how the runs differ; McNemar's exact test (binomial on the discordant questions)
gives the p-value of "the two runs are equally accurate".
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from model.records import CATEGORIES, TIERS
from tasks.metrics import _ordered, _prepare, _sort_rows, binned_pairs

__all__ = [
    "DEFAULT_BOOTSTRAP",
    "INTERVAL_COLUMNS",
    "bootstrap_intervals",
    "bootstrap_weights",
    "cluster_ids",
    "compare_runs",
    "mcnemar_p",
]

DEFAULT_BOOTSTRAP = 1000
INTERVAL_COLUMNS: tuple[str, ...] = ("accuracy_lo", "accuracy_hi", "macro_f1_lo", "macro_f1_hi")


def cluster_ids(query_groups: Sequence[str]) -> np.ndarray:
    """Cluster index per question: questions sharing any query group id are in one cluster (union-find)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    groups = [[g.strip() for g in str(text).split(",") if g.strip()] or [f"__row{i}"] for i, text in enumerate(query_groups)]
    for ids in groups:
        for other in ids[1:]:
            parent[find(other)] = find(ids[0])
    roots = [find(ids[0]) for ids in groups]
    index: dict[str, int] = {}
    return np.array([index.setdefault(root, len(index)) for root in roots], dtype=np.int64)


def bootstrap_weights(clusters: np.ndarray, resamples: int, seed: int = 0) -> np.ndarray:
    """[resamples, rows]: how many times each row's cluster was drawn in each resample."""
    n_clusters = int(clusters.max()) + 1 if clusters.size else 0
    draws = np.random.default_rng(seed).integers(0, max(n_clusters, 1), size=(resamples, n_clusters))
    counts = np.zeros((resamples, max(n_clusters, 1)))
    np.add.at(counts, (np.arange(resamples)[:, None], draws), 1.0)
    return counts[:, clusters]


@dataclass
class _Scored:
    """One run's rows prepared once: correctness, category / tier per row, and each category's F1 classes."""

    frame: pd.DataFrame
    correct: np.ndarray
    categories: list[str]
    f1_parts: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, int]]  # category -> (rows, truth idx, pred idx, labels)


def _score(rows: pd.DataFrame) -> _Scored:
    """Rows of one (run, answerer), in the metrics' order, with the F1 procedure applied as compute_metrics does."""
    frame = _sort_rows(_prepare(rows)).reset_index(drop=True)
    rng = random.Random(0)
    parts = {}
    for category in dict.fromkeys(frame["category"]):
        members = np.flatnonzero((frame["category"] == category).to_numpy())
        positions, truths, preds, labels, _ = binned_pairs(frame.iloc[members], rng=rng)
        code = {label: i for i, label in enumerate(labels)}
        parts[category] = (
            members[np.array(positions, dtype=np.int64)],
            np.array([code[t] for t in truths], dtype=np.int64),
            np.array([code.get(p, -1) for p in preds], dtype=np.int64),  # -1: the sentinel class, outside the labels
            len(labels),
        )
    return _Scored(frame, frame["correct"].to_numpy(dtype=np.float64), list(parts), parts)


def _macro_f1(weights: np.ndarray, truth: np.ndarray, pred: np.ndarray, n_labels: int) -> np.ndarray:
    """Macro F1 over the labels per resample (weights [B, rows]): 2TP / (2TP + FP + FN), 0 where undefined."""
    f1 = np.zeros((weights.shape[0], n_labels))
    for label in range(n_labels):
        is_truth, is_pred = truth == label, pred == label
        tp = weights[:, is_truth & is_pred].sum(axis=1)
        fp = weights[:, ~is_truth & is_pred].sum(axis=1)
        fn = weights[:, is_truth & ~is_pred].sum(axis=1)
        denominator = 2 * tp + fp + fn
        f1[:, label] = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    return f1.mean(axis=1) if n_labels else np.full(weights.shape[0], np.nan)


def _resampled(scored: _Scored, weights: np.ndarray) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """(scope, key) -> (accuracy per resample, macro F1 per resample), the scopes compute_metrics reports."""
    frame = scored.frame

    def accuracy(mask: np.ndarray) -> np.ndarray:
        total = weights[:, mask].sum(axis=1)
        return np.divide(weights[:, mask] @ scored.correct[mask], total, out=np.full_like(total, np.nan), where=total > 0)

    cat_f1, cat_n = {}, {}
    for category, (rows, truth, pred, n_labels) in scored.f1_parts.items():
        if n_labels == 0:  # no truth with a class: no F1, and no weight in a tier's or the overall F1 (as metrics)
            continue
        sub = weights[:, rows]
        cat_f1[category] = _macro_f1(sub, truth, pred, n_labels)
        cat_n[category] = sub.sum(axis=1)

    def weighted_f1(categories: list[str]) -> np.ndarray:
        used = [c for c in categories if c in cat_f1]
        if not used:
            return np.full(weights.shape[0], np.nan)
        n = np.stack([cat_n[c] for c in used])
        total = n.sum(axis=0)
        return np.divide((n * np.stack([cat_f1[c] for c in used])).sum(axis=0), total, out=np.full_like(total, np.nan), where=total > 0)

    out = {}
    category_of = frame["category"].to_numpy()
    tier_of = frame["tier"].to_numpy()
    for category in _ordered(frame["category"], CATEGORIES):
        out[("category", category)] = (accuracy(category_of == category), weighted_f1([category]))
    for tier in _ordered(frame["tier"], TIERS):
        mask = tier_of == tier
        out[("tier", tier)] = (accuracy(mask), weighted_f1(list(dict.fromkeys(category_of[mask]))))
    out[("overall", "all")] = (accuracy(np.ones(len(frame), dtype=bool)), weighted_f1(scored.categories))
    return out


def _interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan"), float("nan")
    low, high = np.percentile(finite, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def bootstrap_intervals(answers: pd.DataFrame, resamples: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> pd.DataFrame:
    """95% cluster-bootstrap intervals per (run_id, answerer, scope, key): accuracy_lo/hi, macro_f1_lo/hi."""
    records = []
    for (run_id, answerer), group in answers.groupby(["run_id", "answerer"], sort=True, dropna=False):
        scored = _score(group)
        weights = bootstrap_weights(cluster_ids(scored.frame["query_group"].tolist()), resamples, seed)
        for (scope, key), (acc, f1) in _resampled(scored, weights).items():
            acc_lo, acc_hi = _interval(acc)
            f1_lo, f1_hi = _interval(f1)
            records.append({"run_id": run_id, "answerer": answerer, "scope": scope, "key": key,
                            "accuracy_lo": acc_lo, "accuracy_hi": acc_hi, "macro_f1_lo": f1_lo, "macro_f1_hi": f1_hi})
    return pd.DataFrame(records, columns=["run_id", "answerer", "scope", "key", *INTERVAL_COLUMNS])


def mcnemar_p(a_only: int, b_only: int) -> float:
    """Exact McNemar p-value: two-sided binomial test of the discordant counts against 1/2 (1.0 when none)."""
    n = a_only + b_only
    return 1.0 if n == 0 else float(binomtest(min(a_only, b_only), n, 0.5, alternative="two-sided").pvalue)


def compare_runs(a: pd.DataFrame, b: pd.DataFrame, resamples: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> pd.DataFrame:
    """Paired comparison of run ``a`` and run ``b`` (answer rows of one run each) on the questions both answered.

    One row per scope and key: n, accuracy and macro F1 of each run, differences b - a with 95% paired
    cluster-bootstrap intervals, the discordant counts (right only in a, right only in b) and McNemar's p.
    """
    common = sorted(set(a["question_id"]) & set(b["question_id"]))
    a = a[a["question_id"].isin(common)]
    b = b[b["question_id"].isin(common)]
    scored_a, scored_b = _score(a), _score(b)
    if scored_a.frame["question_id"].tolist() != scored_b.frame["question_id"].tolist():
        raise ValueError("the runs order their common questions differently")
    weights = bootstrap_weights(cluster_ids(scored_a.frame["query_group"].tolist()), resamples, seed)
    ones = np.ones((1, len(scored_a.frame)))
    point_a, point_b = _resampled(scored_a, ones), _resampled(scored_b, ones)
    boot_a, boot_b = _resampled(scored_a, weights), _resampled(scored_b, weights)
    correct_a, correct_b = scored_a.correct.astype(bool), scored_b.correct.astype(bool)
    category_of, tier_of = scored_a.frame["category"].to_numpy(), scored_a.frame["tier"].to_numpy()
    records = []
    for scope, key in point_a:
        mask = {"category": category_of == key, "tier": tier_of == key}.get(scope, np.ones(len(category_of), dtype=bool))
        a_only = int((correct_a & ~correct_b & mask).sum())
        b_only = int((~correct_a & correct_b & mask).sum())
        acc_lo, acc_hi = _interval(boot_b[(scope, key)][0] - boot_a[(scope, key)][0])
        f1_lo, f1_hi = _interval(boot_b[(scope, key)][1] - boot_a[(scope, key)][1])
        acc_a, f1_a = (float(v[0]) for v in point_a[(scope, key)])
        acc_b, f1_b = (float(v[0]) for v in point_b[(scope, key)])
        records.append({
            "scope": scope, "key": key, "n": int(mask.sum()),
            "accuracy_a": acc_a, "accuracy_b": acc_b, "accuracy_diff": acc_b - acc_a, "accuracy_diff_lo": acc_lo, "accuracy_diff_hi": acc_hi,
            "macro_f1_a": f1_a, "macro_f1_b": f1_b, "macro_f1_diff": f1_b - f1_a, "macro_f1_diff_lo": f1_lo, "macro_f1_diff_hi": f1_hi,
            "right_only_a": a_only, "right_only_b": b_only, "mcnemar_p": mcnemar_p(a_only, b_only),
        })
    return pd.DataFrame(records)
