"""Ingest benchmark: one full-size query group (default 2,283 variates x 40,000 steps) in several Parquet layouts.

The group is synthesized once with our own writer (variate-major rows, naive timestamps, a row group per chunk of
variates), then rewritten as other tools lay such data out: timestamp-major rows (every variate of one minute,
then the next minute), tz-aware timestamps, and row groups of 64M (pyarrow's largest), 1M and 100k rows. For
each file, each in a fresh process so peak RSS is its own (best of --repeats, alternating):

  bare     `pyarrow.parquet.read_table` of the file (the baseline);
  dense    `tasks.series.read_dense` -> float32 [variates, steps].

Prints per layout: time ratio dense / bare (goal <= 1.0x) and peak RSS of dense / the dense array (goal <= 2.0x).

    .venv/bin/python benchmarks/ingest.py [--variates 2283] [--steps 40000] [--repeats 2] [--layouts ours,tm-tz-1m]
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

# name -> (row order, timezone or None, row group rows); "ours" is the synthetic writer's own file.
LAYOUTS: dict[str, tuple[str, str | None, int]] = {
    "ours": ("variate-major", None, 0),
    "vm-naive-64m": ("variate-major", None, 64 * 1024 * 1024),
    "vm-tz-100k": ("variate-major", "UTC", 100_000),
    "tm-tz-1m": ("timestamp-major", "UTC", 1_100_000),
    "tm-tz-64m": ("timestamp-major", "UTC", 64 * 1024 * 1024),
    "tm-naive-100k": ("timestamp-major", None, 100_000),
}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _rewrite(source: str, target: str, order: str, tz: str | None, row_group_rows: int) -> dict:
    """The synthetic group's data in another layout (built from its dense array: exactly the same cells)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tasks.series import parse_group_file_name, read_dense

    group = read_dense(source, parse_group_file_name(os.path.basename(source), source))
    n_variates, n_steps = group.values.shape
    if order == "timestamp-major":
        variate = np.tile(np.arange(n_variates, dtype=np.int32), n_steps)
        step = np.repeat(np.arange(n_steps, dtype=np.int64), n_variates)
    else:
        variate = np.repeat(np.arange(n_variates, dtype=np.int32), n_steps)
        step = np.tile(np.arange(n_steps, dtype=np.int64), n_variates)
    value = group.values[variate, step].astype(np.float64)
    present = np.isfinite(value)  # absent points are absent rows, as in the synthetic file
    variate, step, value = variate[present], step[present], value[present]
    stamps = group.start_ns + step * (group.interval_s * 1_000_000_000)
    del step
    table = pa.table({
        "timestamp": pa.array(stamps, pa.int64()).cast(pa.timestamp("ns", tz=tz)),
        # Kept dictionary-typed in memory (a plain string column of 90M rows overflows 32-bit offsets); written without
        # the Arrow schema, so readers see the plain string column another tool would have written.
        "group": pa.DictionaryArray.from_arrays(pa.array(variate), pa.array(group.variate_names)),
        "value": pa.array(value),
    })
    del stamps, value, variate
    pq.write_table(table, target, row_group_size=row_group_rows, store_schema=False)
    metadata = pq.ParquetFile(target).metadata
    return {"rows": metadata.num_rows, "row_groups": metadata.num_row_groups, "file_mb": os.path.getsize(target) / 1e6}


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


def _run(*args: str) -> dict:
    output = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variates", type=int, default=2283)
    parser.add_argument("--steps", type=int, default=40_000)
    parser.add_argument("--repeats", type=int, default=2, help="read measurements: best of N (alternating)")
    parser.add_argument("--layouts", default=",".join(LAYOUTS), help=f"comma-separated subset of {', '.join(LAYOUTS)}")
    parser.add_argument("--dir", default=os.path.join(ROOT, ".bench"))
    parser.add_argument("--worker")
    parser.add_argument("--rewrite", nargs=5, metavar=("SOURCE", "TARGET", "ORDER", "TZ", "ROWS"))
    parser.add_argument("--path")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(args.worker, args.path, args.variates, args.steps)))
        return
    if args.rewrite:
        source, target, order, tz, rows = args.rewrite
        print(json.dumps(_rewrite(source, target, order, None if tz == "-" else tz, int(rows))))
        return

    os.makedirs(args.dir, exist_ok=True)
    size = ["--variates", str(args.variates), "--steps", str(args.steps)]
    synth = _run("--worker", "synth", "--path", args.dir, *size)
    ours = os.path.join(args.dir, "90000_0_60.parquet")
    print(
        f"synthesize {args.variates} x {args.steps}: {synth['seconds']:.1f} s, peak RSS {synth['peak_rss_mb']:.0f} MB, "
        f"file {synth['file_mb']:.0f} MB"
    )
    header = (
        f"{'layout':<15} {'row order':<16} {'timestamps':<10} {'row groups':>10} {'bare s':>7} {'dense s':>8} {'time':>6} "
        f"{'bare MB':>8} {'dense MB':>9} {'memory':>7}"
    )
    rows = [header]
    for name in args.layouts.split(","):
        order, tz, group_rows = LAYOUTS[name]
        if name == "ours":
            path = ours
        else:
            path = os.path.join(args.dir, "90001_0_60.parquet")
            _run("--rewrite", ours, path, order, tz or "-", str(group_rows))
        import pyarrow.parquet as pq

        n_groups = pq.ParquetFile(path).metadata.num_row_groups
        bare, dense = [], []
        for _ in range(args.repeats):  # alternate so both see the same page-cache state
            bare.append(_run("--worker", "read_table", "--path", path, *size))
            dense.append(_run("--worker", "dense", "--path", path, *size))
        b = min(bare, key=lambda r: r["seconds"])
        d = min(dense, key=lambda r: r["seconds"])
        rows.append(
            f"{name:<15} {order:<16} {'tz ' + tz if tz else 'naive':<10} {n_groups:>10} {b['seconds']:>7.2f} {d['seconds']:>8.2f} "
            f"{d['seconds'] / b['seconds']:>5.2f}x {b['peak_rss_mb']:>8.0f} {d['peak_rss_mb']:>9.0f} {d['peak_rss_mb'] / d['dense_mb']:>6.2f}x"
        )
        print(rows[-1], flush=True)
        if path != ours:
            os.remove(path)
    os.remove(ours)
    print("\ntime = dense / bare read_table (goal <= 1.0x); memory = dense peak RSS / dense array (goal <= 2.0x)")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
