"""The `vlm` answerer (a local Qwen3-VL reading plots), plots rendered for vision answerers, and the image
preprocessing that stands in for qwen-vl-utils on CPU torch."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model.answerers import AnswererSpec, create_answerer
from model.records import Question, SeriesGroup
from model.vlm import prepare_image, smart_resize

# qwen-vl-utils 0.0.14's own smart_resize on these sizes (width x height -> width x height), run in isolation.
QWEN3_VL = [((640, 480), (640, 480)), ((1920, 1080), (1920, 1088)), ((333, 777), (320, 768)), ((100, 50), (96, 64)), ((8000, 6000), (4704, 3520))]
QWEN2_VL = [((640, 480), (644, 476)), ((1920, 1080), (1932, 1092)), ((333, 777), (336, 784)), ((100, 50), (112, 56)), ((8000, 6000), (4116, 3080))]


@pytest.mark.parametrize("factor,low,high,cases", [(32, 4096, 16_777_216, QWEN3_VL), (28, 3136, 12_845_056, QWEN2_VL)])
def test_smart_resize_matches_qwen_vl_utils(factor, low, high, cases):
    for (width, height), (out_w, out_h) in cases:
        assert smart_resize(height, width, factor, low, high) == (out_h, out_w)


def test_prepare_image_puts_transparency_on_white_and_resizes():
    image = Image.new("RGBA", (100, 50), (0, 0, 0, 0))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    prepared = prepare_image(buffer.getvalue(), 32, 4096, 16_777_216)
    assert prepared.mode == "RGB" and prepared.size == (96, 64) and prepared.getpixel((10, 10)) == (255, 255, 255)


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory):
    from tasks.tiny_model import make_tiny_model

    return str(Path(make_tiny_model(str(tmp_path_factory.mktemp("tiny-vlm") / "tiny"), seed=0)) / "vlm")


def _group(with_plot: bool = True) -> SeriesGroup:
    from tasks.plots import arfbench_plot

    values = np.random.default_rng(1).normal(size=(3, 300)).astype(np.float32)
    group = SeriesGroup("5_0", values, ("host:a", "host:b", "host:c"), 1_700_000_000 * 10**9, 60)
    return SeriesGroup(group.group_id, values, group.variate_names, group.start_ns, group.interval_s, arfbench_plot(group)) if with_plot else group


def test_the_vlm_answerer_reads_the_plot(tiny_vlm):
    answerer = create_answerer(AnswererSpec("vlm", params={"model": tiny_vlm, "max_new_tokens": "4", "max_pixels": str(128 * 128)}))
    question = Question(1, "Is there an anomaly?", "Anomaly Presence", "Tier 1", ("Yes", "No"), "Yes", ("5_0",))
    answer = answerer.answer(question, [_group()])
    assert answer.tokens_in > 20 and answer.tokens_out <= 4
    assert answer.parse_status in ("truncated", "unmatched", "raw", "json", "answer_line", "before_period")
    assert answer.inputs.images_given == 1 and answer.inputs.context_policy == "plot"
    with pytest.raises(ValueError, match="no plot to read"):
        answerer.answer(question, [_group(with_plot=False)])


def test_plots_are_deterministic_and_read_by_the_hybrid_and_the_vlm(small_corpus, tmp_path, tiny_vlm):
    from tasks.corpus import load_corpus
    from tasks.images import IMAGES_DIR, group_plot, render_plots

    corpus_dir = Path(shutil.copytree(small_corpus, tmp_path / "corpus"))
    counts = render_plots(str(corpus_dir))
    files = sorted((corpus_dir / IMAGES_DIR).glob("*.png"))
    assert counts["written"] == len(files) == len(load_corpus(str(corpus_dir)).group_files) and counts["failed"] == 0
    first = {f.name: f.read_bytes() for f in files}
    assert render_plots(str(corpus_dir))["kept"] == len(files)
    render_plots(str(corpus_dir), overwrite=True)
    assert {f.name: f.read_bytes() for f in files} == first  # same input, same bytes
    assert all(Image.open(f).size == (1500, 750) for f in files[:3])

    corpus = load_corpus(str(corpus_dir))
    question = next(q for q in corpus.questions if not q.is_pair)
    group = corpus.open_group(question.query_groups[0])
    assert group_plot(corpus, group) == first[f"{group.group_id}.png"]  # the corpus' file is used
    hybrid = create_answerer(AnswererSpec("hybrid", params={
        "model": str(Path(tiny_vlm).parent), "device": "cpu", "max_new_tokens": "2", "image_dir": str(corpus_dir / IMAGES_DIR),
    }))
    assert hybrid.answer(question, [group]).notes["images"] == "1/1"
    vlm = create_answerer(AnswererSpec("vlm", params={"model": tiny_vlm, "max_new_tokens": "2", "max_pixels": str(128 * 128)}))
    with_plot = SeriesGroup(group.group_id, group.values, group.variate_names, group.start_ns, group.interval_s, group_plot(corpus, group))
    assert vlm.answer(question, [with_plot]).inputs.images_given == 1


@pytest.mark.usefixtures("ray_cluster", "prefect_harness")
def test_a_vlm_run_through_the_flow_renders_plots_in_the_actors(small_corpus, tmp_path, tiny_vlm):
    from flows.score import score_corpus
    from tasks.store import read_answers

    settings = {"model": tiny_vlm, "max_new_tokens": "2", "max_pixels": str(128 * 128)}
    score_corpus(corpus=str(small_corpus), answerer="vlm", run_id="vlm", out=str(tmp_path), shard_size=12, answerer_settings=settings, bootstrap=0)
    answers = read_answers(str(tmp_path), "vlm")
    assert len(answers) == 24 and (answers["status"] == "ok").all(), answers["error"].dropna().tolist()[:2]
    assert (answers["images_given"] >= 1).all() and not (small_corpus / "arfbench-images").exists()  # rendered in memory only


def test_on_cuda_the_vlm_is_planned_over_the_visible_gpus_before_any_weight_loads(tiny_vlm, monkeypatch):
    """The hybrid's placement (model/placement.py): a plan that does not fit fails with the sizes and loads nothing;
    one that fits loads with its explicit device map. CUDA is faked: 2 visible GPUs."""
    import torch
    from transformers import Qwen3VLForConditionalGeneration

    from model.placement import PlacementError

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    loads = []
    monkeypatch.setattr(
        Qwen3VLForConditionalGeneration, "from_pretrained", classmethod(lambda cls, *a, **k: loads.append(k) or pytest.skip("stop here"))
    )
    with pytest.raises(PlacementError, match=r"does not fit on 2 GPU\(s\)"):
        create_answerer(AnswererSpec("vlm", params={"model": tiny_vlm, "device": "cuda", "gpu_memory_gib": "0.0001"}))
    assert loads == []
    with pytest.raises(pytest.skip.Exception):
        create_answerer(AnswererSpec("vlm", params={"model": tiny_vlm, "device": "cuda", "gpu_memory_gib": "1"}))
    (kwargs,) = loads
    assert set(kwargs["device_map"].values()) <= {0, 1} and kwargs["dtype"] == torch.bfloat16


@pytest.mark.parametrize("setting,fragment", [
    ({"device": "gpu"}, "device must be cpu, cuda or cuda:N"), ({"threads": "-3"}, "threads must be >= 0"),
    ({"gpu_memory_fraction": "5"}, "gpu_memory_fraction must be in"), ({"gpu_memory_gib": "-1"}, "gpu_memory_gib must be > 0"),
    ({"max_new_tokens": "0"}, "max_new_tokens must be >= 1"), ({"max_pixels": "10"}, "max_pixels >= min_pixels"),
])
def test_vlm_settings_are_checked_like_the_hybrids_before_anything_loads(setting, fragment):
    from model.configuration import HybridSettings, VLMSettings
    from model.settings import SettingsError, parse_settings

    with pytest.raises(SettingsError, match=fragment):
        parse_settings(VLMSettings, {"model": "m", **setting}, "vlm")
    if "pixels" not in fragment:
        with pytest.raises(SettingsError, match=fragment):
            parse_settings(HybridSettings, {"model": "m", **setting}, "hybrid")
