"""Configuration of the hybrid Toto + Qwen3-VL model (Toto-1.0-QA), read from and written to ``config.json``.

Two frozen, validated dataclasses, in the style of transformers' ``configuration_x.py``:

- :class:`TotoBackboneConfig`: the Toto time-series backbone (the keyword arguments of ``toto.model.toto.Toto``).
  Defaults are Datadog/Toto-Open-Base-1.0: patch 64, dim 768, 12 layers (11 time-wise, then one space-wise:
  ``spacewise_every_n_layers=12, spacewise_first=False``), 12 heads, SwiGLU MLP 3072.
- :class:`HybridConfig`: the whole artifact. Its JSON form is a superset of the published ``config.json``
  (written by DataDog/ARFBench ``TotoAnomalyQAModel._save_pretrained``)::

      {"model_type": "vlm_with_timeseries", "use_timeseries": true,
       "toto_model_name": "Datadog/Toto-Open-Base-1.0", "freeze_toto": true,
       "variate_mlp_hidden_dim": 3072, "projector_hidden_dim": 2048, "variate_dropout": 0.1}

  so the published file loads as is (every other field takes its default), and the keys added here (``toto``,
  ``vlm_hidden_size``, chunking and long-context settings, ...) are ignored by the reference loader.

Artifact layout (see model/modeling_hybrid.py)::

    config.json          this file
    vlm/                 Qwen3-VL weights (LoRA merged) + tokenizer / processor files
    ts_modules.pt        {"variate_embedding": state_dict, "ts_projector": state_dict}
    toto/                Toto backbone: model.safetensors (keys "model.*") + config.json (Toto kwargs)

The published artifact ships no ``toto/``: the reference downloads Toto from the hub at load time. Offline, put
Toto-Open-Base-1.0's ``model.safetensors`` + ``config.json`` in ``toto/`` (or point ``toto_path`` elsewhere).

Unknown ``model_type`` or bad sizes raise ``ValueError`` naming the field. Unknown keys are kept in ``extra``
and written back, so a round trip never loses information.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal, Mapping, get_args

from model.prompts import DEFAULT_MAX_NEW_TOKENS

__all__ = [
    "DTYPES",
    "LONG_CONTEXT_POLICIES",
    "MODEL_TYPE",
    "NAN_POLICIES",
    "SCALER_CLASSES",
    "HybridConfig",
    "HybridSettings",
    "TotoBackboneConfig",
    "VLMSettings",
]

MODEL_TYPE = "vlm_with_timeseries"

# How series longer than ``max_context_steps`` are encoded (model/toto_encoder.py); never silent truncation:
# "windows": consecutive windows of max_context_steps, each encoded alone, per-variate means combined weighted
#            by their valid-step counts (every step is used);
# "recent":  only the most recent max_context_steps (the older steps are dropped, and the result says how many);
# "full":    one pass over the whole series (Toto's RoPE has no hard limit; memory grows with the length).
LONG_CONTEXT_POLICIES: tuple[str, ...] = ("windows", "recent", "full")

# What the backbone sees at NaN steps (NaN steps are always excluded from the per-variate mean):
# "ffill": forward fill, then backward fill, then 0, and the scaler treats the filled steps as observed: exactly
#          what the reference fed the model in training and evaluation (eval_toto_vlm.load_and_preprocess_timeseries);
# "mask":  0, and the steps are marked as padding so the scaler ignores them.
NAN_POLICIES: tuple[str, ...] = ("ffill", "mask")

# "auto": bfloat16 on CUDA, float32 on CPU.
DTYPES: tuple[str, ...] = ("auto", "float32", "bfloat16", "float16")

SCALER_CLASSES: tuple[str, ...] = (
    "<class 'model.scaler.StdMeanScaler'>",
    "<class 'model.scaler.CausalStdMeanScaler'>",
    "<class 'model.scaler.CausalPatchStdMeanScaler'>",
)


def _check_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _check_float(name: str, value: Any, minimum: float, maximum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not minimum <= float(value) <= maximum:
        raise ValueError(f"{name} must be in [{minimum}, {maximum}], got {value}")
    return float(value)


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def _freeze(value: Any) -> Any:
    """JSON-like value -> hashable (dicts become sorted tuples of pairs, lists become tuples)."""
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _pairs_to_dict(pairs: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
    return {key: (_pairs_to_dict(value) if _is_pairs(value) else value) for key, value in pairs}


def _is_pairs(value: Any) -> bool:
    return (
        isinstance(value, tuple) and len(value) > 0
        and all(isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) for item in value)
    )


@dataclass(frozen=True)
class TotoBackboneConfig:
    """The Toto backbone's hyper-parameters: exactly the keyword arguments of ``toto.model.toto.Toto``."""

    patch_size: int = 64
    stride: int = 64
    embed_dim: int = 768
    num_layers: int = 12
    num_heads: int = 12
    mlp_hidden_dim: int = 3072
    dropout: float = 0.1
    spacewise_every_n_layers: int = 12
    spacewise_first: bool = False
    scaler_cls: str = "<class 'model.scaler.CausalPatchStdMeanScaler'>"
    output_distribution_classes: tuple[str, ...] = ("<class 'model.distribution.MixtureOfStudentTsOutput'>",)
    output_distribution_kwargs: tuple[tuple[str, Any], ...] = (("k_components", 24),)
    use_memory_efficient_attention: bool = False
    stabilize_with_global: bool = True
    scale_factor_exponent: float = 10.0

    def __post_init__(self) -> None:
        p = "toto."
        _check_int(p + "patch_size", self.patch_size)
        _check_int(p + "stride", self.stride)
        if self.stride != self.patch_size:
            raise ValueError(f"{p}stride must equal patch_size ({self.patch_size}) for the chunked encoder, got {self.stride}")
        _check_int(p + "embed_dim", self.embed_dim)
        _check_int(p + "num_layers", self.num_layers)
        _check_int(p + "num_heads", self.num_heads)
        if self.embed_dim % self.num_heads:
            raise ValueError(f"{p}embed_dim ({self.embed_dim}) must be divisible by num_heads ({self.num_heads})")
        if (self.embed_dim // self.num_heads) % 2:
            raise ValueError(f"{p}num_heads: the head dim embed_dim/num_heads must be even for rotary embeddings")
        _check_int(p + "mlp_hidden_dim", self.mlp_hidden_dim)
        _check_float(p + "dropout", self.dropout, 0.0, 1.0)
        if self.spacewise_every_n_layers != -1:
            _check_int(p + "spacewise_every_n_layers", self.spacewise_every_n_layers)
            if self.num_layers % self.spacewise_every_n_layers:
                raise ValueError(
                    f"{p}spacewise_every_n_layers ({self.spacewise_every_n_layers}) must divide num_layers ({self.num_layers})"
                )
        _check_bool(p + "spacewise_first", self.spacewise_first)
        _check_choice(p + "scaler_cls", self.scaler_cls, SCALER_CLASSES)
        classes = tuple(self.output_distribution_classes)
        if not classes or not all(isinstance(c, str) for c in classes):
            raise ValueError(f"{p}output_distribution_classes must be a non-empty list of class names, got {classes!r}")
        object.__setattr__(self, "output_distribution_classes", classes)
        kwargs = self.output_distribution_kwargs
        object.__setattr__(self, "output_distribution_kwargs", _freeze(dict(kwargs) if not isinstance(kwargs, Mapping) else kwargs))
        _check_bool(p + "use_memory_efficient_attention", self.use_memory_efficient_attention)
        _check_bool(p + "stabilize_with_global", self.stabilize_with_global)
        _check_float(p + "scale_factor_exponent", self.scale_factor_exponent, 0.0, 300.0)

    # ------------------------------------------------------------------------------------------ conversion

    def to_toto_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``toto.model.toto.Toto(**kwargs)`` (also the content of ``toto/config.json``)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["output_distribution_classes"] = list(self.output_distribution_classes)
        out["output_distribution_kwargs"] = _pairs_to_dict(self.output_distribution_kwargs)
        return out

    to_dict = to_toto_kwargs

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TotoBackboneConfig":
        """From Toto's own config.json or the ``toto`` block of the hybrid config; unknown keys are ignored
        (Toto's config carries a few that the constructor does not use, e.g. ``pre_xformers_checkpoint``)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"toto must be an object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        kwargs = {key: value for key, value in data.items() if key in known}
        if "output_distribution_classes" in kwargs:
            kwargs["output_distribution_classes"] = tuple(kwargs["output_distribution_classes"])
        if "output_distribution_kwargs" in kwargs and kwargs["output_distribution_kwargs"] is None:
            kwargs["output_distribution_kwargs"] = {}
        return cls(**kwargs)

    @property
    def n_spacewise_layers(self) -> int:
        return 0 if self.spacewise_every_n_layers == -1 else self.num_layers // self.spacewise_every_n_layers


@dataclass(frozen=True)
class HybridConfig:
    """The hybrid model: Toto backbone -> masked mean per variate -> VariateEmbedding -> TimeSeriesProjector ->
    one VLM input token per variate, placed before the prompt's text tokens."""

    model_type: str = MODEL_TYPE
    use_timeseries: bool = True
    # Where the parts come from (names as published; the paths are relative to the artifact directory).
    toto_model_name: str = "Datadog/Toto-Open-Base-1.0"
    vlm_model_name: str = "Qwen/Qwen3-VL-32B-Instruct"
    freeze_toto: bool = True
    vlm_path: str = "vlm"
    toto_path: str = "toto"
    ts_modules_file: str = "ts_modules.pt"
    toto: TotoBackboneConfig = field(default_factory=TotoBackboneConfig)
    # Sizes. ts_embed_dim is Toto's embed_dim; variate MLP ts_embed_dim -> variate_mlp_hidden_dim -> variate_out_dim;
    # projector variate_out_dim -> projector_hidden_dim -> GELU -> vlm_hidden_size -> LayerNorm.
    ts_embed_dim: int = 768
    variate_mlp_hidden_dim: int = 3072
    variate_out_dim: int = 768
    projector_hidden_dim: int = 2048
    vlm_hidden_size: int | None = None  # None: taken from the VLM's text config when the model is loaded
    variate_dropout: float = 0.1
    projector_dropout: float = 0.1
    # Chunked encoder (model/toto_encoder.py): variates per chunk in the time-wise layers, patches per chunk in
    # the space-wise layer(s). Both change memory and speed only, never the result.
    max_variates_per_chunk: int = 128
    patches_per_spacewise_chunk: int = 4
    # Long series: Toto-Open-Base-1.0 was trained on contexts up to 4,096 steps (the reference's max_ts_length).
    max_context_steps: int = 4096
    long_context_policy: str = "windows"
    nan_policy: str = "ffill"
    # Text placed between the variate tokens of the two groups of a pair question (embedded with the VLM's
    # own token embeddings, so it works with any tokenizer).
    pair_separator: str = "\n"
    dtype: str = "auto"
    extra: tuple[tuple[str, Any], ...] = ()  # unknown config.json keys, written back unchanged

    def __post_init__(self) -> None:
        if self.model_type != MODEL_TYPE:
            raise ValueError(f"model_type must be {MODEL_TYPE!r}, got {self.model_type!r}")
        _check_bool("use_timeseries", self.use_timeseries)
        _check_bool("freeze_toto", self.freeze_toto)
        for name in ("toto_model_name", "vlm_model_name", "vlm_path", "toto_path", "ts_modules_file"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{name} must be a non-empty string, got {value!r}")
        if isinstance(self.toto, Mapping):
            object.__setattr__(self, "toto", TotoBackboneConfig.from_dict(self.toto))
        if not isinstance(self.toto, TotoBackboneConfig):
            raise ValueError(f"toto must be a TotoBackboneConfig or an object, got {type(self.toto).__name__}")
        _check_int("ts_embed_dim", self.ts_embed_dim)
        if self.ts_embed_dim != self.toto.embed_dim:
            raise ValueError(f"ts_embed_dim ({self.ts_embed_dim}) must equal toto.embed_dim ({self.toto.embed_dim})")
        _check_int("variate_mlp_hidden_dim", self.variate_mlp_hidden_dim)
        _check_int("variate_out_dim", self.variate_out_dim)
        _check_int("projector_hidden_dim", self.projector_hidden_dim)
        if self.vlm_hidden_size is not None:
            _check_int("vlm_hidden_size", self.vlm_hidden_size)
        _check_float("variate_dropout", self.variate_dropout, 0.0, 1.0)
        _check_float("projector_dropout", self.projector_dropout, 0.0, 1.0)
        _check_int("max_variates_per_chunk", self.max_variates_per_chunk)
        _check_int("patches_per_spacewise_chunk", self.patches_per_spacewise_chunk)
        _check_int("max_context_steps", self.max_context_steps)
        if self.max_context_steps % self.toto.patch_size:
            raise ValueError(
                f"max_context_steps ({self.max_context_steps}) must be a multiple of toto.patch_size ({self.toto.patch_size})"
            )
        _check_choice("long_context_policy", self.long_context_policy, LONG_CONTEXT_POLICIES)
        _check_choice("nan_policy", self.nan_policy, NAN_POLICIES)
        if not isinstance(self.pair_separator, str):
            raise ValueError(f"pair_separator must be a string, got {self.pair_separator!r}")
        _check_choice("dtype", self.dtype, DTYPES)
        extra = self.extra.items() if isinstance(self.extra, Mapping) else self.extra
        object.__setattr__(self, "extra", tuple((str(k), _freeze(v)) for k, v in extra))

    # ------------------------------------------------------------------------------------------ dict / JSON

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            out[f.name] = value.to_dict() if isinstance(value, TotoBackboneConfig) else value
        for key, value in self.extra:
            out.setdefault(key, _pairs_to_dict(value) if _is_pairs(value) else (list(value) if isinstance(value, tuple) else value))
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "HybridConfig":
        if not isinstance(data, Mapping):
            raise ValueError(f"config must be a JSON object, got {type(data).__name__}")
        if "model_type" not in data:
            raise ValueError(f"model_type: missing (expected {MODEL_TYPE!r})")
        known = {f.name for f in fields(cls)} - {"extra"}
        kwargs = {key: value for key, value in data.items() if key in known}
        extra = {key: value for key, value in data.items() if key not in known}
        if "toto" in kwargs:
            kwargs["toto"] = TotoBackboneConfig.from_dict(kwargs["toto"])
        return cls(**kwargs, extra=tuple(extra.items()))

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    def to_json(self, path: str | os.PathLike[str]) -> str:
        """Write config.json (``path`` may be the file or the artifact directory); returns the file path."""
        target = os.fspath(path)
        if os.path.isdir(target):
            target = os.path.join(target, "config.json")
        tmp = f"{target}.tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(self.to_json_string())
        os.replace(tmp, target)
        return target

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> "HybridConfig":
        """Read config.json (``path`` may be the file or the artifact directory)."""
        source = os.fspath(path)
        if os.path.isdir(source):
            source = os.path.join(source, "config.json")
        try:
            with open(source, encoding="utf-8") as handle:
                data = json.load(handle)
        except json.JSONDecodeError as error:
            raise ValueError(f"{source}: not valid JSON ({error})") from error
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> "HybridConfig":
        from dataclasses import replace as _replace

        return _replace(self, **changes)


# ------------------------------------------------------------------------------------------------------------------
# The hybrid answerer's settings (--answerer-opt KEY=VALUE / --answerer-config FILE.yaml)
# ------------------------------------------------------------------------------------------------------------------

LongContextPolicy = Literal["windows", "recent", "full"]
NanPolicy = Literal["ffill", "mask"]
Dtype = Literal["auto", "float32", "bfloat16", "float16"]
assert get_args(LongContextPolicy) == LONG_CONTEXT_POLICIES and get_args(NanPolicy) == NAN_POLICIES and get_args(Dtype) == DTYPES


@dataclass(frozen=True)
class LocalModelSettings:
    """Settings every answerer running a local model shares (the hybrid and the vlm): where it runs, its precision,
    generation, and the GPU memory plan. Validated here, once for both."""

    model: str  # the model directory
    device: str | None = None  # "cuda", "cuda:1", "cpu"; None: CUDA when visible, else CPU
    # "auto": on CUDA, spread the model over EVERY GPU visible to the actor (Ray sets them) by a plan checked before
    # loading (model/placement.py); "single": everything on `device`.
    device_map: Literal["auto", "single"] = "auto"
    dtype: Dtype = "auto"
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    shuffle_options: bool = False
    system_prompt: str | None = None
    threads: int = 0  # CPU threads for torch (0: torch's default); the flow passes the actor's CPU count
    # GPU memory plan: budget per visible GPU (default: its total memory x gpu_memory_fraction), and the largest
    # question's input tokens the plan keeps KV headroom for (default: see model/placement.py).
    gpu_memory_gib: float | None = None
    gpu_memory_fraction: float = 0.92
    max_question_tokens: int | None = None

    NOT_DEFINING: ClassVar[tuple[str, ...]] = ("threads", "gpu_memory_gib", "gpu_memory_fraction")
    MODEL_REQUIRED: ClassVar[str] = "model: the model directory is required"

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise ValueError(self.MODEL_REQUIRED)
        if self.device is not None and not (self.device in ("cpu", "cuda") or self.device.startswith("cuda:")):
            raise ValueError(f"device must be cpu, cuda or cuda:N, got {self.device!r}")
        _check_int("max_new_tokens", self.max_new_tokens)
        _check_int("threads", self.threads, minimum=0)
        if self.max_question_tokens is not None:
            _check_int("max_question_tokens", self.max_question_tokens)
        if self.gpu_memory_gib is not None and not self.gpu_memory_gib > 0:
            raise ValueError(f"gpu_memory_gib must be > 0, got {self.gpu_memory_gib}")
        _check_float("gpu_memory_fraction", self.gpu_memory_fraction, 0.05, 1.0)


@dataclass(frozen=True)
class HybridSettings(LocalModelSettings):
    """What a user sets for the hybrid answerer; model/pipeline.py documents each key. Parsed from text by
    model/settings.parse_settings, validated here, recorded in the run manifest with every default."""

    batch_size: int = 8  # most questions generated together; big questions go in smaller batches (token budget)
    series_metadata: bool = True
    max_channel_names: int = 1000
    image_dir: str | None = None
    toto: str | None = None  # Toto backbone directory (default: <model>/toto)
    # HybridConfig overrides (None: the artifact's config.json value)
    long_context_policy: LongContextPolicy | None = None
    max_context_steps: int | None = None
    max_variates_per_chunk: int | None = None
    patches_per_spacewise_chunk: int | None = None
    nan_policy: NanPolicy | None = None
    # "full": every variate and step; "reference": the published evaluation's reduced inputs (model/pipeline.py)
    input_policy: Literal["full", "reference"] = "full"

    PATHS: ClassVar[tuple[str, ...]] = ("model", "toto", "image_dir")  # made absolute by the driver
    ARTIFACTS: ClassVar[tuple[str, ...]] = ("model", "toto")  # their content is hashed into the run manifest
    MODEL_REQUIRED: ClassVar[str] = "model: the Toto-1.0-QA artifact directory is required (`arfscore make-tiny-model DIR` writes a tiny one)"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_int("batch_size", self.batch_size)
        _check_int("max_channel_names", self.max_channel_names, minimum=0)
        for name in ("max_context_steps", "max_variates_per_chunk", "patches_per_spacewise_chunk"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name))

    def config_overrides(self) -> dict[str, Any]:
        """The HybridConfig fields this run overrides."""
        names = ("long_context_policy", "max_context_steps", "max_variates_per_chunk", "patches_per_spacewise_chunk", "nan_policy")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


@dataclass(frozen=True)
class VLMSettings(LocalModelSettings):
    """--answerer-opt KEY=VALUE for `--answerer vlm`: a Qwen3-VL checkpoint directory (config, weights, tokenizer,
    preprocessor_config.json) as ``model``, and the plot's pixel bounds."""

    min_pixels: int = 4 * 32 * 32  # qwen-vl-utils' defaults for Qwen3-VL (image factor 32)
    max_pixels: int = 16384 * 32 * 32

    PATHS: ClassVar[tuple[str, ...]] = ("model",)
    ARTIFACTS: ClassVar[tuple[str, ...]] = ("model",)
    MODEL_REQUIRED: ClassVar[str] = "model: a Qwen3-VL checkpoint directory is required"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.min_pixels < 1 or self.max_pixels < self.min_pixels:
            raise ValueError("min_pixels must be >= 1 and max_pixels >= min_pixels")
