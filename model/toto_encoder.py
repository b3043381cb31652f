"""Chunked, exact Toto encoder: one embedding per variate, in bounded memory.

What it computes (DESIGN.md section 5): the Toto backbone's per-step output (``TotoBackbone.backbone``: scaler ->
patch embedding -> transformer -> unembedding, [batch, variate, step, embed_dim]) averaged over each variate's
valid steps (NaN steps and padding excluded). A variate with no valid step gets zeros and is flagged.

Why chunked: the stock forward holds the whole [variates, patches, dim] stream, builds a boolean
[patches x heads, V, V] space-wise mask that SDPA expands to float, and materialises the unembedded
[V, steps, dim] output: at 2,283 variates x 2,048 steps that peaks at 16.1 GB (DESIGN.md). Here:

- scaler and patch embedding run over chunks of variates. Every Toto scaler reduces along time only
  (``compute_causal_statistics`` / ``StdMeanScaler`` use dim=-1), so each variate's scaling is independent of
  the others;
- runs of consecutive time-wise layers run over chunks of variates (time-wise attention is per variate; the MLPs
  and norms are per token);
- space-wise layers run over chunks of patches (space-wise attention mixes variates at one patch position only).
  Their mask is built per chunk with the backbone's own ``Transformer._get_mask`` from the reduced id_mask, so
  id_mask semantics (variates attend only to variates with the same id) are reproduced exactly; when every
  variate has the same id at a patch (the reference always passes zeros) the mask is all True and is omitted;
- the unembedding is never materialised: it is linear, so the masked sum over steps of ``unembed(x_p)[s]`` is
  ``sum_s W_s (sum_p m[p,s] x_p) + (sum_p m[p,s]) b_s``: one [V, patch*D] x [patch*D, D] product, which also
  removes 98% of the stock forward's FLOPs at patch 64.

The only resident full-size tensor is the residual stream [V, patches, dim] of one window (2,283 x 64 x 768 fp32
= 449 MB at 4,096 steps). The result equals the stock forward within float tolerance (tests/test_toto_encoder.py).

Inputs (per window; the same preparation feeds the stock forward in tests and benchmarks):
- values: float32 [V, T] with NaN where missing (SeriesGroup.values); right-padded with zeros to a multiple of
  the patch size (padding_mask False there). Toto is causal in time, so right padding never changes earlier steps.
- NaN steps: see ``configuration.NAN_POLICIES`` ("ffill" is what the reference fed the model). Non-finite values
  (inf) count as missing too.
- id_mask: zeros unless given (the reference always uses zeros).
- dtype: the scaler always runs on float32 inputs (accumulating in float64, as Toto's scalers do); its output is
  cast to the backbone's dtype (bf16 on GPU). The reference cast the raw values to bf16 first, which rounds large
  values (1e6 + 3 -> 1e6) before scaling; in float32 both orders are the same computation.

Series longer than ``max_context_steps`` follow ``long_context_policy`` (configuration.LONG_CONTEXT_POLICIES):
"windows" (default) encodes consecutive windows and combines the per-variate sums, so the result is the mean over
every valid step of the per-window outputs; "recent" uses only the last window and records how many steps it
dropped; "full" runs one pass. Which policy ran, how many windows and how many steps were used is returned in
:class:`EncodedSeries` (and its ``notes()``), never silently.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from jaxtyping import Bool, Float

from model.configuration import LONG_CONTEXT_POLICIES, NAN_POLICIES, HybridConfig

__all__ = ["EncodedSeries", "PreparedWindow", "TotoEncoder", "plan_windows", "prepare_window"]


def _spans(total: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, total, size):
        yield start, min(start + size, total)


def plan_windows(n_steps: int, max_context_steps: int, policy: str) -> list[tuple[int, int]]:
    """[start, end) step ranges to encode for a series of ``n_steps`` under ``policy``."""
    if policy not in LONG_CONTEXT_POLICIES:
        raise ValueError(f"long_context_policy must be one of {list(LONG_CONTEXT_POLICIES)}, got {policy!r}")
    if n_steps <= 0:
        return []
    if policy == "full" or n_steps <= max_context_steps:
        return [(0, n_steps)]
    if policy == "recent":
        return [(n_steps - max_context_steps, n_steps)]
    return list(_spans(n_steps, max_context_steps))


@dataclass(frozen=True)
class EncodedSeries:
    """Per-variate Toto embeddings of one query group, and how they were obtained."""

    embeddings: Float[torch.Tensor, "variate embed_dim"]  # float32; zeros where valid_counts == 0
    valid_counts: torch.Tensor  # int64 [variate]: valid steps that went into each mean
    policy: str
    n_windows: int
    n_steps: int  # steps in the input
    steps_encoded: int  # steps the backbone saw (n_steps - steps_dropped)
    window_steps: int  # max_context_steps

    @property
    def empty(self) -> torch.Tensor:
        """bool [variate]: variates with no valid step (their embedding is zeros)."""
        return self.valid_counts == 0

    @property
    def n_variates(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def steps_dropped(self) -> int:
        return self.n_steps - self.steps_encoded

    def notes(self, prefix: str = "") -> dict[str, str]:
        return {
            f"{prefix}ts_policy": self.policy,
            f"{prefix}ts_windows": str(self.n_windows),
            f"{prefix}ts_window_steps": str(self.window_steps),
            f"{prefix}ts_steps": str(self.n_steps),
            f"{prefix}ts_steps_encoded": str(self.steps_encoded),
            f"{prefix}ts_steps_dropped": str(self.steps_dropped),
            f"{prefix}ts_variates": str(self.n_variates),
            f"{prefix}ts_empty_variates": str(int(self.empty.sum())),
        }


@dataclass(frozen=True)
class PreparedWindow:
    """Backbone inputs for one window (batch of one), plus which steps enter the per-variate mean."""

    series: Float[torch.Tensor, "1 variate time"]
    padding_mask: Bool[torch.Tensor, "1 variate time"]  # True = observed (Toto's convention)
    id_mask: Float[torch.Tensor, "1 variate time"]
    mean_mask: Bool[torch.Tensor, "variate time"]  # True = a real, finite step of the input
    carry_out: torch.Tensor  # float32 [variate]: last finite value up to the window end (NaN if none yet)


def prepare_window(
    values: np.ndarray | torch.Tensor,
    patch_size: int,
    *,
    nan_policy: str = "ffill",
    carry_in: torch.Tensor | None = None,
    id_mask: np.ndarray | torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> PreparedWindow:
    """Turn one window of raw values [V, T] (NaN = missing) into padded backbone inputs.

    ``carry_in`` [V] is the value forward filling starts from (the last finite value before the window, or for the
    first window the series' first finite value, which is what backward filling would put there); NaN = 0.
    """
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy must be one of {list(NAN_POLICIES)}, got {nan_policy!r}")
    x = torch.as_tensor(np.ascontiguousarray(values) if isinstance(values, np.ndarray) else values)
    x = x.to(device=device, dtype=torch.float32)
    if x.ndim != 2:
        raise ValueError(f"values must be [variates, steps], got shape {tuple(x.shape)}")
    n_var, n_steps = x.shape
    valid = torch.isfinite(x)
    if carry_in is None:
        carry_in = torch.full((n_var,), float("nan"), device=x.device)
    carry_in = carry_in.to(device=x.device, dtype=torch.float32)
    steps = torch.arange(n_steps, device=x.device).expand(n_var, n_steps)
    last = torch.where(valid, steps, torch.full_like(steps, -1)).cummax(dim=1).values  # last finite step so far
    if nan_policy == "ffill":
        filled = torch.where(last >= 0, x.gather(1, last.clamp_min(0)), carry_in[:, None].expand(n_var, n_steps))
        filled = torch.nan_to_num(filled, nan=0.0, posinf=0.0, neginf=0.0)
        observed = torch.ones_like(valid)
    else:
        filled = torch.where(valid, x, torch.zeros_like(x))
        observed = valid
    if n_steps:
        has_last = last[:, -1] >= 0
        carry_out = torch.where(has_last, x.gather(1, last[:, -1:].clamp_min(0))[:, 0], carry_in)
    else:
        carry_out = carry_in
    pad = (-n_steps) % patch_size
    if id_mask is None:
        ids = torch.zeros(n_var, n_steps, device=x.device)
    else:
        ids = torch.as_tensor(id_mask).to(device=x.device, dtype=torch.float32)
        if ids.ndim == 1:
            ids = ids[:, None].expand(n_var, n_steps)
        if tuple(ids.shape) != (n_var, n_steps):
            raise ValueError(f"id_mask must be [variates] or [variates, steps], got shape {tuple(ids.shape)}")
    if pad:
        filled = torch.nn.functional.pad(filled, (0, pad), value=0.0)
        observed = torch.nn.functional.pad(observed, (0, pad), value=False)
        valid = torch.nn.functional.pad(valid, (0, pad), value=False)
        ids = torch.cat([ids, ids[:, -1:].expand(n_var, pad) if n_steps else torch.zeros(n_var, pad, device=x.device)], dim=1)
    return PreparedWindow(
        series=filled.to(dtype)[None],
        padding_mask=observed[None],
        id_mask=ids.to(dtype)[None],
        mean_mask=valid,
        carry_out=carry_out,
    )


def _first_finite(values: np.ndarray | torch.Tensor) -> torch.Tensor:
    """float32 [V]: each variate's first finite value (NaN when it has none): the backward-fill value."""
    array = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    out = np.full(array.shape[0], np.nan, dtype=np.float32)
    if array.shape[1] == 0:
        return torch.from_numpy(out)
    for start, end in _spans(array.shape[0], 256):  # bounded temporaries at 2,283 x 40,000
        block = np.isfinite(array[start:end])
        first = block.argmax(axis=1)
        found = block[np.arange(end - start), first]
        picked = array[start:end][np.arange(end - start), first].astype(np.float32)
        out[start:end] = np.where(found, picked, np.nan)
    return torch.from_numpy(out)


class TotoEncoder(torch.nn.Module):
    """Wraps a Toto backbone (``toto.model.toto.Toto`` or its ``.model``) and returns per-variate embeddings.

    The backbone is used as is (same modules, same weights): only the order of evaluation changes.
    """

    def __init__(
        self,
        toto: torch.nn.Module,
        *,
        max_variates_per_chunk: int = 128,
        patches_per_spacewise_chunk: int = 4,
        max_context_steps: int = 4096,
        long_context_policy: str = "windows",
        nan_policy: str = "ffill",
    ) -> None:
        super().__init__()
        backbone = getattr(toto, "model", toto)
        if not hasattr(backbone, "transformer") or not hasattr(backbone, "patch_embed"):
            raise TypeError(f"expected a Toto model or TotoBackbone, got {type(toto).__name__}")
        if getattr(backbone, "fusion", None) is not None:
            raise NotImplementedError("Toto variate-label fusion (exogenous variables) is not supported by the encoder")
        if backbone.patch_embed.stride != backbone.patch_embed.patch_size:
            raise ValueError("the chunked encoder needs non-overlapping patches (stride == patch_size)")
        if max_context_steps % backbone.patch_embed.patch_size:
            raise ValueError(f"max_context_steps ({max_context_steps}) must be a multiple of the patch size")
        if long_context_policy not in LONG_CONTEXT_POLICIES:
            raise ValueError(f"long_context_policy must be one of {list(LONG_CONTEXT_POLICIES)}, got {long_context_policy!r}")
        if nan_policy not in NAN_POLICIES:
            raise ValueError(f"nan_policy must be one of {list(NAN_POLICIES)}, got {nan_policy!r}")
        if max_variates_per_chunk < 1 or patches_per_spacewise_chunk < 1:
            raise ValueError("chunk sizes must be >= 1")
        self.backbone = backbone
        self.max_variates_per_chunk = int(max_variates_per_chunk)
        self.patches_per_spacewise_chunk = int(patches_per_spacewise_chunk)
        self.max_context_steps = int(max_context_steps)
        self.long_context_policy = long_context_policy
        self.nan_policy = nan_policy
        self._runs = self._layer_runs()

    @classmethod
    def from_config(cls, toto: torch.nn.Module, config: HybridConfig, **overrides: Any) -> "TotoEncoder":
        settings = dict(
            max_variates_per_chunk=config.max_variates_per_chunk,
            patches_per_spacewise_chunk=config.patches_per_spacewise_chunk,
            max_context_steps=config.max_context_steps,
            long_context_policy=config.long_context_policy,
            nan_policy=config.nan_policy,
        )
        settings.update(overrides)
        return cls(toto, **settings)

    # --------------------------------------------------------------------------------------------- structure

    def _layer_runs(self) -> list[tuple[str, list[int]]]:
        """Consecutive layers grouped by attention axis: [("time", [0..10]), ("space", [11])] for Toto-Base."""
        runs: list[tuple[str, list[int]]] = []
        for index, layer in enumerate(self.backbone.transformer.layers):
            axis = "space" if layer.attention_axis.name == "SPACE" else "time"
            if runs and runs[-1][0] == axis:
                runs[-1][1].append(index)
            else:
                runs.append((axis, [index]))
        return runs

    @property
    def patch_size(self) -> int:
        return int(self.backbone.patch_embed.patch_size)

    @property
    def embed_dim(self) -> int:
        return int(self.backbone.embed_dim)

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.backbone.parameters()).dtype

    # --------------------------------------------------------------------------------------------- public API

    def forward(self, values: np.ndarray | torch.Tensor, id_mask: np.ndarray | torch.Tensor | None = None) -> EncodedSeries:
        return self.encode(values, id_mask)

    @torch.inference_mode()
    def encode(self, values: np.ndarray | torch.Tensor, id_mask: np.ndarray | torch.Tensor | None = None) -> EncodedSeries:
        """Per-variate masked-mean embeddings of ``values`` [V, T] (NaN = missing), chunked."""
        return self._encode(values, id_mask, self._window_sums_chunked)

    @torch.inference_mode()
    def encode_stock(self, values: np.ndarray | torch.Tensor, id_mask: np.ndarray | torch.Tensor | None = None) -> EncodedSeries:
        """The same result through the stock ``TotoBackbone.backbone`` forward (reference; memory ~ V^2 and V*T*D)."""
        return self._encode(values, id_mask, self._window_sums_stock)

    # --------------------------------------------------------------------------------------------- internals

    def _encode(self, values, id_mask, window_sums) -> EncodedSeries:
        if values.ndim != 2:
            raise ValueError(f"values must be [variates, steps], got shape {tuple(values.shape)}")
        n_var, n_steps = int(values.shape[0]), int(values.shape[1])
        windows = plan_windows(n_steps, self.max_context_steps, self.long_context_policy)
        device = self.device
        sums = torch.zeros(n_var, self.embed_dim, dtype=torch.float64, device=device)
        counts = torch.zeros(n_var, dtype=torch.int64, device=device)
        if n_var and windows:
            carry = _first_finite(values).to(device)  # backward-fill value for leading NaNs
            if windows[0][0] > 0:  # "recent": forward fill from the last finite value before the window
                carry = self._carry_before(values, windows[0][0], carry)
            for start, end in windows:
                window_ids = None
                if id_mask is not None:
                    window_ids = id_mask if getattr(id_mask, "ndim", np.ndim(id_mask)) == 1 else id_mask[:, start:end]
                prepared = prepare_window(
                    values[:, start:end],
                    self.patch_size,
                    nan_policy=self.nan_policy,
                    carry_in=carry,
                    id_mask=window_ids,
                    device=device,
                )
                carry = prepared.carry_out
                window_sum, window_count = window_sums(prepared)
                sums += window_sum.to(torch.float64)
                counts += window_count
        embeddings = (sums / counts.clamp_min(1)[:, None].to(torch.float64)).to(torch.float32)
        embeddings[counts == 0] = 0.0
        encoded_steps = sum(end - start for start, end in windows)
        return EncodedSeries(
            embeddings=embeddings,
            valid_counts=counts,
            policy=self.long_context_policy,
            n_windows=len(windows),
            n_steps=n_steps,
            steps_encoded=encoded_steps,
            window_steps=self.max_context_steps,
        )

    def _carry_before(self, values, start: int, fallback: torch.Tensor) -> torch.Tensor:
        """Last finite value of each variate before ``start`` (``fallback`` where there is none)."""
        out = fallback.clone()
        for chunk_start, chunk_end in _spans(start, max(self.max_context_steps, 1)):
            prepared = prepare_window(
                values[:, chunk_start:chunk_end], 1, nan_policy="ffill", carry_in=out, device=out.device
            )
            out = prepared.carry_out
        return out

    def _window_sums_stock(self, window: PreparedWindow) -> tuple[torch.Tensor, torch.Tensor]:
        flattened, _, _ = self.backbone.backbone(window.series.to(self.dtype), window.padding_mask, window.id_mask)
        mask = window.mean_mask.to(torch.float32)
        sums = torch.einsum("vt,vtd->vd", mask, flattened[0].to(torch.float32))
        return sums, window.mean_mask.sum(dim=1)

    def _window_sums_chunked(self, window: PreparedWindow) -> tuple[torch.Tensor, torch.Tensor]:
        backbone = self.backbone
        series, padding_mask, id_mask = window.series, window.padding_mask, window.id_mask
        _, n_var, n_steps = series.shape
        patch, dim = self.patch_size, self.embed_dim
        n_patches = n_steps // patch
        cv, cp = self.max_variates_per_chunk, self.patches_per_spacewise_chunk

        # 1. Scaler + patch embedding, per variate chunk -> residual stream x [V, P, D]. The scaler sees float32
        #    values (it accumulates in float64), so a bf16 model never rounds raw values like 1e6 + 3 before scaling.
        model_dtype = self.dtype
        x = torch.empty(n_var, n_patches, dim, dtype=model_dtype, device=series.device)
        reduced_ids = torch.empty(n_var, n_patches, dtype=id_mask.dtype, device=series.device)
        for v0, v1 in _spans(n_var, cv):
            chunk = series[:, v0:v1]
            scaled, _, _ = backbone.scaler(
                chunk, weights=torch.ones_like(chunk), padding_mask=padding_mask[:, v0:v1], prefix_length=None
            )
            embedded, reduced = backbone.patch_embed(scaled.to(model_dtype), id_mask[:, v0:v1])
            x[v0:v1] = embedded[0]
            reduced_ids[v0:v1] = reduced[0]

        # 2. Transformer layers: time-wise runs over variate chunks, space-wise runs over patch chunks.
        layers = backbone.transformer.layers
        num_heads = int(layers[0].num_heads)
        same_id = bool((reduced_ids == reduced_ids[:1]).all()) if n_var else True
        for axis, indices in self._runs:
            if axis == "time":
                for v0, v1 in _spans(n_var, cv):
                    hidden = x[v0:v1].unsqueeze(0)
                    for index in indices:
                        hidden = layers[index](index, hidden, None, None)
                    x[v0:v1] = hidden[0]
            else:
                for p0, p1 in _spans(n_patches, cp):
                    hidden = x[:, p0:p1].unsqueeze(0)
                    mask = None
                    if not same_id:  # block mask from id_mask, exactly as the stock Transformer builds it
                        mask = backbone.transformer._get_mask(num_heads=num_heads, dtype=x.dtype, id_mask=reduced_ids[None, :, p0:p1])
                    for index in indices:
                        hidden = layers[index](index, hidden, mask, None)
                    x[:, p0:p1] = hidden[0]

        # 3. Masked sum of the unembedded steps, without materialising them (the unembedding is linear).
        weight = backbone.unembed.weight.to(torch.float32)  # [patch * D_out, D_in]; output (s, o) at row s*D + o
        bias = backbone.unembed.bias.to(torch.float32).view(patch, dim)  # [patch, D_out]
        weight_t = weight.view(patch, dim, dim).permute(0, 2, 1).reshape(patch * dim, dim)  # [(s, d_in), o]
        mask = window.mean_mask.view(n_var, n_patches, patch)
        sums = torch.empty(n_var, dim, dtype=torch.float32, device=series.device)
        for v0, v1 in _spans(n_var, cv):
            m = mask[v0:v1].to(torch.float32)  # [c, P, patch]
            pooled = torch.einsum("cps,cpd->csd", m, x[v0:v1].to(torch.float32))  # [c, patch, D_in]
            sums[v0:v1] = pooled.reshape(v1 - v0, patch * dim) @ weight_t + m.sum(dim=1) @ bias
        return sums, window.mean_mask.sum(dim=1)
