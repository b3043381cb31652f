"""HTML report benchmark: `report --html` for 10 runs x 750 questions, and how wide an interval is.

Synthesizes a 750-question corpus (ARFBench's size; categories ~94 questions each), answers it with ten answerers
in a plain loop (stat at five false-alarm rates, random at five seeds), writes the runs as the flow would
(answers, metrics with 1,000-resample cluster-bootstrap intervals, run records), then times
`tasks.html_report.write_html_report` (the work of `arfscore report --html`) and prints the file size. Also prints
the 95% interval width of accuracy for a category of 60 questions (what difference an analyst can detect).

    .venv/bin/python benchmarks/report_html.py [--questions 750] [--runs 10] [--drilldown 20]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import datetime, timezone

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from model.answerers import AnswererSpec, answer_priors  # noqa: E402
from tasks.answering import ShardWorker  # noqa: E402
from tasks.corpus import load_corpus  # noqa: E402
from tasks.html_report import write_html_report  # noqa: E402
from tasks.intervals import bootstrap_intervals  # noqa: E402
from tasks.runs import compute_run_metrics, record_run  # noqa: E402
from tasks.shards import plan_shards  # noqa: E402
from tasks.store import read_answers, write_shard  # noqa: E402
from tasks.synthetic import SynthConfig, synthesize_corpus  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=750)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--drilldown", type=int, default=20, help="drilldowns in the whole page")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        corpus_dir, out = os.path.join(tmp, "corpus"), os.path.join(tmp, "out")
        synthesize_corpus(corpus_dir, SynthConfig(n_questions=args.questions, max_variates=16, max_steps=1024, seed=0, realism=0.5))
        corpus = load_corpus(corpus_dir)
        priors = answer_priors(corpus.questions)
        shards = plan_shards(corpus.questions, 50)
        specs = [AnswererSpec("stat", params={"false_alarm_rate": str(rate)}) for rate in (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)]
        specs += [AnswererSpec("random", seed=seed, answer_priors=priors) for seed in range(5)]
        started = time.perf_counter()
        for number, spec in enumerate(specs[: args.runs]):
            run_id = f"{spec.name}-{number}"
            worker = ShardWorker(corpus_dir, spec, run_id, question_timeout_s=None)
            for shard in shards:
                write_shard(worker.answer_table(shard.question_ids), out, run_id, shard.index)
            compute_run_metrics(out, run_id, bootstrap=1000)
            now = datetime.now(timezone.utc)
            record_run(out, run_id, answerer=spec.name, corpus=corpus_dir, corpus_checksum=corpus.checksum, config={}, started_at=now, ended_at=now)
        seconds = time.perf_counter() - started
        print(f"{args.runs} runs x {len(corpus.questions)} questions answered, metrics with intervals written in {seconds:.0f} s")
        runs = [f"{spec.name}-{number}" for number, spec in enumerate(specs[: args.runs])]
        written = write_html_report(out, os.path.join(tmp, "report.html"), runs, args.drilldown, 1000)
        print(f"report --html: {written['seconds']:.1f} s, {written['bytes'] / 1e6:.2f} MB, {written['images']} images, {len(runs)} runs")

        # Interval width for one category of 60 questions: the stat run's Presence questions, 60 of them.
        answers = read_answers(out, runs[2])
        presence = answers[answers["category"] == "Anomaly Presence"].head(60)
        row = bootstrap_intervals(presence, 1000).query("scope == 'category'").iloc[0]
        accuracy = float(presence["is_correct"].mean())
        print(f"one category of 60 questions (accuracy {accuracy:.3f}): 95% interval [{row['accuracy_lo']:.3f}, {row['accuracy_hi']:.3f}], "
              f"width {row['accuracy_hi'] - row['accuracy_lo']:.3f}")
        for p in (0.5, 0.7, 0.9):
            draws = np.random.default_rng(0).binomial(60, p, size=100_000) / 60
            low, high = np.percentile(draws, [2.5, 97.5])
            print(f"  binomial reference, 60 independent questions at accuracy {p:.1f}: interval width {high - low:.3f}")


if __name__ == "__main__":
    main()
