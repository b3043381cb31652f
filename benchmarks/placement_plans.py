"""GPU placement plans for Toto-1.0-QA with Qwen3-VL-32B, made on the meta device (no GPU, no weights).

Prints, for 4 x 40 GiB (the model card's tested setup), 4 x 80 GiB, 2 x 80 GiB and 2 x 24 GiB: layers and bytes per
device, KV headroom and the batch token budget, or the error with the sizes; and how long planning takes.

    .venv/bin/python benchmarks/placement_plans.py [--batch-size 8] [--max-new-tokens 256]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.configuration import HybridConfig  # noqa: E402
from model.placement import GiB, PlacementError, build_empty_vlm, plan_placement, ts_module_bytes  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "tests" / "data" / "qwen3_vl_32b_config.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    args = parser.parse_args()
    from transformers import Qwen3VLConfig

    started = time.perf_counter()
    config = Qwen3VLConfig.from_dict(json.loads(CONFIG.read_text()))
    model = build_empty_vlm(config, torch.bfloat16)
    ts = ts_module_bytes(HybridConfig(), config.text_config.hidden_size, torch.bfloat16)
    print(f"Qwen3-VL-32B on the meta device + Toto sizes: {time.perf_counter() - started:.2f} s; Toto+projector+workspace {ts / GiB:.2f} GiB")
    for gpus, gib in ((4, 40), (4, 80), (2, 80), (2, 24)):
        started = time.perf_counter()
        try:
            plan = plan_placement(
                config, [gib * GiB] * gpus, ts_bytes=ts, model=model, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens
            )
        except PlacementError as error:
            print(f"\n{gpus} x {gib} GiB: PlacementError in {time.perf_counter() - started:.2f} s: {error}")
            continue
        print(f"\n{gpus} x {gib} GiB: planned in {time.perf_counter() - started:.2f} s\n{plan.describe()}")


if __name__ == "__main__":
    main()
