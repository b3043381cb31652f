"""Full-size benchmark for the `stat` answerer: one question of each of the 8 categories at 2,283 x 40,000.

Builds two full-size query groups (a level shift and a change in trend, 365 MB of float32 each) with the
synthetic generator's own model and random stream (tasks.synthetic: same base series, injection, gaps and
nulls as write_group, so the arrays equal what write_group + read_dense would give, without the ~820 MB
Parquet round trip; pass --via-parquet to go through the files instead). Then answers one question per
category with a FRESH answerer each time (no cached analysis: every timing includes the full analysis of
every group the question uses; correlation analyses two groups) and prints wall and CPU seconds (all
threads; on a busy machine wall time stretches, CPU time does not) per category, the peak
memory added by each answer (VmHWM reset through /proc/self/clear_refs where Linux allows it) and the
process's peak RSS (resource.getrusage ru_maxrss).

    .venv/bin/python benchmarks/stat_full_size.py [--variates 2283] [--steps 40000] [--threads 0] [--via-parquet]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

from model.answerers import AnswererSpec, create_answerer  # noqa: E402
from model.records import CATEGORIES, Question, SeriesGroup  # noqa: E402
from tasks import synthetic  # noqa: E402
from tasks.synthetic import TIER_OF_CATEGORY, GroupPlan, SynthConfig, plan_group  # noqa: E402


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def dense_group(plan: GroupPlan, config: SynthConfig) -> SeriesGroup:
    """The dense array write_group + read_dense would produce, built chunk by chunk in memory."""
    rng = np.random.default_rng(plan.seed)
    per_chunk = max(1, config.target_rows_per_row_group // plan.n_steps)
    write_order = rng.permutation(plan.n_variates)
    values = np.empty((plan.n_variates, plan.n_steps), dtype=np.float32)
    for first in range(0, plan.n_variates, per_chunk):
        rows = np.sort(write_order[first : first + per_chunk])
        chunk, level, noise = synthetic._base_values(rng, plan, rows)
        synthetic._inject(chunk, rows, level, noise, plan, rng)
        keep = rng.random(chunk.shape) >= config.missing_fraction
        keep[:, 0] = True
        keep[:, -1] = True
        nulls = (rng.random(chunk.shape) < config.null_fraction) & keep
        nulls[:, 0] = False
        values[rows] = np.where(keep & ~nulls, chunk, np.nan)
    return SeriesGroup(plan.group_id, values, plan.variate_names, plan.start_ns, plan.interval_s)


def parquet_group(plan: GroupPlan, config: SynthConfig, directory: str) -> SeriesGroup:
    from tasks.series import parse_group_file_name, read_dense

    path = synthetic.write_group(plan, directory, config)
    try:
        return read_dense(path, parse_group_file_name(os.path.basename(path), path))
    finally:
        os.remove(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variates", type=int, default=2283)
    parser.add_argument("--steps", type=int, default=40_000)
    parser.add_argument("--interval", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="stat answerer threads (0 = min(2, CPUs))")
    parser.add_argument("--via-parquet", action="store_true", help="write_group + read_dense instead of building in memory")
    args = parser.parse_args()

    config = SynthConfig()
    rng = np.random.default_rng(args.seed)
    shift = plan_group(rng, 90_001, 0, args.variates, args.steps, interval_s=args.interval, anomaly_kind="Level Shift")
    ramp = plan_group(rng, 90_002, 0, args.variates, args.steps, interval_s=args.interval, start_ns=shift.start_ns, anomaly_kind="Change in Trend")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="arfscore-full-") as directory:
        build = (lambda plan: parquet_group(plan, config, directory)) if args.via_parquet else (lambda plan: dense_group(plan, config))
        groups = {plan.group_id: build(plan) for plan in (shift, ramp)}
    size_mb = groups[shift.group_id].values.nbytes / 1e6
    print(f"built 2 groups of {args.variates:,} x {args.steps:,} ({size_mb:.0f} MB each) in {time.perf_counter() - started:.1f} s")
    for plan in (shift, ramp):
        print(f"  {plan.group_id}: {plan.anomaly}")

    single = {
        "Anomaly Presence": shift,
        "Anomaly Start": shift,
        "Anomaly End": shift,
        "Anomaly Magnitude": shift,
        "Anomaly Identification": shift,
        "Anomaly Categorization": ramp,
        "Anomaly Indicator": ramp,
    }
    questions = []
    for number, category in enumerate(CATEGORIES):
        if category == "Anomaly Correlation":
            planned = synthetic._correlation_question(rng, shift, ramp)
        else:
            planned = synthetic._question_for(rng, category, single[category])
        questions.append(
            Question(number, planned.question, category, TIER_OF_CATEGORY[category], planned.options, planned.correct_answer, planned.query_groups)
        )

    spec = AnswererSpec(name="stat", params=(("threads", str(args.threads)),))
    print(f"\n{'category':<26}{'seconds':>9}{'cpu s':>8}{'peak +MB':>10}  correct  answer")
    worst = 0.0
    for question in questions:
        series = [groups[group_id] for group_id in question.query_groups]
        answerer = create_answerer(spec)  # fresh: no cached analysis
        rss_kb = _status_kb("VmRSS")
        can_reset = _reset_peak()
        started, cpu_started = time.perf_counter(), time.process_time()
        answer = answerer.answer(question, series)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        peak_kb = _status_kb("VmHWM") if can_reset else None
        extra = f"{(peak_kb - rss_kb) / 1024:>10.0f}" if peak_kb is not None and rss_kb is not None else f"{'n/a':>10}"
        worst = max(worst, seconds)
        ok = "yes" if answer.parsed_answer == question.correct_answer else "NO"
        print(f"{question.category:<26}{seconds:>9.2f}{cpu:>8.2f}{extra}  {ok:<7}  {answer.parsed_answer!r} (truth {question.correct_answer!r})")
    print(f"\nslowest category: {worst:.2f} s (goal < 10 s); process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB "
          f"(includes the two {groups[shift.group_id].values.nbytes / 1e6:.0f} MB input arrays)")


if __name__ == "__main__":
    main()
