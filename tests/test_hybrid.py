"""The hybrid Toto + Qwen3-VL model: published module names, config.json, the tiny artifact round trip, pair
questions, batched generation, and the answerer on real Question/SeriesGroup records."""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest
import torch

from model.configuration import MODEL_TYPE, HybridConfig
from model.modeling_hybrid import TS_MODULE_KEYS, HybridModel, TimeSeriesProjector, VariateEmbedding
from model.records import Answer, Question, SeriesGroup

warnings.filterwarnings("ignore", category=ImportWarning)

PUBLISHED_CONFIG = {  # what DataDog/ARFBench TotoAnomalyQAModel._save_pretrained writes
    "model_type": "vlm_with_timeseries",
    "use_timeseries": True,
    "toto_model_name": "Datadog/Toto-Open-Base-1.0",
    "freeze_toto": True,
    "variate_mlp_hidden_dim": 3072,
    "projector_hidden_dim": 2048,
    "variate_dropout": 0.1,
}


# --------------------------------------------------------------------------------------------- config


def test_published_config_loads_with_real_defaults(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(PUBLISHED_CONFIG))
    config = HybridConfig.from_json(path)
    assert config.model_type == MODEL_TYPE
    assert (config.ts_embed_dim, config.variate_mlp_hidden_dim, config.variate_out_dim, config.projector_hidden_dim) == (768, 3072, 768, 2048)
    toto = config.toto
    assert (toto.patch_size, toto.embed_dim, toto.num_layers, toto.num_heads, toto.mlp_hidden_dim) == (64, 768, 12, 12, 3072)
    assert toto.n_spacewise_layers == 1 and toto.spacewise_first is False
    assert config.long_context_policy == "windows" and config.max_context_steps == 4096


def test_config_round_trip_keeps_unknown_keys(tmp_path):
    config = HybridConfig.from_dict({**PUBLISHED_CONFIG, "future_field": {"a": [1, 2]}, "vlm_hidden_size": 5120})
    written = config.to_json(tmp_path)
    again = HybridConfig.from_json(written)
    assert again == config
    assert json.loads(open(written).read())["future_field"] == {"a": [1, 2]}
    assert again.vlm_hidden_size == 5120


@pytest.mark.parametrize(
    "changes,field",
    [
        ({"model_type": "qwen3_vl"}, "model_type"),
        ({"projector_hidden_dim": 0}, "projector_hidden_dim"),
        ({"variate_mlp_hidden_dim": "3072"}, "variate_mlp_hidden_dim"),
        ({"vlm_hidden_size": -1}, "vlm_hidden_size"),
        ({"ts_embed_dim": 512}, "ts_embed_dim"),
        ({"max_context_steps": 1000}, "max_context_steps"),
        ({"long_context_policy": "truncate"}, "long_context_policy"),
        ({"toto": {"embed_dim": 770, "num_heads": 12}}, "toto.embed_dim"),
        ({"toto": {"patch_size": 64, "stride": 32}}, "toto.stride"),
        ({"toto": {"num_layers": 12, "spacewise_every_n_layers": 5}}, "toto.spacewise_every_n_layers"),
    ],
)
def test_bad_config_names_the_field(changes, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        HybridConfig.from_dict({**PUBLISHED_CONFIG, **changes})


def test_missing_model_type_is_an_error():
    with pytest.raises(ValueError, match="model_type"):
        HybridConfig.from_dict({"use_timeseries": True})


# --------------------------------------------------------------------------------------------- published names


def test_ts_modules_names_and_shapes_at_real_sizes():
    """The published ts_modules.pt layout, at the real sizes (VLM hidden 5120: Qwen3-VL-32B's text hidden size)."""
    variate = VariateEmbedding(768, 3072, 768)
    projector = TimeSeriesProjector(768, 5120, 2048)
    shapes = {
        "variate_embedding": {
            "norm.scale": (768,), "mlp.0.weight": (3072, 768), "mlp.0.bias": (3072,), "mlp.3.weight": (768, 3072), "mlp.3.bias": (768,),
        },
        "ts_projector": {
            "projection.0.weight": (2048, 768), "projection.0.bias": (2048,), "projection.3.weight": (5120, 2048),
            "projection.3.bias": (5120,), "projection.4.weight": (5120,), "projection.4.bias": (5120,),
        },
    }
    for name, module in (("variate_embedding", variate), ("ts_projector", projector)):
        state = module.state_dict()
        assert tuple(state) == TS_MODULE_KEYS[name]
        assert {key: tuple(value.shape) for key, value in state.items()} == shapes[name]
    out = projector(variate(torch.randn(3, 768)))
    assert out.shape == (3, 5120)
    assert torch.allclose(out.mean(-1), torch.zeros(3), atol=1e-4)  # LayerNorm last


# --------------------------------------------------------------------------------------------- tiny model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(in-memory tiny model, its saved artifact dir, the model loaded back from that dir)."""
    from model.tiny import build_tiny_model

    model = build_tiny_model(seed=0)
    path = str(tmp_path_factory.mktemp("tiny-hybrid"))
    model.save_pretrained(path)
    loaded = HybridModel.from_pretrained(path, device="cpu")
    return model, path, loaded


def _values(n_var: int, n_steps: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n_var, n_steps)).astype(np.float32) * 3 + 10
    values[rng.random(values.shape) < 0.05] = np.nan
    return values


def _group(group_id: str, values: np.ndarray, interval_s: int = 60) -> SeriesGroup:
    names = tuple(f"service:s{i:02d},host:h{i}" for i in range(values.shape[0]))
    return SeriesGroup(group_id, values, names, 1_700_000_000 * 10**9, interval_s)


def test_artifact_layout_and_round_trip(tiny):
    model, path, loaded = tiny
    assert sorted(os.listdir(path)) == ["config.json", "toto", "ts_modules.pt", "vlm"]
    assert {"model.safetensors", "config.json"} <= set(os.listdir(os.path.join(path, "toto")))
    assert {"model.safetensors", "config.json", "tokenizer.json", "preprocessor_config.json"} <= set(os.listdir(os.path.join(path, "vlm")))
    state = torch.load(os.path.join(path, "ts_modules.pt"), weights_only=True)
    assert set(state) == {"variate_embedding", "ts_projector"}
    assert tuple(state["ts_projector"]) == TS_MODULE_KEYS["ts_projector"]
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)
    assert total < 10e6
    assert loaded.config == model.config
    # Same weights, same outputs: logits and greedy generations.
    values = _values(6, 300, seed=1)
    prompt = model.tokenize_prompt("Is there an anomaly in this series?\nA. Yes\nB. No")
    assert loaded.tokenize_prompt("Is there an anomaly in this series?\nA. Yes\nB. No") == prompt
    a = model.build_inputs([model.encode_series(values)], prompt)
    b = loaded.build_inputs([loaded.encode_series(values)], prompt)
    assert torch.allclose(a.inputs_embeds, b.inputs_embeds, atol=1e-6)
    assert torch.allclose(model.logits([a]), loaded.logits([b]), atol=1e-5)
    assert model.generate([a], max_new_tokens=12) == loaded.generate([b], max_new_tokens=12)


def test_make_tiny_model_is_deterministic(tiny, tmp_path):
    from tasks.tiny_model import make_tiny_model

    model, _, _ = tiny
    out = make_tiny_model(str(tmp_path / "tiny"), seed=0)
    again = HybridModel.from_pretrained(out, device="cpu")
    values = _values(4, 100, seed=2)
    prompt = model.tokenize_prompt("Which channel? 2024-01-01 00:00:00")
    a = model.build_inputs([model.encode_series(values)], prompt)
    b = again.build_inputs([again.encode_series(values)], prompt)
    assert torch.allclose(model.logits([a]), again.logits([b]), atol=1e-5)
    assert model.generate([a], max_new_tokens=8) == again.generate([b], max_new_tokens=8)


def test_from_pretrained_errors(tiny, tmp_path):
    _, path, _ = tiny
    with pytest.raises(FileNotFoundError, match="config.json"):
        HybridModel.from_pretrained(str(tmp_path), device="cpu")
    # A published-style artifact without toto/: a clear message, not a hub download.
    (tmp_path / "config.json").write_text(json.dumps(PUBLISHED_CONFIG))
    with pytest.raises(FileNotFoundError, match="Toto backbone weights not found"):
        HybridModel.from_pretrained(str(tmp_path), device="cpu")
    # ts_modules.pt with a wrong name fails loudly (the reference's strict=False would keep random weights).
    model, _, _ = tiny
    state = model.ts_modules_state()
    state["ts_projector"]["projection.9.weight"] = state["ts_projector"].pop("projection.4.weight")
    with pytest.raises(ValueError, match="projection.4.weight"):
        model.load_ts_modules(state)


def test_pair_questions_use_both_groups(tiny):
    model, _, _ = tiny
    first, second = _values(5, 200, seed=3), _values(3, 120, seed=4)
    prompt = model.tokenize_prompt("Do the anomalies correlate?")
    inputs = model.build_inputs([model.encode_series(first), model.encode_series(second)], prompt)
    separator = len(model.tokenizer(model.config.pair_separator, add_special_tokens=False)["input_ids"])
    assert inputs.n_ts_tokens == 5 + 3 and inputs.n_separator_tokens == separator > 0
    assert inputs.length == 5 + separator + 3 + len(prompt)
    changed = second.copy()
    changed[:, 60:] += 25.0
    other = model.build_inputs([model.encode_series(first), model.encode_series(changed)], prompt)
    delta = (inputs.inputs_embeds - other.inputs_embeds).abs().amax(dim=-1)
    assert delta[5 + separator : 5 + separator + 3].min() > 0  # the second group's tokens changed
    assert delta[:5].max() == 0 and delta[5 + separator + 3 :].max() == 0


# --------------------------------------------------------------------------------------------- the answerer


@pytest.fixture(scope="module")
def corpus_questions(small_corpus):
    """(question, [SeriesGroup...]) for a few real synthetic questions, pairs included when present."""
    from tasks.corpus import load_corpus

    corpus = load_corpus(str(small_corpus))
    chosen = [q for q in corpus.questions if q.is_pair][:1] + [q for q in corpus.questions if not q.is_pair][:5]
    return [(q, [corpus.open_group(g) for g in q.query_groups]) for q in chosen]


def test_answerer_returns_valid_answers(tiny, corpus_questions):
    from model.pipeline import HybridAnswerer

    _, _, loaded = tiny
    answerer = HybridAnswerer(loaded, max_new_tokens=8, shuffle=True, seed=3)
    question, series = corpus_questions[0]
    assert question.is_pair and len(series) == 2
    answer = answerer.answer(question, series)
    assert isinstance(answer, Answer)
    assert isinstance(answer.raw_response, str)
    assert answer.parse_status in ("json", "answer_line", "before_period", "raw", "unmatched", "truncated")
    assert answer.parsed_answer is None or answer.parsed_answer in question.options
    assert 0 < answer.tokens_out <= 8
    assert answer.tokens_in == int(answer.notes["ts_tokens"]) + int(answer.notes["separator_tokens"]) + int(answer.notes["text_tokens"])
    assert int(answer.notes["ts_tokens"]) == sum(group.n_variates for group in series)
    assert int(answer.notes["option_order_seed"]) >= 0 and answer.latency_s > 0
    assert answer.notes["g0.ts_policy"] == "windows"
    assert "g1.ts_windows" in answer.notes  # both groups of the pair were encoded
    # Without shuffling the recorded seed says "corpus order".
    plain = HybridAnswerer(loaded, max_new_tokens=4).answer(question, series)
    assert plain.notes["option_order_seed"] == "-1"


def test_answer_batch_equals_batch_of_one(tiny, corpus_questions):
    from model.pipeline import HybridAnswerer

    model, _, _ = tiny
    answerer = HybridAnswerer(model, max_new_tokens=10, batch_size=4, shuffle=True, seed=1)
    questions = [q for q, _ in corpus_questions]
    series = [s for _, s in corpus_questions]
    one_by_one = [answerer.answer(q, s) for q, s in zip(questions, series)]
    batched = answerer.answer_batch(questions, series)
    assert [a.raw_response for a in batched] == [a.raw_response for a in one_by_one]
    assert [(a.parsed_answer, a.parse_status, a.tokens_in, a.tokens_out) for a in batched] == [
        (a.parsed_answer, a.parse_status, a.tokens_in, a.tokens_out) for a in one_by_one
    ]
    assert [a.notes["option_order_seed"] for a in batched] == [a.notes["option_order_seed"] for a in one_by_one]
    assert max(int(a.notes["batch_size"]) for a in batched) > 1


def test_no_options_is_an_invalid_answer_not_a_crash(tiny):
    from model.pipeline import HybridAnswerer

    model, _, _ = tiny
    question = Question(1, "Is there an anomaly?", "Anomaly Presence", "Tier 1", (), "", ("1_0",))
    answer = HybridAnswerer(model).answer(question, [_group("1_0", _values(2, 50, 0))])
    assert answer.parsed_answer is None and answer.parse_status == "unmatched"


def test_create_hybrid_answerer_from_spec(tiny, corpus_questions):
    from model.answerers import AnswererSpec, create_answerer

    _, path, _ = tiny
    params = {"model": path, "max_new_tokens": "6", "device": "cpu", "long_context_policy": "recent"}
    spec = AnswererSpec("model.pipeline:create_hybrid_answerer", seed=2, params=params)
    answerer = create_answerer(spec)
    question, series = corpus_questions[1]
    answer = answerer.answer(question, series)
    assert answer.tokens_out <= 6 and answer.notes["g0.ts_policy"] == "recent"
    with pytest.raises(ValueError, match=r"required setting\(s\) \['model'\] missing"):
        create_answerer(AnswererSpec("model.pipeline:create_hybrid_answerer"))
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['max_tokens'\]"):
        create_answerer(AnswererSpec("model.pipeline:create_hybrid_answerer", params={"model": path, "max_tokens": "3"}))
    with pytest.raises(ValueError, match="model=.*not a directory"):
        create_answerer(AnswererSpec("hybrid", params={"model": path + "-missing"}))


def test_series_metadata_lists_channels_and_counts_the_rest():
    from model.pipeline import series_metadata

    group = _group("7_0", _values(5, 10, 0), interval_s=300)
    text, notes = series_metadata([group], max_channel_names=3)
    assert "Channel 1: service:s00,host:h0" in text and "Channel 4" not in text
    assert "2 more channels (not listed)" in text and notes["g0.channels_listed"] == "3/5"
    assert "- First timestamp: 2023-11-14 22:13:20" in text and "- Time interval: 5.0 minutes" in text
    pair_text, _ = series_metadata([group, _group("7_1", _values(2, 10, 1))])
    assert "Time series group 2 (query group 7_1)" in pair_text


# --------------------------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bf16_forward_on_cuda(tiny, corpus_questions):
    from model.pipeline import HybridAnswerer

    model, path, _ = tiny
    gpu = HybridModel.from_pretrained(path, device="cuda")  # dtype auto -> bfloat16 on CUDA
    assert gpu.vlm_dtype == torch.bfloat16 and next(gpu.toto.parameters()).is_cuda
    values = _values(6, 300, seed=5)
    prompt = model.tokenize_prompt("Is there an anomaly?")
    cpu_logits = model.logits([model.build_inputs([model.encode_series(values)], prompt)])
    gpu_logits = gpu.logits([gpu.build_inputs([gpu.encode_series(values)], prompt)]).float().cpu()
    assert torch.isfinite(gpu_logits).all()
    assert torch.corrcoef(torch.stack([cpu_logits[0], gpu_logits[0]]))[0, 1] > 0.95
    question, series = corpus_questions[0]
    answers = HybridAnswerer(gpu, max_new_tokens=8, batch_size=4).answer_batch([question] * 3, [series] * 3)
    assert len(answers) == 3 and all(isinstance(a.raw_response, str) for a in answers)


# --------------------------------------------------------------------------------------------- images


def test_images_go_through_the_vision_tower(tiny, corpus_questions, tmp_path):
    """Optional plots: placeholders expanded to the image's merged patches, pixels reach the VLM, and the
    batched path still equals the batch-of-one path."""
    from PIL import Image

    from model.pipeline import HybridAnswerer

    _, _, loaded = tiny
    rng = np.random.default_rng(0)
    plotted = {group_id for question, _ in corpus_questions[:2] for group_id in question.query_groups}
    for group_id in sorted(plotted):
        Image.fromarray((rng.random((60, 120, 3)) * 255).astype(np.uint8)).save(tmp_path / f"{group_id}.png")
    answerer = HybridAnswerer(loaded, max_new_tokens=6, batch_size=3, image_dir=str(tmp_path))
    question, series = corpus_questions[0]  # a pair: two plots
    answer = answerer.answer(question, series)
    assert answer.notes["images"] == "2/2" and int(answer.notes["image_tokens"]) > 0
    # The image changes the model's input: same question without the plots gives other logits.
    prompt_plain = loaded.tokenize_prompt("Is there an anomaly?")
    prompt_image = loaded.tokenize_prompt("Is there an anomaly?", n_images=1)
    encoded = [loaded.encode_series(series[0].values)]
    plot = Image.open(tmp_path / f"{question.query_groups[0]}.png")
    other = Image.fromarray(np.zeros((60, 120, 3), dtype=np.uint8))
    with_plot = loaded.logits([loaded.build_inputs(encoded, prompt_image, images=[plot])])
    with_other = loaded.logits([loaded.build_inputs(encoded, prompt_image, images=[other])])
    without = loaded.logits([loaded.build_inputs(encoded, prompt_plain)])
    assert (with_plot - with_other).abs().max() > 1e-4 and with_plot.shape == without.shape
    questions = [q for q, _ in corpus_questions]  # some with plots, some without: a mixed batch
    series_list = [s for _, s in corpus_questions]
    one_by_one = [answerer.answer(q, s) for q, s in zip(questions, series_list)]
    batched = answerer.answer_batch(questions, series_list)
    assert [a.raw_response for a in batched] == [a.raw_response for a in one_by_one]
    expected = [f"{sum(g in plotted for g in q.query_groups)}/{len(q.query_groups)}" for q in questions]
    assert [a.notes["images"] for a in batched] == expected and "0/1" in expected
