"""GPU benchmark: hybrid answerer questions/s, batched generation vs a batch-of-one loop, and the chunked Toto
encoder at full ARFBench width. Prints "no GPU" and exits 0 on a machine without CUDA.

    python benchmarks/hybrid_throughput.py                         # 8B-sized VLM, 32 questions, batch 8
    python benchmarks/hybrid_throughput.py --size 32b              # Qwen3-VL-32B text sizes (~64 GB in bf16)
    python benchmarks/hybrid_throughput.py --allow-cpu --size tiny # smoke run of this script on CPU

What runs (bf16 on CUDA, random weights, seeded):
- a Qwen3-VL-shaped model: the text decoder at the chosen size (8b: hidden 4096, 36 layers, 32 heads / 8 KV;
  32b: hidden 5120, 64 layers, 64 heads / 8 KV; vocab 151,936) with a one-layer vision tower (the time-series
  path never runs it); Toto at its real size (patch 64, dim 768, 12 layers); the real-size VariateEmbedding and
  TimeSeriesProjector; the tiny BPE tokenizer (prompt token counts are therefore not Qwen's);
- a synthetic corpus (tasks/synthetic.py) of --questions questions, up to --max-variates x --max-steps per group;
- answers through model/pipeline.HybridAnswerer: (a) answer() one question at a time, (b) answer_batch() with
  --batch-size; the Toto encoding cache is cleared before each, so both include encoding. Greedy, max_new_tokens
  fixed (a random model rarely stops early), so both generate the same number of tokens;
- the chunked encoder on one 2,283 x 4,096 group (time, peak GPU memory), unless --skip-toto.
It reports questions/s for both, the speed-up, and how many answers agree (bf16 batching can flip near-ties).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

SIZES = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16),
    "8b": dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8, head_dim=128),
    "32b": dict(hidden_size=5120, intermediate_size=25600, num_hidden_layers=64, num_attention_heads=64, num_key_value_heads=8, head_dim=128),
}


def build_model(size: str, device, dtype):
    import torch
    from toto.model.toto import Toto
    from transformers import GenerationConfig, Qwen3VLConfig, Qwen3VLForConditionalGeneration

    from model.configuration import HybridConfig, TotoBackboneConfig
    from model.modeling_hybrid import HybridModel
    from model.tiny import TINY_SPECIAL_TOKENS, build_tiny_tokenizer, tiny_config

    tokenizer = build_tiny_tokenizer(0)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in TINY_SPECIAL_TOKENS}
    text = dict(SIZES[size])
    head_dim = text["head_dim"]
    section = {128: [24, 20, 20], 16: [4, 2, 2]}[head_dim]  # Qwen3-VL's mrope_section (sums to head_dim / 2)
    text.update(
        vocab_size=len(tokenizer) if size == "tiny" else 151936,
        max_position_embeddings=262144,
        rope_parameters={"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": section, "mrope_interleaved": True},
        pad_token_id=ids["<|endoftext|>"],
    )
    vlm_config = Qwen3VLConfig(
        text_config=text,
        vision_config=dict(depth=1, hidden_size=64, intermediate_size=128, num_heads=2, out_hidden_size=text["hidden_size"],
                           deepstack_visual_indexes=[0], num_position_embeddings=64),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    if size == "tiny":
        config = tiny_config()
        toto_config = config.toto
    else:
        toto_config = TotoBackboneConfig()
        config = HybridConfig(toto=toto_config, vlm_hidden_size=text["hidden_size"])
    torch.manual_seed(0)
    with torch.device(device):
        vlm = Qwen3VLForConditionalGeneration._from_config(vlm_config, dtype=dtype).eval()
        toto = Toto(**toto_config.to_toto_kwargs()).to(dtype).eval()
    vlm.generation_config = GenerationConfig(do_sample=False, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    model = HybridModel(config, toto, vlm, tokenizer)
    model.variate_embedding.to(device=device, dtype=dtype)
    model.ts_projector.to(device=device, dtype=dtype)
    return model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="8b")
    parser.add_argument("--questions", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--max-variates", type=int, default=64)
    parser.add_argument("--max-steps", type=int, default=2048)
    parser.add_argument("--skip-toto", action="store_true", help="skip the 2,283 x 4,096 encoder measurement")
    parser.add_argument("--allow-cpu", action="store_true", help="run without CUDA (fp32; use --size tiny)")
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available() and not args.allow_cpu:
        print("no GPU")
        return 0
    warnings.filterwarnings("ignore")
    import numpy as np

    from model.pipeline import HybridAnswerer
    from tasks.corpus import load_corpus
    from tasks.synthetic import SynthConfig, synthesize_corpus

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "CPU"
    print(f"device: {name}; dtype {dtype}; VLM size {args.size}; {args.questions} questions; batch {args.batch_size}; "
          f"max_new_tokens {args.max_new_tokens}")

    started = time.perf_counter()
    model = build_model(args.size, device, dtype)
    n_params = sum(p.numel() for p in model.vlm.parameters()) / 1e9
    print(f"built random model in {time.perf_counter() - started:.1f} s ({n_params:.2f} B VLM parameters)")

    with tempfile.TemporaryDirectory(prefix="hybrid-bench-") as out:
        synthesize_corpus(out, SynthConfig(n_questions=args.questions, max_variates=args.max_variates, max_steps=args.max_steps, seed=0))
        corpus = load_corpus(out)
        questions = corpus.questions[: args.questions]
        groups = {g: corpus.open_group(g) for q in questions for g in q.query_groups}
    series = [[groups[g] for g in q.query_groups] for q in questions]
    print(f"corpus: {len(questions)} questions, {len(groups)} groups, "
          f"up to {max(s.n_variates for s in groups.values())} variates x {max(s.n_steps for s in groups.values())} steps")

    answerer = HybridAnswerer(model, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    answerer.answer_batch(questions[:2], series[:2])  # warm-up (kernels, allocator)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    answerer._cache.clear()
    sync()
    t0 = time.perf_counter()
    single = [answerer.answer(q, s) for q, s in zip(questions, series)]
    sync()
    single_s = time.perf_counter() - t0

    answerer._cache.clear()
    t0 = time.perf_counter()
    batched = answerer.answer_batch(questions, series)
    sync()
    batched_s = time.perf_counter() - t0

    agree = sum(a.raw_response == b.raw_response for a, b in zip(single, batched))
    tokens_out = sum(a.tokens_out or 0 for a in batched)
    print()
    print(f"{'mode':22s} {'seconds':>9s} {'questions/s':>12s} {'new tokens/s':>13s}")
    print(f"{'batch of one (loop)':22s} {single_s:9.2f} {len(questions) / single_s:12.2f} {tokens_out / single_s:13.1f}")
    print(f"{'batched x%d' % args.batch_size:22s} {batched_s:9.2f} {len(questions) / batched_s:12.2f} {tokens_out / batched_s:13.1f}")
    print(f"speed-up: {single_s / batched_s:.2f}x; identical answers: {agree}/{len(questions)} "
          f"(greedy; bf16 batching may flip near-ties)")

    if not args.skip_toto:
        rng = np.random.default_rng(0)
        values = rng.normal(size=(2283, 4096)).astype(np.float32)
        values[rng.random(values.shape) < 0.01] = np.nan
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        sync()
        t0 = time.perf_counter()
        encoded = model.encode_series(values)
        sync()
        seconds = time.perf_counter() - t0
        peak = (torch.cuda.max_memory_allocated() - base) / 1e9 if device.type == "cuda" else float("nan")
        print(f"\nchunked Toto encoder, 2,283 x 4,096, {dtype}: {seconds:.2f} s, peak GPU memory above the loaded model "
              f"{peak:.2f} GB, {encoded.n_windows} window(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
