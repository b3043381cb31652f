"""Accuracy benchmark: random / frequent / stat on a synthetic corpus, per category and overall.

Synthesizes a corpus (default 320 questions, up to 64 variates x 4,000 steps, seed 0) into a temporary
directory, reads it back with tasks.corpus, answers every question with each answerer in a plain loop and
prints an accuracy table (plus the stat answerer's time per question).

    .venv/bin/python benchmarks/accuracy.py [--seed 0] [--questions 320] [--max-variates 64] [--max-steps 4000]
                                            [--seeds 0,1] [--show-errors] [--stat-param threshold_offset=-4]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from model.answerers import AnswererSpec, answer_priors, create_answerer  # noqa: E402
from model.records import CATEGORIES  # noqa: E402
from tasks.corpus import load_corpus  # noqa: E402
from tasks.synthetic import SynthConfig, synthesize_corpus  # noqa: E402

ANSWERERS = ("random", "frequent", "stat")


def evaluate(directory: str, *, show_errors: bool = False, stat_params: tuple[tuple[str, str], ...] = ()) -> dict:
    corpus = load_corpus(directory)
    if corpus.problems:
        raise SystemExit(f"corpus has problems: {corpus.problems[:3]}")
    priors = answer_priors(corpus.questions)
    answerers = {
        name: create_answerer(AnswererSpec(name=name, seed=0, answer_priors=priors, params=stat_params if name == "stat" else ()))
        for name in ANSWERERS
    }
    correct: dict[str, dict[str, int]] = {name: defaultdict(int) for name in ANSWERERS}
    totals: dict[str, int] = defaultdict(int)
    stat_seconds = 0.0
    errors = []
    by_group: dict[tuple[str, ...], list] = defaultdict(list)
    for question in corpus.questions:
        by_group[question.query_groups].append(question)
    for group_ids, questions in by_group.items():  # read each group once, like an actor's cache would
        series = [corpus.open_group(group_id) for group_id in group_ids]
        for question in questions:
            totals[question.category] += 1
            for name, answerer in answerers.items():
                started = time.perf_counter()
                answer = answerer.answer(question, series)
                if name == "stat":
                    stat_seconds += time.perf_counter() - started
                hit = answer.parsed_answer == question.correct_answer
                correct[name][question.category] += int(hit)
                if name == "stat" and not hit:
                    errors.append((question, answer, [g.values.shape for g in series]))
    if show_errors:
        for question, answer, shapes in errors:
            print(f"[{question.category}] q{question.question_id} {shapes} truth={question.correct_answer!r} got={answer.parsed_answer!r}")
            print(f"    {answer.raw_response[:400]}")
    return {"correct": correct, "totals": totals, "n": sum(totals.values()), "stat_seconds": stat_seconds}


def print_table(result: dict, title: str) -> None:
    correct, totals = result["correct"], result["totals"]
    print(title)
    print(f"{'category':<26}{'n':>5}" + "".join(f"{name:>10}" for name in ANSWERERS))
    for category in CATEGORIES:
        n = totals.get(category, 0)
        if not n:
            continue
        print(f"{category:<26}{n:>5}" + "".join(f"{100 * correct[name][category] / n:>9.1f}%" for name in ANSWERERS))
    n = result["n"]
    print(f"{'overall':<26}{n:>5}" + "".join(f"{100 * sum(correct[name].values()) / n:>9.1f}%" for name in ANSWERERS))
    gap = 100 * (sum(correct["stat"].values()) - sum(correct["frequent"].values())) / n
    print(f"stat - frequent: {gap:+.1f} points; stat time {result['stat_seconds'] / n * 1000:.0f} ms/question")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (overrides --seed)")
    parser.add_argument("--questions", type=int, default=320)
    parser.add_argument("--max-variates", type=int, default=64)
    parser.add_argument("--max-steps", type=int, default=4000)
    parser.add_argument("--realism", type=float, default=0.0, help="fraction of groups with production-like noise (0-1)")
    parser.add_argument("--show-errors", action="store_true")
    parser.add_argument("--stat-param", action="append", default=[], metavar="KEY=VALUE", help="stat answerer setting, e.g. threshold_offset=-4")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [args.seed]
    stat_params = tuple(tuple(item.split("=", 1)) for item in args.stat_param)
    for seed in seeds:
        config = SynthConfig(n_questions=args.questions, max_variates=args.max_variates, max_steps=args.max_steps, seed=seed, realism=args.realism)
        with tempfile.TemporaryDirectory(prefix="arfscore-acc-") as directory:
            started = time.perf_counter()
            synthesize_corpus(directory, config)
            synth_s = time.perf_counter() - started
            result = evaluate(directory, show_errors=args.show_errors, stat_params=stat_params)
        print_table(
            result,
            f"\nseed {seed}: {result['n']} questions, up to {args.max_variates} variates x {args.max_steps} steps (synthesized in {synth_s:.1f} s)",
        )


if __name__ == "__main__":
    main()
