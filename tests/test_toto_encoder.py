"""The chunked Toto encoder equals the stock Toto forward (fp32, 1e-5), masks NaN/padding, and never truncates
long series silently."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from model.configuration import TotoBackboneConfig
from model.toto_encoder import TotoEncoder, plan_windows, prepare_window

warnings.filterwarnings("ignore", category=ImportWarning)

TOL = 1e-5


def _toto(spacewise_first: bool = True, num_layers: int = 2, every: int = 2, dim: int = 32, heads: int = 2, seed: int = 0):
    from toto.model.toto import Toto

    config = TotoBackboneConfig(
        patch_size=16, stride=16, embed_dim=dim, num_layers=num_layers, num_heads=heads, mlp_hidden_dim=2 * dim,
        dropout=0.0, spacewise_every_n_layers=every, spacewise_first=spacewise_first,
        output_distribution_kwargs={"k_components": 4},
    )
    torch.manual_seed(seed)
    model = Toto(**config.to_toto_kwargs()).eval()
    with torch.no_grad():  # larger unembedding so the per-variate means are O(1), not O(0.01)
        model.model.unembed.weight.mul_(10.0)
    return model


@pytest.fixture(scope="module")
def toto_first():
    return _toto(spacewise_first=True)


@pytest.fixture(scope="module")
def toto_last():
    # Toto-Open-Base-1.0's layout in miniature: time-wise layers first, one space-wise layer last.
    return _toto(spacewise_first=False, num_layers=3, every=3, dim=48, heads=4, seed=1)


def _values(n_var: int = 13, n_steps: int = 150, seed: int = 0, nan_fraction: float = 0.1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = (rng.normal(size=(n_var, n_steps)) * rng.uniform(0.5, 20, size=(n_var, 1)) + rng.uniform(-50, 50, size=(n_var, 1)))
    values = values.astype(np.float32)
    values[rng.random(values.shape) < nan_fraction] = np.nan
    values[2, :] = np.nan  # a variate with no valid step
    values[3, :40] = np.nan  # leading gap (backward filled)
    values[4, -30:] = np.nan  # trailing gap (forward filled)
    return values


def _ffill_bfill(values: np.ndarray) -> np.ndarray:
    """pandas' ffill().bfill().fillna(0) per variate, written out (the reference's preprocessing)."""
    out = values.copy()
    for row in out:
        finite = np.flatnonzero(np.isfinite(row))
        if finite.size == 0:
            row[:] = 0.0
            continue
        last = np.maximum.accumulate(np.where(np.isfinite(row), np.arange(row.size), -1))
        row[:] = np.where(last >= 0, row[np.maximum(last, 0)], row[finite[0]])
    return out


def _manual_means(toto, values: np.ndarray, filled: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Stock per-step outputs of ONE forward over the whole (padded) series, averaged over finite steps only."""
    n_var, n_steps = values.shape
    filled = _ffill_bfill(values) if filled is None else filled
    pad = (-n_steps) % 16
    series = torch.from_numpy(np.pad(filled, ((0, 0), (0, pad))))[None]
    padding = torch.zeros(1, n_var, n_steps + pad, dtype=torch.bool)
    padding[..., :n_steps] = True
    with torch.no_grad():
        per_step, _, _ = toto.model.backbone(series, padding, torch.zeros_like(series))
    per_step = per_step[0, :, :n_steps].double().numpy()  # [V, T, D]
    finite = np.isfinite(values)
    sums = np.einsum("vt,vtd->vd", finite.astype(np.float64), per_step)
    counts = finite.sum(axis=1)
    return sums, counts


# ------------------------------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("chunk_variates,chunk_patches", [(1, 1), (3, 2), (5, 4), (4, 3), (64, 64)])
@pytest.mark.parametrize("layout", ["spacewise_first", "spacewise_last"])
def test_chunked_equals_stock(layout, chunk_variates, chunk_patches, toto_first, toto_last):
    toto = toto_first if layout == "spacewise_first" else toto_last
    values = _values()  # 13 variates: not divisible by 3, 5 or 4; 150 steps: not a multiple of the patch
    encoder = TotoEncoder(toto, max_variates_per_chunk=chunk_variates, patches_per_spacewise_chunk=chunk_patches, max_context_steps=256)
    chunked = encoder.encode(values)
    stock = encoder.encode_stock(values)
    assert chunked.embeddings.shape == (13, toto.model.embed_dim)
    assert stock.embeddings.abs().max() > 0.1  # a meaningful comparison, not zeros against zeros
    assert torch.equal(chunked.valid_counts, stock.valid_counts)
    assert (chunked.embeddings - stock.embeddings).abs().max().item() <= TOL


@pytest.mark.parametrize("chunk_variates,chunk_patches", [(2, 1), (5, 3)])
def test_id_mask_reproduced_exactly(chunk_variates, chunk_patches, toto_first):
    values = _values(seed=3)
    ids = np.array([0] * 6 + [1] * 4 + [2] * 3, dtype=np.float32)  # three independent groups of variates
    encoder = TotoEncoder(toto_first, max_variates_per_chunk=chunk_variates, patches_per_spacewise_chunk=chunk_patches, max_context_steps=256)
    chunked = encoder.encode(values, ids)
    stock = encoder.encode_stock(values, ids)
    assert (chunked.embeddings - stock.embeddings).abs().max().item() <= TOL
    # The mask matters: with one shared id the space-wise layer mixes all variates and the result differs.
    assert (chunked.embeddings - encoder.encode(values).embeddings).abs().max().item() > 1e-3


def test_scaler_is_per_variate(toto_first):
    """Encoding a variate alone or among others changes only through the space-wise layer: with ids that isolate
    every variate, each embedding equals the variate's own encoding (scaler, time-wise layers per variate)."""
    values = _values(n_var=6, seed=4)
    encoder = TotoEncoder(toto_first, max_variates_per_chunk=4, patches_per_spacewise_chunk=2, max_context_steps=256)
    together = encoder.encode(values, np.arange(6, dtype=np.float32)).embeddings
    for row in range(6):
        alone = encoder.encode(values[row : row + 1]).embeddings[0]
        assert (together[row] - alone).abs().max().item() <= TOL


# ------------------------------------------------------------------------------------------------- masking


def test_masked_mean_ignores_nan_and_padding(toto_first):
    values = _values(seed=5)
    encoder = TotoEncoder(toto_first, max_variates_per_chunk=4, patches_per_spacewise_chunk=3, max_context_steps=256)
    encoded = encoder.encode(values)
    sums, counts = _manual_means(toto_first, values)
    assert encoded.valid_counts.tolist() == counts.tolist()
    means = sums / np.maximum(counts, 1)[:, None]
    means[counts == 0] = 0.0
    assert np.abs(encoded.embeddings.numpy() - means).max() <= TOL
    # The all-NaN variate: zeros, flagged.
    assert bool(encoded.empty[2]) and int(encoded.empty.sum()) == 1
    assert torch.count_nonzero(encoded.embeddings[2]) == 0
    assert encoded.notes()["ts_empty_variates"] == "1"
    # Padding and NaN steps really are excluded: a plain mean over all (filled + padded) steps differs.
    n_steps = values.shape[1]
    series = torch.from_numpy(np.pad(_ffill_bfill(values), ((0, 0), (0, 10))))
    with torch.no_grad():
        pad_mask = torch.ones_like(series, dtype=torch.bool)[None]
        per_step, _, _ = toto_first.model.backbone(series[None], pad_mask, torch.zeros_like(series)[None])
    plain = per_step[0, :, : n_steps + 10].mean(dim=1)
    assert (plain[0] - encoded.embeddings[0]).abs().max() > 1e-3


def test_nan_policies_prepare_inputs():
    values = np.array([[np.nan, 1.0, np.nan, 3.0, np.nan]], dtype=np.float32)
    ffill = prepare_window(values, 4, nan_policy="ffill", carry_in=torch.tensor([1.0]))
    assert ffill.series[0, 0].tolist() == [1.0, 1.0, 1.0, 3.0, 3.0, 0.0, 0.0, 0.0]
    assert ffill.padding_mask[0, 0].tolist() == [True] * 5 + [False] * 3
    assert ffill.mean_mask[0].tolist() == [False, True, False, True, False, False, False, False]
    masked = prepare_window(values, 4, nan_policy="mask")
    assert masked.series[0, 0].tolist() == [0.0, 1.0, 0.0, 3.0, 0.0, 0.0, 0.0, 0.0]
    assert masked.padding_mask[0, 0].tolist() == [False, True, False, True, False, False, False, False]
    assert float(ffill.carry_out[0]) == 3.0


def test_mask_policy_chunked_equals_stock(toto_first):
    values = _values(seed=6, nan_fraction=0.3)
    encoder = TotoEncoder(toto_first, max_variates_per_chunk=3, patches_per_spacewise_chunk=2, max_context_steps=256, nan_policy="mask")
    masked = encoder.encode(values)
    assert (masked.embeddings - encoder.encode_stock(values).embeddings).abs().max().item() <= TOL
    ffill = TotoEncoder(toto_first, max_context_steps=256).encode(values)
    assert (masked.embeddings - ffill.embeddings).abs().max().item() > 1e-4


# ------------------------------------------------------------------------------------------------- long series


def test_plan_windows():
    assert plan_windows(100, 64, "windows") == [(0, 64), (64, 100)]
    assert plan_windows(64, 64, "windows") == [(0, 64)]
    assert plan_windows(100, 64, "recent") == [(36, 100)]
    assert plan_windows(100, 64, "full") == [(0, 100)]
    assert plan_windows(0, 64, "windows") == []
    with pytest.raises(ValueError, match="long_context_policy"):
        plan_windows(10, 64, "truncate")


def test_windows_policy_uses_every_step(toto_first):
    values = _values(n_var=7, n_steps=600, seed=7)
    encoder = TotoEncoder(toto_first, max_variates_per_chunk=3, patches_per_spacewise_chunk=2, max_context_steps=256)
    encoded = encoder.encode(values)
    assert (encoded.policy, encoded.n_windows, encoded.steps_encoded, encoded.steps_dropped) == ("windows", 3, 600, 0)
    assert encoded.notes()["ts_windows"] == "3"
    # Manual: fill the whole series, encode each 256-step window with the stock forward, combine by valid counts.
    filled = _ffill_bfill(values)
    total_sums = np.zeros((7, toto_first.model.embed_dim))
    total_counts = np.zeros(7)
    for start, end in [(0, 256), (256, 512), (512, 600)]:
        sums, counts = _manual_means(toto_first, values[:, start:end], filled[:, start:end])
        total_sums += sums
        total_counts += counts
    expected = total_sums / np.maximum(total_counts, 1)[:, None]
    expected[total_counts == 0] = 0
    assert encoded.valid_counts.tolist() == total_counts.astype(int).tolist()
    assert np.abs(encoded.embeddings.numpy() - expected).max() <= TOL
    assert (encoded.embeddings - encoder.encode_stock(values).embeddings).abs().max().item() <= TOL
    # Not truncated: the last window's values count.
    changed = values.copy()
    changed[:, 550:] += 100.0
    assert (encoder.encode(changed).embeddings - encoded.embeddings).abs().max() > 1e-3


def test_recent_policy_records_what_it_dropped(toto_first):
    values = _values(n_var=5, n_steps=600, seed=8, nan_fraction=0.0)
    values[2] = np.random.default_rng(0).normal(size=600)
    encoder = TotoEncoder(toto_first, max_variates_per_chunk=2, max_context_steps=256, long_context_policy="recent")
    encoded = encoder.encode(values)
    assert (encoded.n_windows, encoded.steps_encoded, encoded.steps_dropped) == (1, 256, 344)
    assert encoded.notes()["ts_steps_dropped"] == "344"
    sums, counts = _manual_means(toto_first, values[:, 344:])
    assert np.abs(encoded.embeddings.numpy() - sums / counts[:, None]).max() <= TOL
    changed = values.copy()
    changed[:, :300] += 100.0  # only dropped steps change
    assert (encoder.encode(changed).embeddings - encoded.embeddings).abs().max().item() == 0.0


def test_full_policy_is_one_pass(toto_first):
    values = _values(n_var=5, n_steps=600, seed=9)
    encoder = TotoEncoder(toto_first, max_variates_per_chunk=3, max_context_steps=256, long_context_policy="full")
    encoded = encoder.encode(values)
    assert (encoded.n_windows, encoded.steps_encoded) == (1, 600)
    sums, counts = _manual_means(toto_first, values)
    expected = sums / np.maximum(counts, 1)[:, None]
    expected[counts == 0] = 0
    assert np.abs(encoded.embeddings.numpy() - expected).max() <= TOL


def test_empty_inputs(toto_first):
    encoder = TotoEncoder(toto_first, max_context_steps=256)
    none = encoder.encode(np.zeros((0, 50), dtype=np.float32))
    assert none.embeddings.shape == (0, toto_first.model.embed_dim)
    no_steps = encoder.encode(np.zeros((3, 0), dtype=np.float32))
    assert no_steps.n_windows == 0 and int(no_steps.empty.sum()) == 3
    assert torch.count_nonzero(no_steps.embeddings) == 0


def test_encoder_rejects_bad_settings(toto_first):
    with pytest.raises(ValueError, match="max_context_steps"):
        TotoEncoder(toto_first, max_context_steps=100)
    with pytest.raises(ValueError, match="nan_policy"):
        TotoEncoder(toto_first, nan_policy="drop")
