"""Peak memory and time: stock Toto forward vs the chunked encoder (model/toto_encoder.py), real architecture.

Toto-Open-Base-1.0's architecture (patch 64, dim 768, 12 layers: 11 time-wise + 1 space-wise, 12 heads, MLP 3072)
with random weights (seed 0), fp32, CPU. Inputs: 2,283 variates (the largest ARFBench group) x 2,048 and 4,096
steps, normal noise with 1% NaN. Each measurement runs in its own subprocess and reports its ru_maxrss (the whole
process: Python, torch, the 0.45 GB of weights, inputs and the forward), so runs cannot inflate each other.

Plan (the machine has 24 GB):
  chunked  2,283 x 2,048   vs  stock 2,283 x 2,048   (DESIGN.md: stock peaks at 16.1 GB, 223 s)
  chunked  2,283 x 4,096   (goal: <= 4 GB); stock at 4,096 would need ~30 GB (DESIGN.md fit): skipped, estimated
  chunked vs stock on a variate subset at 4,096 steps (default 256 variates), for the exactness check there.
Both modes compute the same thing: the per-variate mean over valid steps of the backbone's per-step output.

    .venv/bin/python benchmarks/toto_memory.py                 # full plan (~20 min on 2 cores)
    .venv/bin/python benchmarks/toto_memory.py --quick         # 300 variates, small steps: a smoke run
    .venv/bin/python benchmarks/toto_memory.py --skip-stock    # chunked runs only
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

STOCK_4096_ESTIMATE_GB = 30.0  # DESIGN.md section 5: a fit over 7 sizes puts stock 2,283 x 4,096 at ~30 GB


def _available_gb() -> float:
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1e6
    except OSError:
        pass
    return float("inf")


def worker(mode: str, n_var: int, n_steps: int, out: str, chunk_variates: int, chunk_patches: int) -> None:
    """One measurement in this process; prints one JSON line."""
    warnings.filterwarnings("ignore")
    import numpy as np
    import torch
    from toto.model.toto import Toto

    from model.configuration import TotoBackboneConfig
    from model.toto_encoder import TotoEncoder

    torch.manual_seed(0)
    toto = Toto(**TotoBackboneConfig().to_toto_kwargs()).eval()
    rng = np.random.default_rng(0)
    values = rng.normal(size=(n_var, n_steps)).astype(np.float32)
    values[rng.random(values.shape) < 0.01] = np.nan
    encoder = TotoEncoder(
        toto,
        max_variates_per_chunk=chunk_variates,
        patches_per_spacewise_chunk=chunk_patches,
        max_context_steps=max(4096, -(-n_steps // 64) * 64),
    )
    usage = resource.getrusage(resource.RUSAGE_SELF)
    before_gb, cpu_before = usage.ru_maxrss / 1e6, usage.ru_utime + usage.ru_stime
    started = time.perf_counter()
    encoded = encoder.encode(values) if mode == "chunked" else encoder.encode_stock(values)
    seconds = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak_gb = usage.ru_maxrss / 1e6  # Linux: KiB
    cpu_s = usage.ru_utime + usage.ru_stime - cpu_before
    np.save(out, encoded.embeddings.numpy())
    print(json.dumps({
        "mode": mode, "variates": n_var, "steps": n_steps, "seconds": round(seconds, 1), "cpu_seconds": round(cpu_s, 1), "peak_gb": round(peak_gb, 2),
        "peak_before_forward_gb": round(before_gb, 2), "threads": torch.get_num_threads(), "windows": encoded.n_windows,
    }))


def run_one(mode: str, n_var: int, n_steps: int, workdir: str, args: argparse.Namespace) -> dict:
    out = os.path.join(workdir, f"{mode}_{n_var}_{n_steps}.npy")
    command = [sys.executable, os.path.abspath(__file__), "--worker", mode, "--variates", str(n_var), "--steps", str(n_steps),
               "--out", out, "--chunk-variates", str(args.chunk_variates), "--chunk-patches", str(args.chunk_patches)]
    print(f"  running {mode:8s} {n_var:5d} x {n_steps:5d} ...", flush=True)
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        print(done.stdout[-2000:], done.stderr[-4000:], file=sys.stderr)
        return {"mode": mode, "variates": n_var, "steps": n_steps, "error": f"exit {done.returncode}"}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["out"] = out
    print(f"    {result['seconds']:8.1f} s wall  {result['cpu_seconds']:8.1f} s CPU   peak {result['peak_gb']:6.2f} GB", flush=True)
    return result


def compare(a: dict, b: dict) -> tuple[float, float]:
    import numpy as np

    x, y = np.load(a["out"]), np.load(b["out"])
    diff = float(np.abs(x - y).max())
    return diff, diff / max(float(np.abs(y).max()), 1e-30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", choices=["stock", "chunked"])
    parser.add_argument("--variates", type=int, default=2283)
    parser.add_argument("--steps", type=int, nargs="*", default=None)
    parser.add_argument("--out")
    parser.add_argument("--subset-variates", type=int, default=256)
    parser.add_argument("--chunk-variates", type=int, default=128)
    parser.add_argument("--chunk-patches", type=int, default=4)
    parser.add_argument("--skip-stock", action="store_true")
    parser.add_argument("--quick", action="store_true", help="300 variates x 512/1024 steps, subset 64")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.variates, args.steps[0], args.out, args.chunk_variates, args.chunk_patches)
        return 0

    if args.quick:
        args.variates, args.subset_variates = 300, 64
    small, large = args.steps or ([512, 1024] if args.quick else [2048, 4096])
    results: dict[str, dict] = {}
    print(f"Toto real architecture, random weights, fp32, CPU; {args.variates} variates; "
          f"chunks: {args.chunk_variates} variates (time-wise), {args.chunk_patches} patches (space-wise)")
    with tempfile.TemporaryDirectory(prefix="toto-memory-") as workdir:
        results["chunked_small"] = run_one("chunked", args.variates, small, workdir, args)
        if not args.skip_stock:
            if _available_gb() < 18 and not args.quick:
                print(f"  stock {args.variates} x {small}: skipped, only {_available_gb():.1f} GB available (needs ~16 GB)")
            else:
                results["stock_small"] = run_one("stock", args.variates, small, workdir, args)
        results["chunked_large"] = run_one("chunked", args.variates, large, workdir, args)
        if not args.skip_stock:
            results["chunked_subset"] = run_one("chunked", args.subset_variates, large, workdir, args)
            results["stock_subset"] = run_one("stock", args.subset_variates, large, workdir, args)

        print()
        print(f"{'run':34s} {'wall s':>9s} {'CPU s':>9s} {'peak GB':>9s} {'max |diff| vs stock':>20s} {'relative':>10s}")
        rows = [
            ("chunked_small", "stock_small"), ("stock_small", None), ("chunked_large", None), ("stock_large", None),
            ("chunked_subset", "stock_subset"), ("stock_subset", None),
        ]
        for key, reference in rows:
            if key == "stock_large":
                if not args.quick:
                    print(f"{'stock   %5d x %5d' % (args.variates, large):34s} {'skipped':>9s} {'':>9s} "
                          f"{'~%.0f' % STOCK_4096_ESTIMATE_GB:>9s}   (estimate from DESIGN.md's fit; > 24 GB RAM)")
                continue
            result = results.get(key)
            if result is None:
                continue
            label = f"{result['mode']:8s}{result['variates']:5d} x {result['steps']:5d}"
            if "error" in result:
                print(f"{label:34s} {result['error']}")
                continue
            diff_text = rel_text = ""
            if reference and reference in results and "error" not in results[reference]:
                diff, rel = compare(result, results[reference])
                result["max_abs_diff_vs_stock"], result["relative_diff_vs_stock"] = diff, rel
                diff_text, rel_text = f"{diff:.2e}", f"{rel:.1e}"
            print(f"{label:34s} {result['seconds']:9.1f} {result['cpu_seconds']:9.1f} {result['peak_gb']:9.2f} {diff_text:>20s} {rel_text:>10s}")
        if "chunked_small" in results and "stock_small" in results and "error" not in results["stock_small"]:
            a, b = results["chunked_small"], results["stock_small"]
            print(f"\nchunked / stock at {args.variates} x {small}: memory {a['peak_gb'] / b['peak_gb']:.2f}x, "
                  f"wall time {a['seconds'] / b['seconds']:.2f}x, CPU time {a['cpu_seconds'] / b['cpu_seconds']:.2f}x")
        large_result = results.get("chunked_large", {})
        if "peak_gb" in large_result and not args.quick:
            verdict = "met" if large_result["peak_gb"] <= 4.0 else "NOT met"
            print(f"goal chunked <= 4 GB at {args.variates} x {large}: {verdict} ({large_result['peak_gb']:.2f} GB)")
        for result in results.values():
            result.pop("out", None)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
