"""GPU placement, planned on the meta device: the real Qwen3-VL-32B configuration over 4 x 40 GiB, 4 x 80 GiB and
2 x 80 GiB (no weights anywhere), a clear error before loading when it does not fit, and the hybrid answerer's
token-budget batching and truncation record (tiny model, CPU)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from model.configuration import HybridConfig
from model.placement import GiB, PlacementError, build_empty_vlm, estimate_question_tokens, plan_placement, ts_module_bytes
from model.records import Question, SeriesGroup

CONFIG_32B = Path(__file__).parent / "data" / "qwen3_vl_32b_config.json"  # Qwen/Qwen3-VL-32B-Instruct config.json


@pytest.fixture(scope="module")
def vlm_32b():
    from transformers import Qwen3VLConfig

    config = Qwen3VLConfig.from_dict(json.loads(CONFIG_32B.read_text()))
    model = build_empty_vlm(config, torch.bfloat16)
    assert all(p.device.type == "meta" for p in model.parameters())  # sizes only: nothing allocated
    ts = ts_module_bytes(HybridConfig(), config.text_config.hidden_size, torch.bfloat16)
    return config, model, ts


def _layer_devices(device_map: dict[str, int]) -> dict[int, set[int]]:
    layers: dict[int, set[int]] = {}
    for name, device in device_map.items():
        match = re.match(r"model\.language_model\.layers\.(\d+)\.", name)
        if match:
            layers.setdefault(int(match.group(1)), set()).add(device)
    return layers


@pytest.mark.parametrize("gpus,gib", [(4, 40), (4, 80), (2, 80)])
def test_32b_plan_uses_every_gpu_within_budget_with_kv_headroom(vlm_32b, gpus, gib):
    config, model, ts = vlm_32b
    plan = plan_placement(config, [gib * GiB] * gpus, ts_bytes=ts, model=model, batch_size=8)
    print(f"\nFIGURE placement {gpus}x{gib} GiB\n{plan.describe()}")
    assert [device.device for device in plan.devices] == list(range(gpus))
    assert all(device.layers for device in plan.devices), "a GPU holds no decoder layer"
    assert all(device.used <= device.budget for device in plan.devices)
    # Every parameter and buffer has a GPU; decoder layers are never split; 64 layers in all.
    names = {name for name, _ in model.named_parameters()} | {name for name, _ in model.named_buffers()}
    assert set(plan.device_map) == names and set(plan.device_map.values()) == set(range(gpus))
    layers = _layer_devices(plan.device_map)
    assert sorted(layers) == list(range(64)) and all(len(devices) == 1 for devices in layers.values())
    assert sum(len(device.layers) for device in plan.devices) == 64
    # Weights add up to the model (62.1 GiB in bf16); KV headroom: 4 KiB per token per layer for the batch budget.
    assert sum(device.weights for device in plan.devices) == pytest.approx(62.13 * GiB, rel=0.01)
    assert plan.tokens_per_question == estimate_question_tokens() + 256
    assert plan.batch_token_budget >= plan.tokens_per_question
    for device in plan.devices:
        assert device.kv_cache == plan.batch_token_budget * len(device.layers) * 4096
    assert plan.devices[0].ts_modules == ts and all(device.ts_modules == 0 for device in plan.devices[1:])


def test_bigger_gpus_get_bigger_batches(vlm_32b):
    config, model, ts = vlm_32b
    small = plan_placement(config, [40 * GiB] * 4, ts_bytes=ts, model=model)
    large = plan_placement(config, [80 * GiB] * 4, ts_bytes=ts, model=model)
    assert large.batch_token_budget > small.batch_token_budget


def test_32b_on_two_24_gib_gpus_fails_before_loading_with_the_sizes(vlm_32b):
    config, model, ts = vlm_32b
    with pytest.raises(PlacementError) as raised:
        plan_placement(config, [24 * GiB] * 2, ts_bytes=ts, model=model)
    message = str(raised.value)
    print(f"\nFIGURE placement 2x24 GiB: {message}")
    assert "does not fit on 2 GPU(s) (24.0 + 24.0 GiB budget)" in message
    assert "weights 62.1 GiB in bfloat16" in message and "64 decoder layers of 0.91 GiB" in message
    assert "KV cache for one largest question" in message and "against 48.0 GiB" in message


# ----------------------------------------------------------------------------------------- the answerer


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from tasks.tiny_model import make_tiny_model

    return make_tiny_model(str(tmp_path_factory.mktemp("tiny-plan") / "tiny"), seed=0)


def test_factory_plans_the_visible_gpus_before_loading_any_weight(tiny_dir, monkeypatch):
    """On CUDA the factory plans first: a plan that does not fit fails with the sizes and loads nothing; one that
    fits loads with its explicit device map (every name -> a visible GPU index). CUDA is faked: 2 visible GPUs."""
    from model import pipeline
    from model.answerers import AnswererSpec, create_answerer
    from model.modeling_hybrid import HybridModel

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    loads = []
    monkeypatch.setattr(HybridModel, "from_pretrained", classmethod(lambda cls, *a, **k: loads.append(k) or pytest.skip("stop here")))
    with pytest.raises(PlacementError, match=r"does not fit on 2 GPU\(s\)"):
        create_answerer(AnswererSpec("hybrid", params={"model": tiny_dir, "device": "cuda", "gpu_memory_gib": "0.0001"}))
    assert loads == []
    plan = pipeline.plan_visible_gpus(pipeline.HybridSettings(model=tiny_dir, gpu_memory_gib=1.0, dtype="bfloat16"), torch.bfloat16)
    assert set(plan.device_map.values()) <= {0, 1} and plan.ts_device == 0
    with pytest.raises(pytest.skip.Exception):
        create_answerer(AnswererSpec("hybrid", params={"model": tiny_dir, "device": "cuda", "gpu_memory_gib": "1"}))
    (kwargs,) = loads
    assert kwargs["device_map"] == plan.device_map and str(kwargs["device"]) == "cuda:0"


def _question(qid: int, groups: tuple[str, ...]) -> Question:
    return Question(qid, "Is there an anomaly?", "Anomaly Presence", "Tier 1", ("Yes", "No"), "Yes", groups)


def _series(group_id: str, n_variates: int) -> SeriesGroup:
    values = np.random.default_rng(n_variates).normal(size=(n_variates, 64)).astype(np.float32)
    return SeriesGroup(group_id, values, tuple(f"host:h{i}" for i in range(n_variates)), 1_700_000_000 * 10**9, 60)


def test_big_questions_go_in_smaller_batches_within_the_token_budget(tiny_dir):
    from model.modeling_hybrid import HybridModel
    from model.pipeline import HybridAnswerer

    model = HybridModel.from_pretrained(tiny_dir, device="cpu")
    sizes = [2, 3, 2, 400, 3, 600]  # variates (one token each): two big questions among small ones
    questions = [_question(i, (f"g{i}",)) for i in range(len(sizes))]
    series = [[_series(f"g{i}", n)] for i, n in enumerate(sizes)]
    unlimited = HybridAnswerer(model, max_new_tokens=4, batch_size=8, max_channel_names=0)
    assert {a.notes["batch_size"] for a in unlimited.answer_batch(questions, series)} == {"6"}
    lengths = sorted(unlimited._prepare(q, s).inputs.length for q, s in zip(questions, series))
    budget = 4 * (lengths[3] + 4)  # four small questions fit together; each big one is over budget with company
    limited = HybridAnswerer(model, max_new_tokens=4, batch_size=8, batch_token_budget=budget, max_channel_names=0)
    answers = limited.answer_batch(questions, series)
    batch_of = {q.question_id: int(a.notes["batch_size"]) for q, a in zip(questions, answers)}
    assert batch_of[3] == 1 and batch_of[5] == 1 and {batch_of[i] for i in (0, 1, 2, 4)} == {4}
    for size, (q, s) in zip([batch_of[q.question_id] for q in questions], zip(questions, series)):
        assert size * (max(lengths[:4]) + 4) <= budget or size == 1
    # Same answers whatever the batching (greedy decoding).
    assert [a.raw_response for a in answers] == [a.raw_response for a in unlimited.answer_batch(questions, series)]


def test_a_reply_cut_off_by_max_new_tokens_is_recorded_as_truncated(tiny_dir):
    from model.modeling_hybrid import HybridModel
    from model.pipeline import HybridAnswerer

    model = HybridModel.from_pretrained(tiny_dir, device="cpu")
    question, series = _question(1, ("g",)), [_series("g", 3)]
    cut = HybridAnswerer(model, max_new_tokens=5).answer(question, series)
    assert cut.parse_status == "truncated" and cut.parsed_answer is None and cut.tokens_out == 5
    assert cut.notes["truncated_at"] == "5"
    # A model that ends its reply (end-of-sequence first) is parsed as usual.
    eos = model._eos_ids()[0]

    def end_now(module, inputs, output):
        output[..., eos] += 1e4
        return output

    handle = model.vlm.lm_head.register_forward_hook(end_now)
    try:
        done = HybridAnswerer(model, max_new_tokens=5).answer(question, series)
    finally:
        handle.remove()
    assert done.parse_status != "truncated" and done.tokens_out == 1 and "truncated_at" not in done.notes


# ------------------------------------------------------------------------------------- what the model saw


def test_reference_inputs_are_what_the_published_evaluation_fed_the_model():
    from model.pipeline import reference_view

    values = np.arange(150 * 10_000, dtype=np.float32).reshape(150, 10_000) % 97
    values[3, 5:12] = np.nan
    group = SeriesGroup("g", values, tuple(f"host:h{i:03d}" for i in range(150)), 1_700_000_000 * 10**9, 60)
    view, covered = reference_view(group, max_variates=100)
    # 10,000 one-minute steps do not fit 4,096; five-minute rollups (2,000 steps) do: the finest that fits.
    assert view.values.shape == (100, 2000) and view.interval_s == 300 and covered == 10_000
    assert view.variate_names == group.variate_names[:100]
    np.testing.assert_allclose(view.values[0, :3], values[0, :15].reshape(3, 5).mean(axis=1))
    assert np.isfinite(view.values).all()  # NaN filled (the block of row 3 averages its finite steps)
    # A day of 10-second steps at most 86400 s apart: the coarsest allowed still leaves the first 4,096 steps.
    long = SeriesGroup("h", np.ones((2, 5000), np.float32), ("a", "b"), 0, 86400)
    view, covered = reference_view(long, 100)
    assert view.values.shape == (2, 4096) and covered == 4096


def test_every_answer_records_what_its_answerer_saw(tiny_dir):
    from model.answerers import AnswererSpec, create_answerer
    from model.modeling_hybrid import HybridModel
    from model.pipeline import HybridAnswerer

    question, series = _question(1, ("g",)), [_series("g", 5)]
    stat = create_answerer(AnswererSpec("stat")).answer(question, series).inputs
    assert (stat.variates_used, stat.variates_total, stat.steps_used, stat.steps_total, stat.context_policy) == (5, 5, 64, 64, "full")
    assert stat.full_input
    random_use = create_answerer(AnswererSpec("random")).answer(question, series).inputs
    assert (random_use.variates_used, random_use.steps_used, random_use.context_policy) == (0, 0, "none") and not random_use.full_input

    model = HybridModel.from_pretrained(tiny_dir, device="cpu", max_context_steps=32, long_context_policy="recent")
    use = HybridAnswerer(model, max_new_tokens=2, max_channel_names=3).answer(question, series).inputs
    assert (use.variates_used, use.steps_used, use.steps_total, use.context_policy) == (5, 32, 64, "recent")
    assert (use.channels_listed, use.channels_total, use.images_given, use.context_windows) == (3, 5, 0, 1)
    pair = _question(2, ("g", "h"))
    ref = HybridAnswerer(model, max_new_tokens=2, input_policy="reference").answer(pair, [_series("g", 5), _series("h", 4)]).inputs
    assert (ref.variates_used, ref.variates_total, ref.context_policy) == (5, 9, "reference")  # the first group only
