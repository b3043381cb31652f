"""The hybrid Toto + Qwen3-VL model (Toto-1.0-QA), readable top to bottom.

    values [V, T] per query group
      -> TotoEncoder (model/toto_encoder.py): Toto backbone, masked mean over each variate's valid steps -> [V, 768]
      -> VariateEmbedding: RMSNorm -> Linear 768->3072 -> ReLU -> Dropout -> Linear 3072->768         -> [V, 768]
      -> TimeSeriesProjector: Linear 768->2048 -> GELU -> Dropout -> Linear 2048->H -> LayerNorm       -> [V, H]
      -> ONE VLM input token per variate.
    inputs_embeds = [group 1 variate tokens, (pair separator text tokens, group 2 variate tokens), prompt tokens]
      -> Qwen3VLForConditionalGeneration.generate(inputs_embeds=..., attention_mask=...)

Parameter names follow the published ``ts_modules.pt`` (DataDog/ARFBench
``toto-1.0-qa-experimental/model/toto_vlm_components.py``: ``TotoVariateEmbedding`` and ``TimeSeriesProjector``)::

    variate_embedding: norm.scale [768], mlp.0.weight [3072, 768], mlp.0.bias [3072],
                       mlp.3.weight [768, 3072], mlp.3.bias [768]
    ts_projector:      projection.0.weight [2048, 768], projection.0.bias [2048],
                       projection.3.weight [H, 2048], projection.3.bias [H],
                       projection.4.weight [H], projection.4.bias [H]          (H = 5120 for Qwen3-VL-32B)

Differences from the reference, on purpose: the per-variate mean excludes NaN steps and padding (the reference
averaged over every step of a zero-padded 4,096-step window); the series is never cut to its first 20/100/1000
variates or 4,096 steps (long series follow the configured long-context policy); pair questions encode BOTH groups
(the reference used only the first); ts_modules.pt loads strictly (the reference used strict=False, which would
silently keep random weights on a name mismatch).

Artifact layout (``from_pretrained`` / ``save_pretrained``)::

    config.json      HybridConfig (a superset of the published config.json)
    vlm/             Qwen3-VL checkpoint (LoRA merged) + tokenizer/processor files (looked up in vlm/, then the root)
    ts_modules.pt    {"variate_embedding": state_dict, "ts_projector": state_dict}
    toto/            model.safetensors (keys "model.*", as Toto.load_from_checkpoint reads them) + config.json

``toto/`` is this project's addition: the published artifact expects Toto-Open-Base-1.0 from the hub at load
time; offline, copy its model.safetensors + config.json into ``toto/`` (or pass ``toto_path``). Toto is loaded
with ``use_memory_efficient_attention=False`` (PyTorch SDPA; xFormers is not needed, on CPU it is required).

Images (optional; the published model was trained with plots of the series as well): ``build_inputs(...,
images=[PIL images])`` puts ``<|vision_start|><|image_pad|>...<|vision_end|>`` before the prompt text (as Qwen's chat
template does for image parts), expands each image pad to its number of merged patches and passes pixel_values /
image_grid_thw to generate. Images are resized by ``Qwen2VLImageProcessorPil`` loaded from ``vlm/`` (transformers'
PIL backend): neither torchvision nor qwen_vl_utils (which imports torchvision, absent on CPU machines) is needed or
imported. As in the reference's inference (inputs_embeds, no input_ids), image tokens get 1-D text positions.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import nn

from model.configuration import HybridConfig, TotoBackboneConfig
from model.toto_encoder import EncodedSeries, TotoEncoder

__all__ = [
    "TS_MODULE_KEYS",
    "Generated",
    "HybridInputs",
    "HybridModel",
    "RMSNorm",
    "TimeSeriesProjector",
    "VariateEmbedding",
    "chat_text",
    "cut_after_eos",
    "eos_token_ids",
    "image_placeholders",
    "load_vlm",
    "pad_token_id",
    "read_artifact_config",
    "resolve_device",
    "resolve_dtype",
]

# Published parameter names (see the module docstring).
TS_MODULE_KEYS: dict[str, tuple[str, ...]] = {
    "variate_embedding": ("norm.scale", "mlp.0.weight", "mlp.0.bias", "mlp.3.weight", "mlp.3.bias"),
    "ts_projector": (
        "projection.0.weight",
        "projection.0.bias",
        "projection.3.weight",
        "projection.3.bias",
        "projection.4.weight",
        "projection.4.bias",
    ),
}

# Architecture fields of the Toto backbone that must agree between config.json and toto/config.json.
_TOTO_ARCH_FIELDS = (
    "patch_size",
    "stride",
    "embed_dim",
    "num_layers",
    "num_heads",
    "mlp_hidden_dim",
    "spacewise_every_n_layers",
    "spacewise_first",
    "scaler_cls",
    "stabilize_with_global",
    "scale_factor_exponent",
)


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """"auto"/None: bfloat16 on CUDA, float32 elsewhere."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise ValueError(f"dtype must be one of auto, {', '.join(table)}; got {dtype!r}")
    return table[dtype]


# ------------------------------------------------------------------------------------------------------------------
# The two small time-series modules
# ------------------------------------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """Toto's RMSNorm (``toto.model.util.RMSNorm``: weight named ``scale``, eps 1e-8), without the xFormers kernel."""

    def __init__(self, dim: int, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x: Float[torch.Tensor, "... dim"]) -> Float[torch.Tensor, "... dim"]:
        return x / torch.sqrt(torch.mean(x * x, dim=-1, keepdim=True) + self.eps) * self.scale


class VariateEmbedding(nn.Module):
    """Per-variate pooled Toto embedding -> RMSNorm -> MLP (768 -> 3072 -> ReLU -> 768).

    The reference module also did the pooling (a plain mean over time); here the encoder pools (masked mean), so
    this module takes the pooled [..., variate, 768] tensor.
    """

    def __init__(self, embed_dim: int = 768, hidden_dim: int = 3072, out_dim: int = 768, dropout: float = 0.1) -> None:
        super().__init__()
        self.norm = RMSNorm(embed_dim)
        self.mlp = nn.Sequential(nn.Linear(embed_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden_dim, out_dim))

    def forward(self, pooled: Float[torch.Tensor, "... variate embed_dim"]) -> Float[torch.Tensor, "... variate out_dim"]:
        return self.mlp(self.norm(pooled))


class TimeSeriesProjector(nn.Module):
    """Variate embedding -> VLM hidden size: Linear 768->2048 -> GELU -> Dropout -> Linear 2048->H -> LayerNorm."""

    def __init__(self, ts_dim: int = 768, vlm_dim: int = 5120, hidden_dim: int = 2048, dropout: float = 0.1) -> None:
        super().__init__()
        self.projection = nn.Sequential(
            nn.Linear(ts_dim, hidden_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden_dim, vlm_dim), nn.LayerNorm(vlm_dim)
        )

    def forward(self, x: Float[torch.Tensor, "... variate ts_dim"]) -> Float[torch.Tensor, "... variate vlm_dim"]:
        return self.projection(x)


# ------------------------------------------------------------------------------------------------------------------
# The hybrid model
# ------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Generated:
    """One question's generated token ids (cut after the first end-of-sequence token, which is kept), and whether
    generation stopped there (False: cut off by max_new_tokens)."""

    token_ids: list[int]
    finished: bool


def cut_after_eos(token_ids: Sequence[int], eos: Sequence[int]) -> Generated:
    """Generated ids up to and including the first end-of-sequence token (padding after it dropped)."""
    cut = next((position + 1 for position, token in enumerate(token_ids) if token in eos), None)
    return Generated(list(token_ids[:cut] if cut is not None else token_ids), finished=cut is not None)


def image_placeholders(tokens_per_image: Sequence[int]) -> str:
    """Qwen's image parts as its chat template renders them: ``<|vision_start|>``, the image's pad tokens,
    ``<|vision_end|>``, for each image."""
    return "".join("<|vision_start|>" + "<|image_pad|>" * n + "<|vision_end|>" for n in tokens_per_image)


def chat_text(tokenizer: Any, prompt: str, system: str | None) -> str:
    """One user turn (after the system message, if any) and the generation prompt, by the tokenizer's chat template
    (plain text for a tokenizer without one)."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return (f"{system}\n\n" if system else "") + prompt + "\n"


def pad_token_id(tokenizer: Any, generation_config: Any) -> int:
    """The padding id: the tokenizer's, else the generation config's, else end-of-sequence, else 0."""
    for candidate in (getattr(tokenizer, "pad_token_id", None), getattr(generation_config, "pad_token_id", None),
                      getattr(tokenizer, "eos_token_id", None)):
        if isinstance(candidate, int):
            return candidate
    return 0


def eos_token_ids(tokenizer: Any, generation_config: Any) -> list[int]:
    """End-of-sequence ids: the generation config's, else the tokenizer's."""
    ids = getattr(generation_config, "eos_token_id", None)
    if ids is None:
        ids = getattr(tokenizer, "eos_token_id", None)
    if ids is None:
        return []
    return [int(i) for i in (ids if isinstance(ids, (list, tuple)) else [ids])]


@dataclass
class HybridInputs:
    """One question's VLM input: [variate tokens..., (separator, variate tokens...), prompt tokens]."""

    inputs_embeds: Float[torch.Tensor, "length hidden"]
    n_ts_tokens: int  # variate tokens (all groups)
    n_separator_tokens: int
    n_text_tokens: int  # includes the image placeholder tokens, if any
    encodings: list[EncodedSeries] = field(default_factory=list)
    pixel_values: torch.Tensor | None = None  # [patches, channels * temporal * patch * patch] (Qwen2-VL layout)
    image_grid_thw: torch.Tensor | None = None  # [images, 3]
    n_image_tokens: int = 0

    @property
    def length(self) -> int:
        return int(self.inputs_embeds.shape[0])


class HybridModel(nn.Module):
    """Toto encoder + VariateEmbedding + TimeSeriesProjector + Qwen3-VL, with its tokenizer."""

    def __init__(self, config: HybridConfig, toto: nn.Module, vlm: nn.Module, tokenizer: Any) -> None:
        super().__init__()
        hidden = int(_text_config(vlm.config).hidden_size)
        if config.vlm_hidden_size is not None and config.vlm_hidden_size != hidden:
            raise ValueError(f"vlm_hidden_size: config says {config.vlm_hidden_size}, the VLM's hidden size is {hidden}")
        toto_embed = int(getattr(toto, "model", toto).embed_dim)
        if toto_embed != config.ts_embed_dim:
            raise ValueError(f"ts_embed_dim: config says {config.ts_embed_dim}, the Toto backbone's embed_dim is {toto_embed}")
        self.config = config.replace(vlm_hidden_size=hidden)
        self.toto = toto
        self.encoder = TotoEncoder.from_config(toto, self.config)
        self.variate_embedding = VariateEmbedding(
            config.ts_embed_dim, config.variate_mlp_hidden_dim, config.variate_out_dim, config.variate_dropout
        )
        self.ts_projector = TimeSeriesProjector(config.variate_out_dim, hidden, config.projector_hidden_dim, config.projector_dropout)
        self.vlm = vlm
        self.tokenizer = tokenizer
        self.image_processor: Any = None  # loaded on first use from image_processor_dir (see images_to_pixels)
        self.image_processor_dir: str | None = None
        self.eval()

    # ----------------------------------------------------------------------------------------------- devices

    @property
    def ts_device(self) -> torch.device:
        return next(self.variate_embedding.parameters()).device

    @property
    def text_device(self) -> torch.device:
        return self.vlm.get_input_embeddings().weight.device

    @property
    def vlm_dtype(self) -> torch.dtype:
        return self.vlm.get_input_embeddings().weight.dtype

    # ----------------------------------------------------------------------------------------------- inputs

    def encode_series(self, values: np.ndarray | torch.Tensor) -> EncodedSeries:
        """Per-variate Toto embeddings of one group's values [V, T] (NaN = missing)."""
        return self.encoder.encode(values)

    @torch.inference_mode()
    def variate_tokens(self, encoded: EncodedSeries) -> Float[torch.Tensor, "variate hidden"]:
        """One VLM input embedding per variate."""
        modules_dtype = next(self.variate_embedding.parameters()).dtype
        pooled = encoded.embeddings.to(device=self.ts_device, dtype=modules_dtype)
        tokens = self.ts_projector(self.variate_embedding(pooled))
        tokens = torch.nan_to_num(tokens, nan=0.0, posinf=0.0, neginf=0.0)
        return tokens.to(device=self.text_device, dtype=self.vlm_dtype)

    @torch.inference_mode()
    def embed_text(self, token_ids: Sequence[int]) -> Float[torch.Tensor, "length hidden"]:
        ids = torch.as_tensor(list(token_ids), dtype=torch.long, device=self.text_device)
        return self.vlm.get_input_embeddings()(ids)

    def tokenize_prompt(self, prompt: str, system: str | None = None, n_images: int = 0) -> list[int]:
        """The chat-templated prompt (user turn + generation prompt) as token ids; ``n_images`` image placeholders
        (``<|vision_start|><|image_pad|><|vision_end|>`` each, one pad per image until build_inputs expands them)
        come first in the user turn, as Qwen's chat template renders image parts."""
        text = chat_text(self.tokenizer, image_placeholders([1] * n_images) + prompt, system)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def images_to_pixels(self, images: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """PIL images -> (pixel_values, image_grid_thw, tokens per image) with the VLM's image processor."""
        if self.image_processor is None:
            from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

            if self.image_processor_dir is None:
                raise ValueError("this model has no image processor (no preprocessor_config.json in vlm/)")
            self.image_processor = Qwen2VLImageProcessorPil.from_pretrained(self.image_processor_dir)
        out = self.image_processor(images=[image.convert("RGB") for image in images], return_tensors="pt")
        grid = out["image_grid_thw"]
        merge = int(getattr(self.image_processor, "merge_size", 2))
        counts = [int(row.prod()) // (merge * merge) for row in grid]
        return out["pixel_values"], grid, counts

    def build_inputs(
        self, encodings: Sequence[EncodedSeries], prompt_ids: Sequence[int], images: Sequence[Any] | None = None
    ) -> HybridInputs:
        """inputs_embeds for one question: every group's variate tokens (separator between groups), then the prompt.
        With ``images``, ``prompt_ids`` must hold one image placeholder per image (``tokenize_prompt(n_images=...)``)."""
        pixel_values = grid = None
        n_image_tokens = 0
        prompt_ids = list(prompt_ids)
        if images:
            pad_id = int(self.vlm.config.image_token_id)
            if prompt_ids.count(pad_id) != len(images):
                raise ValueError(f"{len(images)} images but {prompt_ids.count(pad_id)} image placeholders in the prompt")
            pixel_values, grid, counts = self.images_to_pixels(images)
            expanded: list[int] = []
            remaining = iter(counts)
            for token in prompt_ids:
                expanded.extend([token] * next(remaining) if token == pad_id else [token])
            prompt_ids, n_image_tokens = expanded, sum(counts)
            pixel_values = pixel_values.to(device=self.text_device, dtype=self.vlm_dtype)
            grid = grid.to(self.text_device)
        parts: list[torch.Tensor] = []
        n_ts = n_sep = 0
        separator = list(self.tokenizer(self.config.pair_separator, add_special_tokens=False)["input_ids"]) if self.config.pair_separator else []
        for index, encoded in enumerate(encodings):
            if index > 0 and separator:
                parts.append(self.embed_text(separator))
                n_sep += len(separator)
            tokens = self.variate_tokens(encoded)
            parts.append(tokens)
            n_ts += int(tokens.shape[0])
        text = self.embed_text(prompt_ids)
        parts.append(text)
        return HybridInputs(
            inputs_embeds=torch.cat(parts, dim=0),
            n_ts_tokens=n_ts,
            n_separator_tokens=n_sep,
            n_text_tokens=int(text.shape[0]),
            encodings=list(encodings),
            pixel_values=pixel_values,
            image_grid_thw=grid,
            n_image_tokens=n_image_tokens,
        )

    def _pad_id(self) -> int:
        return pad_token_id(self.tokenizer, self.vlm.generation_config)

    def _eos_ids(self) -> list[int]:
        return eos_token_ids(self.tokenizer, self.vlm.generation_config)

    def collate(self, batch: Sequence[HybridInputs]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-pad several questions' inputs_embeds (pad embedding, attention 0) -> ([B, L, H], [B, L])."""
        if not batch:
            raise ValueError("empty batch")
        longest = max(item.length for item in batch)
        pad = self.embed_text([self._pad_id()])[0]
        embeds = pad.expand(len(batch), longest, pad.shape[-1]).clone()
        mask = torch.zeros(len(batch), longest, dtype=torch.long, device=self.text_device)
        for row, item in enumerate(batch):
            embeds[row, longest - item.length :] = item.inputs_embeds
            mask[row, longest - item.length :] = 1
        return embeds, mask

    @staticmethod
    def _vision_kwargs(batch: Sequence[HybridInputs]) -> dict[str, torch.Tensor]:
        """pixel_values / image_grid_thw of the batch's images, in row order (the order of their placeholders)."""
        with_images = [item for item in batch if item.pixel_values is not None]
        if not with_images:
            return {}
        return {
            "pixel_values": torch.cat([item.pixel_values for item in with_images], dim=0),
            "image_grid_thw": torch.cat([item.image_grid_thw for item in with_images], dim=0),
        }

    # ----------------------------------------------------------------------------------------------- generation

    @torch.inference_mode()
    def generate(self, batch: Sequence[HybridInputs], max_new_tokens: int = 64, **kwargs: Any) -> list[Generated]:
        """Greedy generation for several questions at once (left-padded); returns each one's new token ids, cut
        after the first end-of-sequence token (which is kept), and whether that token came before the limit."""
        embeds, mask = self.collate(batch)
        settings: dict[str, Any] = dict(
            max_new_tokens=int(max_new_tokens), do_sample=False, num_beams=1, temperature=None, top_p=None, top_k=None,
            pad_token_id=self._pad_id(),
        )
        eos = self._eos_ids()
        if eos:
            settings["eos_token_id"] = eos
        settings.update(kwargs)
        output = self.vlm.generate(inputs_embeds=embeds, attention_mask=mask, **self._vision_kwargs(batch), **settings)
        sequences = output.sequences if hasattr(output, "sequences") else output
        return [cut_after_eos(row, eos) for row in sequences.tolist()]

    @torch.inference_mode()
    def logits(self, batch: Sequence[HybridInputs]) -> torch.Tensor:
        """Next-token logits at the last position of each (left-padded) input: [B, vocab]."""
        embeds, mask = self.collate(batch)
        out = self.vlm(inputs_embeds=embeds, attention_mask=mask, logits_to_keep=1, **self._vision_kwargs(batch))
        return out.logits[:, -1, :]

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True).strip()

    # ----------------------------------------------------------------------------------------------- save / load

    def ts_modules_state(self) -> dict[str, dict[str, torch.Tensor]]:
        return {
            "variate_embedding": {k: v.detach().cpu() for k, v in self.variate_embedding.state_dict().items()},
            "ts_projector": {k: v.detach().cpu() for k, v in self.ts_projector.state_dict().items()},
        }

    def load_ts_modules(self, state: dict[str, Any], source: str = "ts_modules.pt") -> None:
        """Load the published ``{"variate_embedding": ..., "ts_projector": ...}`` strictly, with clear errors."""
        if not isinstance(state, dict):
            raise ValueError(f"{source}: expected a dict of state dicts, got {type(state).__name__}")
        for name, module in (("variate_embedding", self.variate_embedding), ("ts_projector", self.ts_projector)):
            if name not in state:
                raise ValueError(f"{source}: missing the {name!r} state dict (keys: {sorted(state)})")
            expected = module.state_dict()
            given = state[name]
            missing = sorted(set(expected) - set(given))
            unexpected = sorted(set(given) - set(expected))
            if missing or unexpected:
                raise ValueError(f"{source}: {name}: missing keys {missing}, unexpected keys {unexpected}")
            for key, tensor in given.items():
                if tuple(tensor.shape) != tuple(expected[key].shape):
                    raise ValueError(
                        f"{source}: {name}.{key}: shape {tuple(tensor.shape)} does not match the config's "
                        f"{tuple(expected[key].shape)} (check ts_embed_dim / variate_mlp_hidden_dim / projector_hidden_dim / vlm_hidden_size)"
                    )
            module.load_state_dict(given, strict=True)

    def save_pretrained(self, path: str | os.PathLike[str]) -> str:
        """Write the artifact layout (config.json, vlm/, ts_modules.pt, toto/) to ``path``; returns the path."""
        from safetensors.torch import save_file

        root = os.fspath(path)
        os.makedirs(root, exist_ok=True)
        vlm_dir = os.path.join(root, self.config.vlm_path)
        self.vlm.save_pretrained(vlm_dir)
        self.tokenizer.save_pretrained(vlm_dir)
        if self.image_processor is not None:
            self.image_processor.save_pretrained(vlm_dir)
        elif self.image_processor_dir is not None and os.path.abspath(self.image_processor_dir) != os.path.abspath(vlm_dir):
            import shutil

            shutil.copy(os.path.join(self.image_processor_dir, "preprocessor_config.json"), vlm_dir)
        torch.save(self.ts_modules_state(), os.path.join(root, self.config.ts_modules_file))
        toto_dir = os.path.join(root, self.config.toto_path)
        os.makedirs(toto_dir, exist_ok=True)
        state = {key: value.detach().cpu().contiguous() for key, value in self.toto.state_dict().items()}
        save_file(state, os.path.join(toto_dir, "model.safetensors"))
        with open(os.path.join(toto_dir, "config.json"), "w", encoding="utf-8") as handle:
            json.dump(self.config.toto.to_toto_kwargs(), handle, indent=2)
        self.config.to_json(os.path.join(root, "config.json"))
        return root

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str],
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        *,
        device_map: dict[str, int | str] | None = None,
        toto_path: str | None = None,
        **config_overrides: Any,
    ) -> "HybridModel":
        """Load an artifact directory (local only). ``device``: where Toto and the small modules run, and the VLM
        unless ``device_map`` is given: an explicit map of the VLM's parameter / module names to devices, e.g. a
        checked plan from model/placement.py spreading it over several GPUs. ``dtype``: "auto" (bf16 on CUDA, fp32
        on CPU) or a dtype. ``config_overrides``: HybridConfig fields (chunk sizes, policies, ...)."""
        root = os.fspath(path)
        config, toto_dir = read_artifact_config(root, toto_path, **config_overrides)
        target = resolve_device(device)
        torch_dtype = resolve_dtype(dtype if dtype is not None else config.dtype, target)
        toto = _load_toto(toto_dir, config, target, torch_dtype)
        vlm_dir = os.path.join(root, config.vlm_path)
        vlm = load_vlm(vlm_dir, torch_dtype, target, device_map)
        model = cls(config, toto, vlm, _load_tokenizer(vlm_dir, root))
        for candidate in (vlm_dir, root):
            if os.path.isfile(os.path.join(candidate, "preprocessor_config.json")):
                model.image_processor_dir = candidate
                break
        ts_file = os.path.join(root, config.ts_modules_file)
        if not os.path.isfile(ts_file):
            raise FileNotFoundError(f"{ts_file}: the time-series modules (variate_embedding, ts_projector) are missing")
        model.load_ts_modules(torch.load(ts_file, map_location="cpu", weights_only=True), source=ts_file)
        model.variate_embedding.to(device=target, dtype=torch_dtype)
        model.ts_projector.to(device=target, dtype=torch_dtype)
        return model.eval()


def read_artifact_config(root: str, toto_path: str | None = None, **config_overrides: Any) -> tuple[HybridConfig, str]:
    """The artifact's HybridConfig (config.json, reconciled with toto/config.json, overrides applied) and the Toto
    directory. Reads configs only: a GPU plan is made from these before any weight loads."""
    config_file = os.path.join(root, "config.json")
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"{config_file}: not found (expected a Toto-1.0-QA artifact directory)")
    with open(config_file, encoding="utf-8") as handle:
        raw = json.load(handle)
    config = HybridConfig.from_dict(raw)
    toto_dir = toto_path or os.path.join(root, config.toto_path)
    toto_weights = os.path.join(toto_dir, "model.safetensors")
    if not os.path.isfile(toto_weights):
        raise FileNotFoundError(
            f"{toto_weights}: Toto backbone weights not found. The published artifact loads "
            f"{config.toto_model_name} from the hub; offline, put its model.safetensors and config.json in "
            f"{os.path.join(root, config.toto_path)} or pass toto_path"
        )
    toto_config_file = os.path.join(toto_dir, "config.json")
    if os.path.isfile(toto_config_file):
        with open(toto_config_file, encoding="utf-8") as handle:
            toto_config = TotoBackboneConfig.from_dict({**json.load(handle), "use_memory_efficient_attention": False})
        if "toto" not in raw:  # the published config.json has no backbone block: toto/config.json describes it
            changes: dict[str, Any] = {"toto": toto_config}
            if "ts_embed_dim" not in raw:
                changes["ts_embed_dim"] = toto_config.embed_dim
            config = config.replace(**changes)
        else:
            for name in _TOTO_ARCH_FIELDS:
                if getattr(config.toto, name) != getattr(toto_config, name):
                    raise ValueError(
                        f"toto.{name}: config.json says {getattr(config.toto, name)!r}, "
                        f"{toto_config_file} says {getattr(toto_config, name)!r}"
                    )
    if config_overrides:
        config = config.replace(**config_overrides)
    return config, toto_dir


def _load_toto(toto_dir: str, config: HybridConfig, target: torch.device, dtype: torch.dtype) -> nn.Module:
    from toto.model.toto import Toto

    if os.path.isfile(os.path.join(toto_dir, "config.json")):
        toto = Toto.load_from_checkpoint(toto_dir, map_location="cpu", use_memory_efficient_attention=False)
    else:
        toto = Toto.load_from_checkpoint(toto_dir, map_location="cpu", **{**config.toto.to_toto_kwargs(), "use_memory_efficient_attention": False})
    return toto.to(device=target, dtype=dtype).eval()


def load_vlm(vlm_dir: str, dtype: torch.dtype, target: torch.device, device_map: dict[str, int | str] | None) -> nn.Module:
    """Qwen3-VL from ``vlm_dir``: on ``target``, or spread by an explicit ``device_map`` (loaded straight onto the
    GPUs through accelerate, never as a full copy in CPU memory)."""
    from transformers import Qwen3VLForConditionalGeneration

    if not os.path.isdir(vlm_dir):
        raise FileNotFoundError(f"{vlm_dir}: the VLM directory is missing")
    kwargs: dict[str, Any] = {"dtype": dtype}
    if device_map is not None:
        if not isinstance(device_map, dict) or not device_map:
            raise ValueError(f"device_map must be a non-empty dict of names to devices, got {device_map!r}")
        kwargs["device_map"] = device_map
    elif target.type == "cuda":
        kwargs["device_map"] = {"": str(target)}
    vlm = Qwen3VLForConditionalGeneration.from_pretrained(vlm_dir, **kwargs)
    if "device_map" not in kwargs:
        vlm = vlm.to(target)
    return vlm.eval()


def _load_tokenizer(vlm_dir: str, root: str) -> Any:
    from transformers import AutoTokenizer

    for candidate in (vlm_dir, root):
        try:
            return AutoTokenizer.from_pretrained(candidate)
        except (OSError, ValueError):
            continue
    raise FileNotFoundError(f"no tokenizer files in {vlm_dir} or {root}")


def _text_config(config: Any) -> Any:
    return getattr(config, "text_config", None) or config

