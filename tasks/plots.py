"""Every picture arfscore draws, as PNG bytes (matplotlib, headless Agg backend; deterministic for the same input).

Analysts' report: accuracy per category with 95% interval whiskers for each run, a category x tier heatmap, a
confusion matrix per category over ARFBench's answer bins, and drilldowns of wrong answers (the question's series
with the correct and the predicted option marked). ``plot_series`` is the one series plotter: drilldowns use it,
and so can plots made for vision answerers.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # headless: never a display, never a GUI backend

import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from model.prompts import PLOT_MAX_VARIATES  # noqa: E402
from model.records import SeriesGroup  # noqa: E402
from tasks.metrics import option_timestamp  # noqa: E402

__all__ = [
    "MAX_POINTS_PER_VARIATE",
    "PLOT_MAX_VARIATES",
    "accuracy_by_category",
    "arfbench_plot",
    "category_tier_heatmap",
    "confusion_matrix",
    "drilldown",
    "envelope",
    "pick_variates",
    "plot_series",
]

MAX_POINTS_PER_VARIATE = 2000  # a plotted line never has more points (min/max envelope beyond that)
MAX_DRAWN_VARIATES = 8
_METADATA = {"Software": "arfscore", "Creation Time": None}  # no timestamp in the file: same input, same bytes


def _png(figure: plt.Figure, tight: bool = True) -> bytes:
    """The figure as PNG bytes (closed after); ``tight`` crops to the drawn content, else the figure's own size."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight" if tight else None, metadata=_METADATA)
    plt.close(figure)
    return buffer.getvalue()


def accuracy_by_category(rows: pd.DataFrame) -> bytes:
    """Accuracy per category (columns run_id, key, accuracy, accuracy_lo, accuracy_hi), one marker per run with its
    95% interval as whiskers."""
    categories = list(dict.fromkeys(rows["key"]))
    runs = list(dict.fromkeys(rows["run_id"]))
    figure, axes = plt.subplots(figsize=(max(6.0, 1.1 * len(categories)), 4.0))
    width = 0.8 / max(len(runs), 1)
    for index, run in enumerate(runs):
        part = rows[rows["run_id"] == run].set_index("key").reindex(categories)
        x = np.arange(len(categories)) - 0.4 + width * (index + 0.5)
        accuracy = part["accuracy"].to_numpy(float)
        low = np.nan_to_num(accuracy - part["accuracy_lo"].to_numpy(float))
        high = np.nan_to_num(part["accuracy_hi"].to_numpy(float) - accuracy)
        axes.errorbar(x, accuracy, yerr=[low, high], fmt="o", capsize=3, label=run)
    axes.set_xticks(np.arange(len(categories)), [c.replace("Anomaly ", "") for c in categories], rotation=30, ha="right")
    axes.set_ylim(0, 1)
    axes.set_ylabel("accuracy (95% interval)")
    axes.grid(axis="y", alpha=0.3)
    axes.legend(fontsize=7, loc="best", ncol=2 if len(runs) > 5 else 1)
    return _png(figure)


def category_tier_heatmap(rows: pd.DataFrame) -> bytes:
    """Accuracy heatmap: one row per (tier, category), one column per run (columns run_id, category, tier, accuracy)."""
    table = rows.assign(cell=rows["tier"] + " | " + rows["category"].str.replace("Anomaly ", "")).pivot_table(
        index="cell", columns="run_id", values="accuracy", aggfunc="mean"
    ).sort_index()
    figure, axes = plt.subplots(figsize=(max(5.0, 0.9 * table.shape[1] + 3), 0.45 * table.shape[0] + 1.5))
    image = axes.imshow(table.to_numpy(float), vmin=0, vmax=1, cmap="viridis", aspect="auto")
    axes.set_xticks(range(table.shape[1]), table.columns, rotation=30, ha="right", fontsize=8)
    axes.set_yticks(range(table.shape[0]), table.index, fontsize=8)
    for (i, j), value in np.ndenumerate(table.to_numpy(float)):
        if math.isfinite(value):
            axes.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color="white" if value < 0.6 else "black")
    figure.colorbar(image, ax=axes, label="accuracy")
    return _png(figure)


def confusion_matrix(category: str, truths: Sequence[str], predictions: Sequence[str | None], labels: Sequence[str]) -> bytes:
    """Counts of (true class, predicted class) over ARFBench's answer bins; unbinned predictions in "(invalid)"."""
    columns = [*labels, "(invalid)"]
    counts = np.zeros((len(labels), len(columns)), dtype=int)
    for truth, prediction in zip(truths, predictions):
        if truth in labels:
            counts[labels.index(truth), columns.index(prediction) if prediction in labels else len(labels)] += 1
    figure, axes = plt.subplots(figsize=(1.0 + 0.7 * len(columns), 1.0 + 0.55 * len(labels)))
    axes.imshow(counts, cmap="Blues")
    axes.set_xticks(range(len(columns)), columns, rotation=35, ha="right", fontsize=7)
    axes.set_yticks(range(len(labels)), labels, fontsize=7)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(category, fontsize=9)
    for (i, j), value in np.ndenumerate(counts):
        axes.text(j, i, str(value), ha="center", va="center", fontsize=7, color="white" if value > counts.max() / 2 else "black")
    return _png(figure)


def envelope(values: np.ndarray, max_points: int = MAX_POINTS_PER_VARIATE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(step positions, low, high) of a series reduced to at most ``max_points`` buckets by min/max per bucket
    (every spike survives); the series itself (low == high) when it is short enough."""
    n = values.size
    if n <= max_points:
        steps = np.arange(n, dtype=float)
        return steps, values, values
    edges = np.linspace(0, n, max_points + 1).astype(np.int64)
    low = np.fmin.reduceat(values, edges[:-1])
    high = np.fmax.reduceat(values, edges[:-1])
    return (edges[:-1] + edges[1:]) / 2.0, low, high


def pick_variates(group: SeriesGroup, named: Sequence[str], limit: int = MAX_DRAWN_VARIATES) -> tuple[list[int], str]:
    """Rows to draw when a group has many: those the question or options name, then the most anomalous (largest
    robust deviation from their own median); returns (rows, the rule as written on the plot)."""
    if group.n_variates <= limit:
        return list(range(group.n_variates)), f"all {group.n_variates} variates"
    chosen = [i for i, name in enumerate(group.variate_names) if any(name in text for text in named)][:limit]
    for row in group.deviation_order():
        if len(chosen) >= limit:
            break
        if int(row) not in chosen:
            chosen.append(int(row))
    named_count = sum(1 for i in chosen if any(group.variate_names[i] in text for text in named))
    if not named_count:
        return chosen, f"{len(chosen)} of {group.n_variates} variates with the largest deviation from their median"
    return chosen, f"{len(chosen)} of {group.n_variates} variates: {named_count} named in the question, the rest most anomalous"


def _when(group: SeriesGroup, steps: np.ndarray) -> np.ndarray:
    return (group.start_ns + steps * group.interval_s * 1_000_000_000).astype("datetime64[ns]")


def plot_series(
    groups: Sequence[SeriesGroup], *, named: Sequence[str] = (), highlight: dict[str, str] | None = None,
    marks: Sequence[tuple[str, str, str]] = (), title: str = "", width_px: int = 1200,
) -> bytes:
    """Each group in a panel: the picked variates as lines (min/max envelopes when long), ``highlight`` channels
    (name -> colour) drawn thick, ``marks`` (timestamp text, colour, label) as vertical lines, the rule that picked
    the variates written on the panel."""
    highlight = highlight or {}
    figure, axes_list = plt.subplots(len(groups), 1, figsize=(width_px / 100, 3.2 * len(groups)), squeeze=False)
    for axes, group in zip(axes_list[:, 0], groups):
        rows, rule = pick_variates(group, named)
        for row in rows:
            name = group.variate_names[row]
            steps, low, high = envelope(group.values[row])
            when = _when(group, steps)
            colour = highlight.get(name)
            if np.array_equal(low, high, equal_nan=True):
                axes.plot(when, low, lw=2.2 if colour else 0.9, color=colour, label=name[:60])
            else:
                axes.fill_between(when, low, high, alpha=0.5 if colour else 0.25, color=colour, label=name[:60], lw=0)
        for text, colour, label in marks:
            stamp = option_timestamp(text)
            if stamp is not None:
                axes.axvline(np.datetime64(stamp.replace(tzinfo=None)), color=colour, ls="--", lw=1.5, label=label)
        axes.set_title(f"{group.group_id} ({rule})", fontsize=8)
        axes.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M"))
        axes.legend(fontsize=6, loc="upper left", ncol=2)
    if title:
        figure.suptitle(title, fontsize=9)
    return _png(figure)


def drilldown(groups: Sequence[SeriesGroup], question_text: str, options: Sequence[str], correct: str, predicted: str | None) -> bytes:
    """A wrong answer: the question's series with the correct option (green) and the predicted one (red) marked:
    timestamps as vertical lines, channels drawn thick."""
    highlight: dict[str, str] = {}
    for group in groups:
        for name in group.variate_names:
            if predicted and name in predicted:
                highlight[name] = "tab:red"
            if name in correct:
                highlight[name] = "tab:green"
    marks = [(correct, "tab:green", f"correct: {correct[:40]}")]
    if predicted:
        marks.append((predicted, "tab:red", f"predicted: {predicted[:40]}"))
    title = f"correct: {correct[:80]} | predicted: {predicted[:80] if predicted else '(none)'}"
    return plot_series(groups, named=[*options, question_text], highlight=highlight, marks=marks, title=title)


# ARFBench-like plots for vision answerers: one panel, timestamps on the x axis, a legend of variate names.
PLOT_WIDTH_PX, PLOT_HEIGHT_PX = 1500, 750  # never more than 1,500 px on a side


def arfbench_plot(group: SeriesGroup) -> bytes:
    """One query group as ARFBench's images show it: one panel, every variate a line (min/max envelope beyond 2,000
    points), timestamps on the x axis, a legend of variate names. With more than PLOT_MAX_VARIATES variates, the
    ones with the largest robust deviation from their own median are drawn, and the title says how many of how
    many. 1,500 x 750 px; the same group always gives the same bytes."""
    rows, rule = pick_variates(group, (), limit=PLOT_MAX_VARIATES)
    figure = plt.figure(figsize=(PLOT_WIDTH_PX / 100, PLOT_HEIGHT_PX / 100), dpi=100)
    axes = figure.add_axes((0.06, 0.1, 0.68, 0.8))
    for row in rows:
        steps, low, high = envelope(group.values[row])
        name = group.variate_names[row]
        label = name if len(name) <= 70 else name[:67] + "..."
        # min and max of each bucket in turn: one line that looks like the full-resolution series
        axes.plot(_when(group, np.repeat(steps, 2)), np.column_stack([low, high]).ravel(), lw=0.9, label=label)
    axes.set_title(f"query group {group.group_id}: {rule}, one point every {group.interval_s} s", fontsize=10)
    axes.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m-%d %H:%M"))
    for tick in axes.get_xticklabels():
        tick.set_rotation(25)
        tick.set_horizontalalignment("right")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return _png(figure, tight=False)  # the benchmark's fixed size
