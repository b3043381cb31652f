"""The `vlm` answerer: a local Qwen3-VL (transformers) reading each group's plot, without Toto: the reference's open
VLM baseline (DataDog/ARFBench evaluation/eval_qwen3_vl.py).

Per question: the ARFBench-style system prompt, then one plot per query group (the corpus' arfbench-images/ or one
rendered in the actor) and the question with its options, through the model's chat template; greedy generation,
parsed like every answer; a reply cut off by ``max_new_tokens`` is recorded as truncated.

Image preprocessing. The reference calls qwen-vl-utils' ``process_vision_info``, which imports torchvision at module
level. On CPU torch 2.13 that cannot work here: PyPI's only torchvision for torch 2.13 (0.28.0) is a CUDA 13 build
whose ``_C.so`` needs ``libc10_cuda.so`` and ``libcudart.so.13``, so its ops never register ("operator
torchvision::nms does not exist"); CPU builds live on download.pytorch.org only. On the image path qwen-vl-utils
uses torchvision for nothing (only video needs it): it converts to RGB (RGBA onto white), resizes with PIL bicubic to
``smart_resize(h, w, factor=patch_size * merge_size, min_pixels, max_pixels)`` and hands the image to the model's
processor. :func:`smart_resize` and :func:`prepare_image` do exactly that here, and transformers'
``Qwen2VLImageProcessorPil`` (no torchvision) makes the patches; on a GPU machine with torchvision installed the
result is the same image. Checked against qwen-vl-utils' own function: tests/test_vlm.py holds its outputs.

GPU placement: as the hybrid (model/placement.py), the VLM planned over every GPU the actor sees before loading.
"""

from __future__ import annotations

import io
import math
import os
import time
from collections.abc import Sequence
from typing import Any

import torch

from model.answerers import AnswererSpec
from model.configuration import VLMSettings
from model.modeling_hybrid import (
    chat_text,
    cut_after_eos,
    eos_token_ids,
    image_placeholders,
    load_vlm,
    pad_token_id,
    resolve_device,
    resolve_dtype,
)
from model.parsing import parse_reply
from model.placement import PlacementPlan, estimate_question_tokens, plan_placement, visible_gpu_budgets
from model.prompts import ARFBENCH_SYSTEM_PROMPT, build_prompt, plotted_variates, question_options
from model.records import Answer, InputUse, Question, SeriesGroup
from model.settings import SettingsError, parse_settings

__all__ = ["VLMAnswerer", "create_vlm_answerer", "prepare_image", "smart_resize"]

MAX_RATIO = 200


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """qwen-vl-utils 0.0.14's rule: both sides multiples of ``factor`` (rounded half to even), the area within
    [min_pixels, max_pixels] keeping the aspect ratio. Returns (height, width)."""
    if max(height, width) / min(height, width) > MAX_RATIO:
        raise ValueError(f"image aspect ratio must be at most {MAX_RATIO}, got {max(height, width) / min(height, width):.1f}")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def prepare_image(png: bytes, factor: int, min_pixels: int, max_pixels: int) -> Any:
    """PNG bytes -> the RGB PIL image qwen-vl-utils' fetch_image would give (RGBA onto white, bicubic resize)."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        if image.mode == "RGBA":
            background = Image.new("RGB", image.size, (255, 255, 255))
            background.paste(image, mask=image.split()[3])
            rgb = background
        else:
            rgb = image.convert("RGB")
    height, width = smart_resize(rgb.height, rgb.width, factor, min_pixels, max_pixels)
    return rgb.resize((width, height))


class VLMAnswerer:
    """A loaded Qwen3-VL that answers from plots (module docstring)."""

    reads_plots = True

    def __init__(self, spec: AnswererSpec) -> None:
        from transformers import AutoConfig, AutoTokenizer
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        self.name, self.seed = spec.name, spec.seed
        settings: VLMSettings = parse_settings(VLMSettings, dict(spec.params), spec.name)
        if not os.path.isdir(settings.model):
            raise SettingsError(f"answerer {spec.name}: setting model={settings.model!r}: not a directory here")
        if settings.threads:
            torch.set_num_threads(settings.threads)
        self.settings = settings
        device = resolve_device(settings.device)
        dtype = resolve_dtype(settings.dtype, device)
        self.plan: PlacementPlan | None = None
        if device.type == "cuda" and settings.device_map == "auto":
            config = AutoConfig.from_pretrained(settings.model)
            question_tokens = settings.max_question_tokens or estimate_question_tokens(max_variates=0, max_channel_names=0, images=2)
            self.plan = plan_placement(
                config, visible_gpu_budgets(settings.gpu_memory_gib, settings.gpu_memory_fraction), dtype=dtype,
                question_tokens=question_tokens, max_new_tokens=settings.max_new_tokens, batch_size=1,
            )  # PlacementError with the sizes before any weight loads
            print(f"arfscore vlm: GPU plan\n{self.plan.describe()}", flush=True)
        self.model = load_vlm(settings.model, dtype, device, self.plan.device_map if self.plan else None)
        self.tokenizer = AutoTokenizer.from_pretrained(settings.model)
        self.processor = Qwen2VLImageProcessorPil.from_pretrained(settings.model)
        self.factor = int(getattr(self.processor, "patch_size", 16)) * int(getattr(self.processor, "merge_size", 2))

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    def _inputs(self, question: Question, options: list[str], series: Sequence[SeriesGroup]) -> dict[str, torch.Tensor]:
        images = []
        for group in series:
            if group.image_png is None:
                raise ValueError(f"query group {group.group_id}: no plot to read")
            images.append(prepare_image(group.image_png, self.factor, self.settings.min_pixels, self.settings.max_pixels))
        processed = self.processor(images=images, return_tensors="pt")
        grid = processed["image_grid_thw"]
        merge = int(getattr(self.processor, "merge_size", 2))
        pads = [int(row.prod()) // (merge * merge) for row in grid]
        prompt = image_placeholders(pads) + build_prompt(question, options)
        text = chat_text(self.tokenizer, prompt, self.settings.system_prompt or ARFBENCH_SYSTEM_PROMPT)
        ids = torch.tensor([self.tokenizer(text, add_special_tokens=False)["input_ids"]], device=self.device)
        dtype = self.model.get_input_embeddings().weight.dtype
        return {
            "input_ids": ids, "attention_mask": torch.ones_like(ids),
            "pixel_values": processed["pixel_values"].to(device=self.device, dtype=dtype), "image_grid_thw": grid.to(self.device),
        }

    @torch.inference_mode()
    def answer(self, question: Question, series: Sequence[SeriesGroup]) -> Answer:
        started = time.perf_counter()
        options, seed = question_options(question, self.seed, self.settings.shuffle_options)
        inputs = self._inputs(question, options, series)
        config = self.model.generation_config
        eos = eos_token_ids(self.tokenizer, config)
        output = self.model.generate(
            **inputs, max_new_tokens=self.settings.max_new_tokens, do_sample=False, num_beams=1, temperature=None, top_p=None,
            top_k=None, pad_token_id=pad_token_id(self.tokenizer, config), **({"eos_token_id": eos} if eos else {}),
        )
        generated = cut_after_eos(output[0, inputs["input_ids"].shape[1]:].tolist(), eos)
        text = self.tokenizer.decode(generated.token_ids, skip_special_tokens=True).strip()
        parsed, status = parse_reply(text, options, generated.finished)
        variates, steps = sum(g.n_variates for g in series), sum(g.n_steps for g in series)
        return Answer(
            raw_response=text, parsed_answer=parsed, parse_status=status, latency_s=time.perf_counter() - started,
            tokens_in=int(inputs["input_ids"].shape[1]), tokens_out=len(generated.token_ids), notes={"option_order_seed": str(seed)},
            inputs=InputUse(
                variates_used=plotted_variates(series), variates_total=variates, steps_used=steps,
                steps_total=steps, context_policy="plot", channels_total=variates, images_given=len(series),
            ),
        )


def create_vlm_answerer(spec: AnswererSpec) -> VLMAnswerer:
    """Factory for the answerer registry (model/answerers.py registers it as "vlm")."""
    return VLMAnswerer(spec)


create_vlm_answerer.settings = VLMSettings  # type: ignore[attr-defined]  # for "model.vlm:create_vlm_answerer"
