"""Where the hybrid model's weights go on the GPUs one actor sees: a plan made and checked before any weight loads.

A Ray actor given G GPUs sees exactly those G devices (cuda:0..G-1). The plan spreads the VLM over all of them:

- the VLM is built on the meta device from its config alone (``accelerate.init_empty_weights``: no weights, no
  memory) and sized per module;
- each device's budget (its memory x ``gpu_memory_fraction``, or ``gpu_memory_gib``) first loses the headroom
  generation needs there: the KV cache of the decoder layers it holds for one batch of ``batch_token_budget``
  tokens, the prefill activations of that batch (they live on one device at a time, so every device keeps
  them), and on the first device Toto, the projector and the chunked encoder's workspace, placed there
  explicitly;
- accelerate's ``get_balanced_memory`` + ``infer_auto_device_map`` place the weights in what is left, decoder
  layers and vision blocks never split (the model's ``_no_split_modules``); the KV share depends on the layers a
  device gets, so the two are iterated to a fixed point;
- the plan is checked: nothing may spill to "cpu" or "disk" (accelerate would silently do that) and no device may
  exceed its budget. It first tries ``batch_size`` of the largest question; when that does not fit, the largest
  token budget that fits; when not even one largest question fits, :class:`PlacementError` lists the sizes.

At generation, questions are batched so that ``len(batch) x (longest input + max_new_tokens)`` stays within
``batch_token_budget``: big questions go in smaller batches instead of running out of memory.

Memory model (bf16, per token): KV = 2 x kv_heads x head_dim x 2 bytes per decoder layer (4 KiB for Qwen3-VL-32B);
prefill activations ~ (3 x intermediate + 10 x hidden) x 2 bytes x 1.2 (the SwiGLU MLP's gate, up and product
alive at once, norms and residuals, 20% allocator slack; measured 198 KiB per token on one Qwen3-VL-32B layer,
this gives 294 KiB). Generation keeps logits of the last position only.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from model.configuration import HybridConfig
from model.errors import ArfscoreError

__all__ = [
    "DevicePlan",
    "MemoryModel",
    "PlacementError",
    "PlacementPlan",
    "build_empty_vlm",
    "estimate_question_tokens",
    "plan_placement",
    "ts_module_bytes",
    "visible_gpu_budgets",
]

GiB = 1 << 30
_LAYER_KEY = re.compile(r"^model\.language_model\.layers\.(\d+)(?:\.|$)")
ACTIVATION_SLACK = 1.2
# The largest ARFBench question: a pair of groups with 2,283 variates each (one token per variate), each listing
# up to max_channel_names channel names ("Channel 123: service:api,host:i-0a1b2c" ~ 16 tokens), plus the question,
# options and instructions (~600 tokens).
ARFBENCH_MAX_VARIATES = 2283
TOKENS_PER_CHANNEL_LINE = 16
BASE_PROMPT_TOKENS = 600


class PlacementError(ArfscoreError):
    """The model does not fit on the actor's GPUs (the message lists the sizes)."""


def visible_gpu_budgets(gpu_memory_gib: float | None, fraction: float) -> list[int]:
    """Bytes per GPU this process sees (a Ray actor sees its own): ``gpu_memory_gib`` each, else its total memory x
    ``fraction`` (room for the CUDA context and fragmentation)."""
    return [
        int(gpu_memory_gib * GiB) if gpu_memory_gib is not None else int(torch.cuda.get_device_properties(i).total_memory * fraction)
        for i in range(torch.cuda.device_count())
    ]


def estimate_question_tokens(
    max_variates: int = ARFBENCH_MAX_VARIATES, groups: int = 2, max_channel_names: int = 1000, images: int = 0, image_tokens: int = 1280
) -> int:
    """Input tokens of the largest question: variate tokens, listed channel names, prompt, optional plot images."""
    listed = min(max_channel_names, max_variates)
    return groups * (max_variates + listed * TOKENS_PER_CHANNEL_LINE) + BASE_PROMPT_TOKENS + images * image_tokens


def _dtype_bytes(dtype: torch.dtype) -> int:
    return torch.finfo(dtype).bits // 8 if dtype.is_floating_point else torch.iinfo(dtype).bits // 8


@dataclass(frozen=True)
class MemoryModel:
    """Per-token memory of generation, from the VLM's text config."""

    n_layers: int
    kv_bytes_per_token_per_layer: int
    activation_bytes_per_token: int

    @classmethod
    def from_config(cls, vlm_config: Any, dtype: torch.dtype) -> "MemoryModel":
        text = getattr(vlm_config, "text_config", None) or vlm_config
        width = _dtype_bytes(dtype)
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        kv_heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
        activation = (3 * text.intermediate_size + 10 * text.hidden_size) * width * ACTIVATION_SLACK
        return cls(int(text.num_hidden_layers), 2 * kv_heads * head_dim * width, int(math.ceil(activation)))

    def kv_bytes(self, tokens: int, layers: int) -> int:
        return tokens * layers * self.kv_bytes_per_token_per_layer

    def activation_bytes(self, tokens: int) -> int:
        return tokens * self.activation_bytes_per_token


@dataclass(frozen=True)
class DevicePlan:
    """One visible GPU in a plan (bytes)."""

    device: int
    budget: int
    weights: int
    kv_cache: int
    activations: int
    ts_modules: int  # Toto + projector + encoder workspace (first device only)
    layers: tuple[int, ...]  # decoder layer indexes held here
    modules: tuple[str, ...]  # other units held here (vision tower, embeddings, lm_head, final norm)

    @property
    def used(self) -> int:
        return self.weights + self.kv_cache + self.activations + self.ts_modules

    def describe(self) -> str:
        layers = f"layers {self.layers[0]}-{self.layers[-1]} ({len(self.layers)})" if self.layers else "no layers"
        extra = f" + {', '.join(self.modules)}" if self.modules else ""
        return (
            f"cuda:{self.device}: {layers}{extra}; weights {self.weights / GiB:.2f} GiB, KV {self.kv_cache / GiB:.2f} GiB, "
            f"activations {self.activations / GiB:.2f} GiB, Toto+projector {self.ts_modules / GiB:.2f} GiB; "
            f"{self.used / GiB:.2f} of {self.budget / GiB:.2f} GiB"
        )


@dataclass(frozen=True)
class PlacementPlan:
    """A checked plan: the device map to load with, what each device holds, and the batch token budget."""

    device_map: dict[str, int]  # every parameter and buffer name -> visible GPU index (no prefix ambiguity)
    devices: tuple[DevicePlan, ...]
    ts_device: int  # where Toto, the variate embedding and the projector go
    tokens_per_question: int  # largest question's input + max_new_tokens
    batch_token_budget: int  # tokens one batch may hold (len(batch) x padded length)
    batch_size: int

    def describe(self) -> str:
        head = (
            f"{len(self.devices)} GPU(s); largest question {self.tokens_per_question:,} tokens; KV/activation headroom for "
            f"{self.batch_token_budget:,} tokens per batch (= {self.batch_token_budget // self.tokens_per_question} of the "
            f"largest question, batch_size {self.batch_size})"
        )
        return "\n".join([head, *(f"  {device.describe()}" for device in self.devices)])


def build_empty_vlm(vlm_config: Any, dtype: torch.dtype) -> torch.nn.Module:
    """The Qwen3-VL model on the meta device: its modules and sizes without weights or memory."""
    from accelerate import init_empty_weights
    from transformers import Qwen3VLForConditionalGeneration

    with init_empty_weights():
        return Qwen3VLForConditionalGeneration._from_config(vlm_config, dtype=dtype)


def ts_module_bytes(config: HybridConfig, vlm_hidden: int, dtype: torch.dtype, max_variates: int = ARFBENCH_MAX_VARIATES) -> int:
    """Toto, the variate embedding and the projector, plus the chunked encoder's peak workspace (model/toto_encoder).

    Workspace: the time-wise layers hold one chunk of variates x patches x an MLP-wide activation; the space-wise
    layer holds patches_per_spacewise_chunk x heads x V x V attention scores (float32) for all V variates.
    """
    from accelerate import init_empty_weights
    from toto.model.toto import Toto

    width = _dtype_bytes(dtype)
    with init_empty_weights():
        toto = Toto(**config.toto.to_toto_kwargs())
    toto_params = sum(p.numel() for p in toto.parameters())
    small = (
        2 * config.ts_embed_dim + config.ts_embed_dim * config.variate_mlp_hidden_dim + config.variate_mlp_hidden_dim
        + config.variate_mlp_hidden_dim * config.variate_out_dim + config.variate_out_dim
        + config.variate_out_dim * config.projector_hidden_dim + config.projector_hidden_dim
        + config.projector_hidden_dim * vlm_hidden + 3 * vlm_hidden
    )
    patches = config.max_context_steps // config.toto.patch_size
    timewise = config.max_variates_per_chunk * patches * (config.toto.mlp_hidden_dim * 3 + config.toto.embed_dim * 8) * width
    spacewise = config.patches_per_spacewise_chunk * config.toto.num_heads * max_variates * max_variates * 4 * 2
    return (toto_params + small) * width + max(timewise, spacewise)


def _expand(device_map: dict[str, Any], model: torch.nn.Module) -> dict[str, Any]:
    """Every parameter and buffer name -> device, by the longest key that is the name or a dotted prefix of it."""
    keys = sorted(device_map, key=len, reverse=True)
    names = [name for name, _ in model.named_parameters()] + [name for name, _ in model.named_buffers()]
    expanded: dict[str, Any] = {}
    for name in names:
        for key in keys:
            if key == "" or name == key or name.startswith(key + "."):
                expanded[name] = device_map[key]
                break
    return expanded


_UNITS: tuple[tuple[str, str], ...] = (
    ("model.visual", "vision tower"),
    ("model.language_model.embed_tokens", "embed_tokens"),
    ("model.language_model.norm", "final norm"),
    ("lm_head", "lm_head"),
)


def _held(expanded: dict[str, Any], device: int) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """Decoder layer indexes and other units (vision tower, embeddings, norm, lm_head) with weights on ``device``."""
    layers = {int(m.group(1)) for name, value in expanded.items() if value == device and (m := _LAYER_KEY.match(name))}
    modules = tuple(
        label for unit, label in _UNITS
        if any(value == device and (name == unit or name.startswith(unit + ".")) for name, value in expanded.items())
    )
    return tuple(sorted(layers)), modules


@contextmanager
def _quiet_accelerate() -> Iterator[None]:
    """accelerate warns "Device N is not available" for every planned GPU this process cannot see; planning for
    GPUs elsewhere (or on the meta device in tests) is the point, so those warnings are noise here."""
    log = logging.getLogger("accelerate.utils.modeling")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


class _Planner:
    def __init__(self, model: torch.nn.Module, budgets: Sequence[int], memory: MemoryModel, ts_bytes: int, dtype: torch.dtype) -> None:
        from accelerate.utils import compute_module_sizes

        self.model, self.budgets, self.memory, self.ts_bytes, self.dtype = model, list(budgets), memory, ts_bytes, dtype
        self.no_split = list(getattr(model, "_no_split_modules", None) or [])
        self.sizes = compute_module_sizes(model, dtype=dtype)

    def reserve(self, device: int, tokens: int, layers: float) -> int:
        first = self.ts_bytes if device == 0 else 0
        return int(self.memory.activation_bytes(tokens) + self.memory.kv_bytes(tokens, 1) * layers + first)

    def plan(self, tokens: int) -> tuple[dict[str, Any], list[DevicePlan]] | None:
        """A device map for a batch of ``tokens`` tokens, or None when it does not fit."""
        with _quiet_accelerate():
            return self._plan(tokens)

    def _plan(self, tokens: int) -> tuple[dict[str, Any], list[DevicePlan]] | None:
        from accelerate.utils import get_balanced_memory, infer_auto_device_map

        n = len(self.budgets)
        layers = [self.memory.n_layers / n] * n
        expanded: dict[str, Any] = {}
        for _ in range(8):
            room = {i: self.budgets[i] - self.reserve(i, tokens, layers[i]) for i in range(n)}
            if any(value <= 0 for value in room.values()):
                return None
            caps = room
            if n > 1:
                balanced = get_balanced_memory(self.model, max_memory=dict(room), no_split_module_classes=self.no_split, dtype=self.dtype)
                caps = {i: min(int(balanced[i]), room[i]) for i in range(n)}
            device_map = infer_auto_device_map(self.model, max_memory=caps, no_split_module_classes=self.no_split, dtype=self.dtype)
            if any(not isinstance(value, int) for value in device_map.values()):
                return None  # spilled to "cpu" / "disk"
            expanded = _expand(device_map, self.model)
            placed = [float(len(_held(expanded, i)[0])) for i in range(n)]
            if placed == layers:
                break
            layers = placed
        devices = []
        for i in range(n):
            held, modules = _held(expanded, i)
            weights = sum(int(self.sizes.get(name, 0)) for name, value in expanded.items() if value == i)
            devices.append(DevicePlan(
                device=i, budget=self.budgets[i], weights=weights,
                kv_cache=self.memory.kv_bytes(tokens, len(held)), activations=self.memory.activation_bytes(tokens),
                ts_modules=self.ts_bytes if i == 0 else 0, layers=held, modules=modules,
            ))
        if any(device.used > device.budget for device in devices):
            return None
        return expanded, devices


def plan_placement(
    vlm_config: Any,
    budgets: Sequence[int],
    *,
    dtype: torch.dtype = torch.bfloat16,
    ts_bytes: int = 0,
    question_tokens: int | None = None,
    max_new_tokens: int = 256,
    batch_size: int = 8,
    model: torch.nn.Module | None = None,
) -> PlacementPlan:
    """Plan the VLM over GPUs with ``budgets`` bytes each (see the module docstring); PlacementError if impossible.

    ``ts_bytes``: Toto + projector + encoder workspace (:func:`ts_module_bytes`), placed on the first GPU.
    ``question_tokens``: the largest question's input (default :func:`estimate_question_tokens`).
    ``model``: an already built meta-device VLM (default: built from ``vlm_config``).
    """
    if not budgets:
        raise PlacementError("no GPU visible to place the model on")
    model = model if model is not None else build_empty_vlm(vlm_config, dtype)
    memory = MemoryModel.from_config(vlm_config, dtype)
    per_question = (question_tokens or estimate_question_tokens()) + max_new_tokens
    planner = _Planner(model, budgets, memory, ts_bytes, dtype)
    high = per_question * max(1, batch_size)
    best, budget = planner.plan(high), high  # the whole batch fits: one plan (each may search several device maps)
    if best is None:
        best, budget = planner.plan(per_question), per_question
        if best is None:
            raise PlacementError(_does_not_fit(planner, per_question, dtype))
        low = per_question  # the largest batch token budget that fits, to a few percent
        while high - low > max(256, per_question // 16):
            middle = (low + high) // 2
            found = planner.plan(middle)
            if found is None:
                high = middle
            else:
                best, low = found, middle
        budget = low
    device_map, devices = best
    return PlacementPlan(
        device_map={name: int(device) for name, device in device_map.items()},
        devices=tuple(devices), ts_device=0, tokens_per_question=per_question, batch_token_budget=budget, batch_size=batch_size,
    )


def _does_not_fit(planner: _Planner, tokens: int, dtype: torch.dtype) -> str:
    memory, budgets = planner.memory, planner.budgets
    weights = planner.sizes[""]
    layer = max((size for key, size in planner.sizes.items() if _LAYER_KEY.match(key) and key.count(".") == 3), default=0)
    kv = memory.kv_bytes(tokens, memory.n_layers)
    activations = memory.activation_bytes(tokens)
    need = weights + planner.ts_bytes + kv + activations * len(budgets)
    sizes = " + ".join(f"{b / GiB:.1f}" for b in budgets)
    return (
        f"the model does not fit on {len(budgets)} GPU(s) ({sizes} GiB budget): weights {weights / GiB:.1f} GiB in "
        f"{str(dtype).replace('torch.', '')} ({memory.n_layers} decoder layers of {layer / GiB:.2f} GiB, never split), "
        f"Toto + projector + encoder workspace {planner.ts_bytes / GiB:.2f} GiB, KV cache for one largest question of "
        f"{tokens:,} tokens {kv / GiB:.1f} GiB, prefill activations {activations / GiB:.1f} GiB on each GPU: at least "
        f"{need / GiB:.1f} GiB against {sum(budgets) / GiB:.1f} GiB. Use more or larger GPUs (--num-gpus-per-actor), "
        "or lower max_question_tokens / max_channel_names"
    )
