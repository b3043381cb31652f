"""The `openai` answerer's figures: questions/s at max_concurrency 1 vs 32, calls on a warm-cache rerun, plot time.

A scripted chat-completions server (tests/chat_server.py, FastAPI + uvicorn) runs in its own process on 127.0.0.1
with 50 ms added to every reply. A synthesized corpus of 500 questions is answered the way an actor answers it
(tasks.answering.ShardWorker: groups read from Parquet, series rendered as text, the shard's questions handed to
the answerer together), through the real `openai` client:

1. cache off, max_concurrency 1, then 32: questions/s of each and the ratio (the issue expects >= 10x);
2. cache on: a cold run (one call per question), then a rerun under a new run id with a fresh answerer: the server's
   own request count says how many calls it made (expected 0), and the answers are the same;
3. tasks.plots.arfbench_plot on one query group of 2,283 variates x 40,000 steps (ARFBench's largest), and on a
   small one (16 x 1,024): seconds per group.

    .venv/bin/python benchmarks/api_throughput.py [--questions 500] [--latency-s 0.05] [--skip-plot]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from model.answerers import AnswererSpec  # noqa: E402
from model.records import SeriesGroup  # noqa: E402
from tasks.answering import ShardWorker  # noqa: E402
from tasks.plots import arfbench_plot  # noqa: E402
from tasks.synthetic import SynthConfig, synthesize_corpus  # noqa: E402
from tests.conftest import free_port  # noqa: E402


def _server_requests(base_url: str) -> int:
    with urllib.request.urlopen(f"{base_url}/stats", timeout=10) as response:
        return int(json.load(response)["requests"])


def _start_server(latency_s: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "tests.chat_server", "--port", str(port), "--latency-s", str(latency_s)], cwd=ROOT)
    base_url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 30
    while True:
        try:
            _server_requests(base_url)
            return process, base_url
        except OSError:
            if time.time() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError("the chat server did not start") from None
            time.sleep(0.1)


def _score(corpus_dir: str, run_id: str, params: dict[str, str]) -> tuple[float, list[dict]]:
    """Seconds to answer every question as one actor would, and the rows."""
    worker = ShardWorker(corpus_dir, AnswererSpec("openai", params=params), run_id, question_timeout_s=None)
    question_ids = sorted(worker.questions)
    started = time.perf_counter()
    rows = worker.answer_table(question_ids).to_pylist()
    return time.perf_counter() - started, rows


def _plot_seconds(variates: int, steps: int, repeats: int) -> float:
    values = np.random.default_rng(0).normal(size=(variates, steps)).astype(np.float32)
    values[: variates // 10, steps // 2: steps // 2 + steps // 50] += 8.0  # an incident in some variates
    names = tuple(f"service:web-{i:04d},host:h{i % 97:02d}" for i in range(variates))
    group = SeriesGroup("bench", values, names, 1_700_000_000 * 10**9, 60)
    arfbench_plot(group)  # warm matplotlib (fonts, backend) once
    started = time.perf_counter()
    for _ in range(repeats):
        arfbench_plot(group)
    return (time.perf_counter() - started) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=500)
    parser.add_argument("--latency-s", type=float, default=0.05)
    parser.add_argument("--skip-plot", action="store_true")
    args = parser.parse_args()
    process, base_url = _start_server(args.latency_s)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            corpus_dir = os.path.join(tmp, "corpus")
            synthesize_corpus(corpus_dir, SynthConfig(n_questions=args.questions, max_variates=8, max_steps=512, seed=0))
            base = {"base_url": base_url, "model": "bench-model", "inputs": "text", "timeout_s": "30", "cache_dir": "none"}

            rates = {}
            for concurrency in (1, 32):
                before = _server_requests(base_url)
                seconds, rows = _score(corpus_dir, f"c{concurrency}", {**base, "max_concurrency": str(concurrency)})
                calls = _server_requests(base_url) - before
                ok = sum(row["status"] == "ok" for row in rows)
                rates[concurrency] = len(rows) / seconds
                print(f"max_concurrency {concurrency:>2}: {len(rows)} questions ({ok} ok, {calls} calls) in {seconds:.2f} s "
                      f"= {rates[concurrency]:.1f} questions/s")
            print(f"ratio 32 vs 1: {rates[32] / rates[1]:.1f}x (server latency {args.latency_s * 1000:.0f} ms)")

            cached = {**base, "max_concurrency": "32", "cache_dir": os.path.join(tmp, "cache")}
            before = _server_requests(base_url)
            cold_s, cold_rows = _score(corpus_dir, "cold", cached)
            cold_calls = _server_requests(base_url) - before
            warm_s, warm_rows = _score(corpus_dir, "warm", cached)  # a new run id, a new answerer: only the cache is shared
            warm_calls = _server_requests(base_url) - before - cold_calls
            same = [r["raw_response"] for r in cold_rows] == [r["raw_response"] for r in warm_rows]
            hits = sum(bool(r["cache_hit"]) for r in warm_rows)
            print(f"cache: cold run {cold_calls} calls in {cold_s:.2f} s; warm rerun {warm_calls} calls, {hits}/{len(warm_rows)} hits "
                  f"in {warm_s:.2f} s; same answers: {same}")
    finally:
        process.kill()
        process.wait()

    if not args.skip_plot:
        small = _plot_seconds(16, 1024, repeats=5)
        large = _plot_seconds(2283, 40_000, repeats=2)
        print(f"arfbench_plot: {small:.2f} s per group at 16 x 1,024; {large:.2f} s per group at 2,283 x 40,000 "
              f"({large / small:.1f}x)")


if __name__ == "__main__":
    main()
