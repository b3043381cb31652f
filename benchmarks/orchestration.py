"""Orchestration overhead: the full score_corpus flow (Prefect + Ray, 2 actors) vs a plain Python loop.

Both answer the same corpus (default 200 questions of 200 variates x 8,000 steps) with the same answerer and
read each question's series from the same Parquet files; the flow also writes shards, metrics and DuckDB
views. Prints both wall times and the ratio flow / loop (goal <= 1.3). Each side runs in a fresh process.

    .venv/bin/python benchmarks/orchestration.py [--questions 200] [--variates 200] [--steps 8000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _loop(corpus_dir: str, answerer: str) -> dict:
    from model.answerers import AnswererSpec, answer_priors, create_answerer
    from tasks.corpus import load_corpus

    started = time.perf_counter()
    corpus = load_corpus(corpus_dir)
    spec = AnswererSpec(name=answerer, answer_priors=answer_priors(corpus.questions))
    model = create_answerer(spec)
    correct = 0
    for question in corpus.questions:
        series = [corpus.open_group(group_id) for group_id in question.query_groups]
        correct += model.answer(question, series).parsed_answer == question.correct_answer
    return {"seconds": time.perf_counter() - started, "accuracy": correct / len(corpus.questions)}


def _flow(corpus_dir: str, answerer: str, out: str, actors: int) -> dict:
    from flows.score import score_corpus

    started = time.perf_counter()
    board = score_corpus(corpus=corpus_dir, answerer=answerer, run_id="bench", out=out, actors=actors, shard_size=8)
    return {"seconds": time.perf_counter() - started, "accuracy": board[0]["accuracy"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--variates", type=int, default=200)
    parser.add_argument("--steps", type=int, default=8000)
    parser.add_argument("--answerer", default="stat")
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--worker", choices=["loop", "flow"])
    parser.add_argument("--corpus")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.worker == "loop":
        print(json.dumps(_loop(args.corpus, args.answerer)))
        return
    if args.worker == "flow":
        print(json.dumps(_flow(args.corpus, args.answerer, args.out, args.actors)))
        return

    from tasks.synthetic import SynthConfig, synthesize_corpus

    work = tempfile.mkdtemp(prefix="arfscore-orch-")
    try:
        corpus = os.path.join(work, "corpus")
        config = SynthConfig(
            n_questions=args.questions, max_variates=args.variates, min_variates=args.variates,
            max_steps=args.steps, min_steps=args.steps, seed=0,
        )
        started = time.perf_counter()
        plan = synthesize_corpus(corpus, config)
        print(f"corpus: {len(plan.questions)} questions, {len(plan.groups)} groups of {args.variates} x {args.steps} "
              f"(synthesized in {time.perf_counter() - started:.0f} s)")
        env = {**os.environ, "PREFECT_HOME": os.path.join(work, "prefect"), "RAY_USAGE_STATS_ENABLED": "0",
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        common = [sys.executable, __file__, "--corpus", corpus, "--answerer", args.answerer, "--actors", str(args.actors)]

        def run(worker: str, *extra: str) -> dict:
            done = subprocess.run(common + ["--worker", worker, *extra], check=True, capture_output=True, text=True, env=env)
            return json.loads(done.stdout.strip().splitlines()[-1])

        loop = run("loop")
        flow = run("flow", "--out", os.path.join(work, "results"))
        print(f"plain loop ({args.answerer}, 1 process): {loop['seconds']:.1f} s, accuracy {loop['accuracy']:.3f}")
        print(f"score_corpus flow (Prefect + Ray, {args.actors} actors, incl. Prefect server and Ray start): "
              f"{flow['seconds']:.1f} s, accuracy {flow['accuracy']:.3f}")
        print(f"ratio flow / loop: {flow['seconds'] / loop['seconds']:.2f} (goal <= 1.3)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
