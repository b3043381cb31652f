"""Ingest benchmark: one full-size query group (default 2,283 variates x 40,000 steps).

Measures, each in a fresh process so peak RSS is its own:
  1. synthesize the group (streamed writer): seconds, peak RSS;
  2. bare `pyarrow.parquet.read_table` of the file: seconds, peak RSS;
  3. long Parquet -> dense float32 array (tasks.series.read_dense): seconds, peak RSS.
Prints the ratio (3)/(2) for time (goal <= 1.5x) and peak RSS of (3) / dense array size (goal <= 2.5x).

    .venv/bin/python benchmarks/ingest.py [--variates 2283] [--steps 40000] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _worker(mode: str, path: str, variates: int, steps: int) -> dict:
    import numpy as np

    started = time.perf_counter()
    if mode == "synth":
        from tasks.synthetic import SynthConfig, plan_group, write_group

        plan = plan_group(np.random.default_rng(0), 90_000, 0, variates, steps, interval_s=60, anomaly_kind="Level Shift")
        written = write_group(plan, path, SynthConfig())
        extra = {"file_mb": os.path.getsize(written) / 1e6}
    elif mode == "read_table":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        extra = {"rows": table.num_rows}
    elif mode == "dense":
        from tasks.series import parse_group_file_name, read_dense

        group = read_dense(path, parse_group_file_name(os.path.basename(path), path))
        extra = {"shape": list(group.values.shape), "dense_mb": group.values.nbytes / 1e6}
    else:
        raise ValueError(mode)
    return {"mode": mode, "seconds": time.perf_counter() - started, "peak_rss_mb": _peak_rss_mb(), **extra}


def _run(mode: str, path: str, variates: int, steps: int) -> dict:
    output = subprocess.run(
        [sys.executable, __file__, "--worker", mode, "--path", path, "--variates", str(variates), "--steps", str(steps)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variates", type=int, default=2283)
    parser.add_argument("--steps", type=int, default=40_000)
    parser.add_argument("--repeats", type=int, default=2, help="read measurements: best of N (alternating)")
    parser.add_argument("--dir", default=os.path.join(ROOT, ".bench"))
    parser.add_argument("--worker")
    parser.add_argument("--path")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(args.worker, args.path, args.variates, args.steps)))
        return

    os.makedirs(args.dir, exist_ok=True)
    synth = _run("synth", args.dir, args.variates, args.steps)
    path = os.path.join(args.dir, "90000_0_60.parquet")
    print(
        f"synthesize {args.variates} x {args.steps}: {synth['seconds']:.1f} s, peak RSS {synth['peak_rss_mb']:.0f} MB, "
        f"file {synth['file_mb']:.0f} MB"
    )
    bare, dense = [], []
    for _ in range(args.repeats):  # alternate so both see the same page-cache state
        bare.append(_run("read_table", path, args.variates, args.steps))
        dense.append(_run("dense", path, args.variates, args.steps))
    best_bare = min(bare, key=lambda r: r["seconds"])
    best_dense = min(dense, key=lambda r: r["seconds"])
    dense_mb = best_dense["dense_mb"]
    print(f"pyarrow.parquet.read_table: {best_bare['seconds']:.2f} s, peak RSS {best_bare['peak_rss_mb']:.0f} MB ({best_bare['rows']:,} rows)")
    print(f"read_dense -> float32 {best_dense['shape']}: {best_dense['seconds']:.2f} s, peak RSS {best_dense['peak_rss_mb']:.0f} MB")
    print(f"time ratio dense / read_table: {best_dense['seconds'] / best_bare['seconds']:.2f}x (goal <= 1.5x)")
    print(f"peak RSS / dense array ({dense_mb:.0f} MB): {best_dense['peak_rss_mb'] / dense_mb:.2f}x (goal <= 2.5x)")
    os.remove(path)


if __name__ == "__main__":
    main()
