"""Real labelled incidents -> ARFBench-format questions -> random, frequent and stat on a held-out part.

Data: WSD, 210 real web-service KPIs (1-minute points, per-point anomaly labels by operators), the `real-world/`
folder of github.com/alumik/AnoTransfer-data (commit 35d633b8). Nothing of it is committed: point --data (or
ARFSCORE_REAL_DATA) at the folder of its `<id>.csv` files (timestamp, value, label). NAB and the Server Machine
Dataset are never used (reserved for the project's held-out evaluation).

Questions, from windows of one day (1,440 steps) on the 60 s grid (gaps are missing points):
- univariate groups (one KPI): Anomaly Presence, Start, End. A positive window holds exactly one labelled anomaly
  segment; its start falls anywhere in the window, or before it ("Before the earliest timestamp"), and its end
  inside or after it ("Not resolved"). Negative windows hold no labelled point (answers "No ..." / "No anomaly").
- multivariate groups (a positive window of one KPI beside normal windows of 3-7 other KPIs of the same split, on
  one time grid): Anomaly Presence and Identification ("which of the listed channels").
Distractor timestamps are drawn uniformly over 10-85% of the window, as true starts are; true ends fall later, so an
End question's latest timestamp is right more often than its share. The options-only audit (tasks/giveaways.py) on
the held-out part: End chance 0.288, options-only 0.288; Start 0.275 / 0.275 (uniform 0.2): no leak beyond how often
each answer class is right.

Series are split by id (a hash) into a calibration part and a held-out part. Calibration chooses the stat
answerer's false-alarm rate (the `false_alarm_rate` setting: its detection thresholds come from each series' own
robust noise, corrected for autocorrelation, at that rate); the table is the held-out part.

    .venv/bin/python benchmarks/real_data.py [--data DIR] [--rates 0.001,0.01,0.05] [--max-series 210]
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from model.answerers import AnswererSpec, answer_priors, create_answerer  # noqa: E402
from tasks.corpus import load_corpus  # noqa: E402
from tasks.metrics import compute_metrics  # noqa: E402
from tasks.synthetic import (  # noqa: E402
    BEFORE_EARLIEST,
    NO_ANOMALY,
    NO_CHANNEL,
    NOT_RESOLVED,
    PRESENCE_NO,
    PRESENCE_YES,
    TIER_OF_CATEGORY,
)

WINDOW = 1440
INTERVAL_S = 60
CATEGORIES = ("Anomaly Presence", "Anomaly Start", "Anomaly End", "Anomaly Identification")


def load_series(path: str) -> tuple[int, np.ndarray, np.ndarray]:
    """(first epoch second, values on the 60 s grid with NaN for gaps, labels 0/1 on the grid)."""
    frame = pd.read_csv(path)
    frame = frame.dropna(subset=["timestamp"]).drop_duplicates("timestamp").sort_values("timestamp")
    stamps = frame["timestamp"].to_numpy(np.int64)
    first = int(stamps[0]) - int(stamps[0]) % INTERVAL_S
    steps = (stamps - first) // INTERVAL_S
    n = int(steps[-1]) + 1
    values = np.full(n, np.nan)
    labels = np.zeros(n, dtype=np.int8)
    values[steps] = frame["value"].to_numpy(float)
    labels[steps] = frame["label"].fillna(0).to_numpy().astype(np.int8)
    return first, values, labels


def segments(labels: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of labelled points, runs closer than 3 steps merged."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], labels, [0]])))
    runs = [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]
    merged: list[tuple[int, int]] = []
    for start, end in runs:
        if merged and start - merged[-1][1] < 3:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def in_calibration(series_id: str) -> bool:
    return int(hashlib.sha256(series_id.encode()).hexdigest(), 16) % 2 == 0


def windows(rng: np.random.Generator, values: np.ndarray, labels: np.ndarray) -> tuple[list[tuple[int, int, int]], list[int]]:
    """Positive windows (window start, anomaly start, anomaly end, relative to the window) and negative window
    starts. Windows with more than 20% missing points are skipped."""
    n = len(values)
    runs = segments(labels)
    positive, negative = [], []
    for start, end in runs:
        length = end - start
        if length > WINDOW // 3:
            continue
        mode = rng.random()
        if mode < 0.12 and length >= 3:  # under way when the window opens
            w0 = start + int(rng.integers(1, max(2, length)))
        elif mode < 0.27:  # still under way when it closes
            w0 = start - WINDOW + int(rng.integers(1, max(2, length)))
        else:
            w0 = start - int(rng.uniform(0.1, 0.85) * WINDOW)
        w1 = w0 + WINDOW
        if w0 < 0 or w1 > n:
            continue
        others = [(a, b) for a, b in runs if (a, b) != (start, end) and a < w1 + 60 and b > w0 - 60]
        if others or np.isnan(values[w0:w1]).mean() > 0.2:
            continue
        positive.append((w0, max(0, start - w0), min(WINDOW, end - w0)))
    quiet = np.convolve(labels.astype(float), np.ones(WINDOW + 120), mode="full")[WINDOW + 60 : WINDOW + 60 + n]
    for _ in range(3 * max(1, len(positive))):
        w0 = int(rng.integers(0, max(1, n - WINDOW)))
        clean = quiet[w0] == 0 and labels[max(0, w0 - 60) : w0 + WINDOW + 60].sum() == 0
        if w0 + WINDOW <= n and clean and np.isnan(values[w0 : w0 + WINDOW]).mean() <= 0.2:
            negative.append(w0)
        if len(negative) >= max(1, len(positive)):
            break
    return positive, negative


def stamp(first: int, step: int) -> str:
    return datetime.fromtimestamp(first + step * INTERVAL_S, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def distractors(rng: np.random.Generator, taken: list[int], count: int) -> list[int]:
    gap = WINDOW // 25
    picked: list[int] = []
    while len(picked) < count:
        step = int(rng.uniform(0.1, 0.85) * WINDOW)
        if all(abs(step - other) >= gap for other in taken + picked):
            picked.append(step)
    return picked


class CorpusWriter:
    """Accumulates ARFBench-format groups and questions; writes arfbench-qa.csv + arfbench-ts-data/."""

    def __init__(self, out: str) -> None:
        self.out = out
        os.makedirs(os.path.join(out, "arfbench-ts-data"), exist_ok=True)
        self.rows: list[dict] = []
        self.incident = 70_000

    def group(self, first: int, channels: dict[str, np.ndarray]) -> str:
        self.incident += 1
        group_id = f"{self.incident}_0"
        names = sorted(channels)
        stamps = first + np.arange(WINDOW, dtype=np.int64) * INTERVAL_S
        columns = {"timestamp": [], "group": [], "value": []}
        for name in names:
            values = channels[name]
            keep = np.isfinite(values)
            columns["timestamp"].append(stamps[keep] * 1_000_000_000)
            columns["group"].append(np.full(int(keep.sum()), name, dtype=object))
            columns["value"].append(values[keep])
        table = pa.table({
            "timestamp": pa.array(np.concatenate(columns["timestamp"]), pa.int64()).cast(pa.timestamp("ns")),
            "group": pa.array(np.concatenate(columns["group"]), pa.string()),
            "value": pa.array(np.concatenate(columns["value"]), pa.float64()),
        })
        pq.write_table(table, os.path.join(self.out, "arfbench-ts-data", f"{group_id}_{INTERVAL_S}.parquet"))
        return group_id

    def question(self, category: str, text: str, options: list[str], correct: str, group_id: str) -> None:
        self.rows.append({
            "question": text, "task_category": category, "difficulty": TIER_OF_CATEGORY[category],
            "options_str": json.dumps(options), "correct_answer": correct, "query_group": group_id,
        })

    def close(self) -> None:
        pd.DataFrame(self.rows).to_csv(os.path.join(self.out, "arfbench-qa.csv"), index=False)


def timestamp_question(rng: np.random.Generator, edge: str, first: int, truth: int | None) -> tuple[list[str], str]:
    """Options and answer of a Start (edge "start") or End question; truth: the step, or None / -1 / WINDOW."""
    special = BEFORE_EARLIEST if edge == "start" else NOT_RESOLVED
    if truth is None or truth in (-1, WINDOW):
        steps = sorted(distractors(rng, [], 3))
        correct = NO_ANOMALY if truth is None else special
    else:
        steps = sorted(distractors(rng, [truth], 2) + [truth])
        correct = stamp(first, truth)
    stamps = [stamp(first, s) for s in steps]
    options = [special, *stamps, NO_ANOMALY] if edge == "start" else [*stamps, special, NO_ANOMALY]
    return options, correct


def build_corpus(data: str, out: str, calibration: bool, max_series: int, seed: int = 0) -> dict[str, int]:
    rng = np.random.default_rng(seed + (0 if calibration else 1))
    writer = CorpusWriter(out)
    paths = sorted(glob.glob(os.path.join(data, "*.csv")), key=lambda p: int(os.path.basename(p)[:-4]))[:max_series]
    chosen = [p for p in paths if in_calibration(os.path.basename(p)[:-4]) == calibration]
    normals: list[tuple[str, np.ndarray]] = []  # (series id, a normal window's values) for multivariate groups
    positives: list[tuple[str, int, np.ndarray, int, int]] = []
    for path in chosen:
        series_id = os.path.basename(path)[:-4]
        first, values, labels = load_series(path)
        pos, neg = windows(rng, values, labels)
        for w0, a, b in pos:
            positives.append((series_id, first + w0 * INTERVAL_S, values[w0 : w0 + WINDOW], a, b))
        for w0 in neg:
            normals.append((series_id, values[w0 : w0 + WINDOW].copy()))
            group = writer.group(first + w0 * INTERVAL_S, {f"kpi:{series_id}": values[w0 : w0 + WINDOW]})
            caption = f"The time series shows the web-service KPI {series_id}, one point every 60 seconds.\n"
            writer.question("Anomaly Presence", caption + "Is there an anomaly in this time series?", [PRESENCE_YES, PRESENCE_NO], PRESENCE_NO, group)
            if rng.random() < 0.25:
                for edge, category in (("start", "Anomaly Start"), ("end", "Anomaly End")):
                    options, correct = timestamp_question(rng, edge, first + w0 * INTERVAL_S, None)
                    writer.question(category, caption + f"What is the {edge} time of the anomaly?", options, correct, group)
    for series_id, first, values, a, b in positives:
        group = writer.group(first, {f"kpi:{series_id}": values})
        caption = f"The time series shows the web-service KPI {series_id}, one point every 60 seconds.\n"
        writer.question("Anomaly Presence", caption + "Is there an anomaly in this time series?", [PRESENCE_YES, PRESENCE_NO], PRESENCE_YES, group)
        start_truth = -1 if a == 0 else a
        end_truth = WINDOW if b >= WINDOW else b - 1
        for edge, category, truth in (("start", "Anomaly Start", start_truth), ("end", "Anomaly End", end_truth)):
            options, correct = timestamp_question(rng, edge, first, truth)
            writer.question(category, caption + f"What is the {edge} time of the anomaly?", options, correct, group)
    # Multivariate: one anomalous KPI (or none) among normal windows of other KPIs of the same split.
    for index in range(len(positives)):
        pick = [int(i) for i in rng.choice(len(normals), size=min(len(normals), int(rng.integers(3, 8))), replace=False)]
        channels = {f"kpi:{normals[i][0]}": normals[i][1] for i in pick}
        anomalous = None
        if rng.random() < 0.8:
            series_id, first, values, _, _ = positives[index]
            anomalous = f"kpi:{series_id}"
            channels[anomalous] = values
        else:
            first = positives[index][1]
        if len(channels) < 3:
            continue
        group = writer.group(first, channels)
        names = sorted(channels)
        caption = f"The time series shows {len(names)} web-service KPIs, one point every 60 seconds.\n"
        correct = PRESENCE_YES if anomalous else PRESENCE_NO
        writer.question("Anomaly Presence", caption + "Is there an anomaly in these time series?", [PRESENCE_YES, PRESENCE_NO], correct, group)
        listed = [anomalous] if anomalous else []
        listed += [n for n in rng.permutation(names).tolist() if n != anomalous][: 4 - len(listed)]
        options = [listed[int(i)] for i in rng.permutation(len(listed))] + [NO_CHANNEL]
        writer.question("Anomaly Identification", caption + "Which of the listed channels show the anomaly?", options, anomalous or NO_CHANNEL, group)
    writer.close()
    return {"series": len(chosen), "positive_windows": len(positives), "questions": len(writer.rows)}


def evaluate(corpus_dir: str, answerers: dict[str, tuple[tuple[str, str], ...]]) -> pd.DataFrame:
    corpus = load_corpus(corpus_dir)
    if corpus.problems:
        raise SystemExit(f"corpus problems: {corpus.problems[:3]}")
    priors = answer_priors(corpus.questions)
    built = {label: create_answerer(AnswererSpec(name=label.split("@")[0], seed=0, answer_priors=priors, params=params))
             for label, params in answerers.items()}
    rows = []
    by_group: dict[tuple[str, ...], list] = {}
    for question in corpus.questions:
        by_group.setdefault(question.query_groups, []).append(question)
    for group_ids, questions in by_group.items():  # each group read once: the answerers' caches see one array
        series = [corpus.open_group(g) for g in group_ids]
        for question in questions:
            for label, answerer in built.items():
                answer = answerer.answer(question, series)
                rows.append({
                    "run_id": label, "answerer": label, "question_id": question.question_id, "category": question.category,
                    "tier": question.tier, "options": list(question.options), "correct_answer": question.correct_answer,
                    "parsed_answer": answer.parsed_answer, "status": "ok",
                })
    return compute_metrics(pd.DataFrame(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("ARFSCORE_REAL_DATA", "/work/data/real-anomaly/WSD/real-world"))
    parser.add_argument("--rates", default="0.001,0.01,0.05,0.2", help="stat false_alarm_rate candidates (calibration)")
    parser.add_argument("--max-series", type=int, default=210)
    args = parser.parse_args()
    if not glob.glob(os.path.join(args.data, "*.csv")):
        raise SystemExit(f"no WSD csv files under {args.data}: see the module docstring for where to get them")
    rates = [float(r) for r in args.rates.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        calib_dir, held_dir = os.path.join(tmp, "calibration"), os.path.join(tmp, "held-out")
        calib = build_corpus(args.data, calib_dir, True, args.max_series)
        held = build_corpus(args.data, held_dir, False, args.max_series)
        print(f"calibration: {calib}; held-out: {held}; built in {time.perf_counter() - started:.0f} s")
        candidates = {f"stat@{rate:g}": (("false_alarm_rate", str(rate)),) for rate in rates}
        calib_metrics = evaluate(calib_dir, candidates)
        overall = calib_metrics[calib_metrics["scope"] == "overall"].set_index("answerer")
        for label in candidates:
            cats = calib_metrics[(calib_metrics["answerer"] == label) & (calib_metrics["scope"] == "category")]
            print(f"calibration {label}: accuracy {overall.loc[label, 'accuracy']:.3f}, macro F1 {overall.loc[label, 'macro_f1']:.3f}; "
                  + ", ".join(f"{k.split()[1]} {f:.2f}" for k, f in zip(cats["key"], cats["macro_f1"])))
        best = max(candidates, key=lambda label: (overall.loc[label, "macro_f1"], overall.loc[label, "accuracy"]))
        print(f"chosen on calibration: {best}")
        held_metrics = evaluate(held_dir, {"random": (), "frequent": (), best: candidates[best]})
    table = held_metrics[held_metrics["scope"].isin(["category", "overall"])]
    print(f"\nheld-out part ({held['questions']} questions from {held['series']} WSD series): accuracy / macro F1")
    answerers = ["random", "frequent", best]
    print(f"{'category':26s}" + "".join(f"{a:>22s}" for a in answerers))
    for key in [*CATEGORIES, "all"]:
        cells = []
        for answerer in answerers:
            row = table[(table["answerer"] == answerer) & (table["key"] == key)]
            cells.append(f"{row['accuracy'].item():.3f} / {row['macro_f1'].item():.3f} (n {row['n'].item()})" if len(row) else "-")
        print(f"{key:26s}" + "".join(f"{c:>22s}" for c in cells))


if __name__ == "__main__":
    main()
