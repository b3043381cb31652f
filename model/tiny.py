"""A random tiny Toto-1.0-QA in the exact artifact layout, for tests, demos and CI (no hub, a few MB).

    build_tiny_model(seed) -> HybridModel in memory; tasks/tiny_model.make_tiny_model(out_dir, seed) saves it as
        config.json      HybridConfig (tiny sizes)
        vlm/             a random tiny Qwen3-VL (text hidden 64, 2 layers, vision depth 1) + a real BPE tokenizer
                         trained here on prompt-like text (digits, timestamps, option words, JSON), with a
                         Qwen-style chat template and the Qwen special tokens + an image processor config
                         (Qwen3-VL's preprocessing, images capped at 128 x 128 pixels)
        ts_modules.pt    variate_embedding + ts_projector state dicts (published names)
        toto/            a random tiny Toto (patch 16, dim 32, 2 layers: one space-wise, one time-wise, 2 heads,
                         MLP 64): model.safetensors + config.json

The weights are random (seeded): answers are gibberish, but every code path of the real model runs.
"""

from __future__ import annotations

import random
from typing import Any

import torch

from model.configuration import HybridConfig, TotoBackboneConfig

__all__ = ["TINY_SPECIAL_TOKENS", "build_tiny_model", "build_tiny_tokenizer", "tiny_config"]

# Qwen's special tokens (the ids differ: they are the first ids of the tiny vocabulary).
TINY_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# Qwen2/3-style chat template (string or list-of-parts content; text parts only).
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}"
    "{%- else %}{%- for part in message['content'] %}"
    "{%- if part['type'] == 'text' %}{{- part['text'] }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

_WORDS = (
    "anomaly presence start end categorization magnitude identification indicator correlation tier yes no "
    "level shift transient spike change in trend seasonality variance the time series metric service host "
    "latency error rate requests cpu memory throughput increase decrease before earliest timestamp not resolved "
    "channel channels and of listed among no anomaly which when what does is are there this that other both "
    "degradation improvement same different option options answer reasoning json exact text copy letter "
    "incident window interval seconds minutes hours days value values percent higher lower worse better"
).split()


def _training_lines(seed: int) -> list[str]:
    """A few hundred lines of prompt-like text: the real prompt boilerplate plus random questions and answers."""
    from model.prompts import build_prompt
    from model.records import CATEGORIES, TIERS, Question

    rng = random.Random(seed)
    lines: list[str] = []
    for index in range(40):
        category = CATEGORIES[index % len(CATEGORIES)]
        options = [
            f"{rng.randint(2019, 2026)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} "
            f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}",
            f"{rng.choice([0.1, 0.5, 1, 5, 10, 25, 50, 100, 250, 1000])}%",
            "No anomaly",
            " ".join(rng.choice(_WORDS) for _ in range(3)),
        ]
        question = Question(
            question_id=index,
            question=" ".join(rng.choice(_WORDS) for _ in range(12)) + "?",
            category=category,
            tier=TIERS[index % 3],
            options=tuple(options),
            correct_answer=options[0],
            query_groups=(f"{rng.randint(10000, 99999)}_{index % 3}",),
        )
        lines.extend(build_prompt(question, options).splitlines())
        lines.append('{"reasoning": "' + " ".join(rng.choice(_WORDS) for _ in range(8)) + f'", "answer": "{rng.choice(options)}"}}')
        lines.append(f"Answer: {rng.choice(options)}")
        lines.append(f"Channel {index + 1}: service:svc-{rng.randint(0, 99)},host:h{rng.randint(0, 999)}")
    lines.extend(" ".join(str(rng.randint(0, 10**rng.randint(1, 6))) for _ in range(10)) for _ in range(40))
    return lines


def build_tiny_tokenizer(seed: int = 0, vocab_size: int = 1024) -> Any:
    """A real byte-level BPE tokenizer trained locally, wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(TINY_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_training_lines(seed), trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(TINY_SPECIAL_TOKENS[1:2] + TINY_SPECIAL_TOKENS[3:]),
        padding_side="left",
        model_max_length=32768,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_config() -> HybridConfig:
    """Tiny sizes; small chunks so that the chunked encoder really chunks."""
    toto = TotoBackboneConfig(
        patch_size=16,
        stride=16,
        embed_dim=32,
        num_layers=2,
        num_heads=2,
        mlp_hidden_dim=64,
        dropout=0.0,
        spacewise_every_n_layers=2,
        spacewise_first=True,
        output_distribution_kwargs={"k_components": 4},
        use_memory_efficient_attention=False,
        stabilize_with_global=True,
        scale_factor_exponent=10.0,
    )
    return HybridConfig(
        toto_model_name="arfscore/tiny-toto-random",
        vlm_model_name="arfscore/tiny-qwen3-vl-random",
        toto=toto,
        ts_embed_dim=32,
        variate_mlp_hidden_dim=64,
        variate_out_dim=32,
        projector_hidden_dim=48,
        vlm_hidden_size=64,
        max_variates_per_chunk=4,
        patches_per_spacewise_chunk=2,
        max_context_steps=256,
    )


def build_tiny_model(seed: int = 0) -> Any:
    """The tiny HybridModel in memory (float32, CPU, eval mode)."""
    from toto.model.toto import Toto
    from transformers import GenerationConfig, Qwen3VLConfig, Qwen3VLForConditionalGeneration

    from model.modeling_hybrid import HybridModel

    config = tiny_config()
    tokenizer = build_tiny_tokenizer(seed)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in TINY_SPECIAL_TOKENS}
    vlm_config = Qwen3VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            max_position_embeddings=32768,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 2, 2], "mrope_interleaved": True},
            pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(
            depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, deepstack_visual_indexes=[0],
            patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64,
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        toto = Toto(**config.toto.to_toto_kwargs()).eval()
        vlm = Qwen3VLForConditionalGeneration(vlm_config).eval()
        vlm.generation_config = GenerationConfig(
            do_sample=False, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"], max_new_tokens=64
        )
        model = HybridModel(config, toto, vlm, tokenizer)
        model.image_processor = _tiny_image_processor()
    finally:
        torch.random.set_rng_state(generator_state)
    return model.eval()


def _tiny_image_processor() -> Any:
    """Qwen3-VL's image preprocessing (patch 16, merge 2, temporal 2, mean/std 0.5) capped at 128 x 128 pixels."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(
        patch_size=16, merge_size=2, temporal_patch_size=2, size={"shortest_edge": 32 * 32, "longest_edge": 128 * 128},
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
    )
