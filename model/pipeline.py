"""The hybrid answerer: question + series -> prompt -> Toto-1.0-QA generation -> parsed answer.

A thin pipeline in the style of chronos-forecasting: callers pass Question / SeriesGroup records and get Answer
records; tensors stay inside model/modeling_hybrid.py.

    question -> options (optionally shuffled with a recorded per-question seed)
             -> prompt text (model/prompts.build_prompt; the series metadata as its summary) -> chat template
             -> variate tokens of EVERY group (both groups for pair questions) + prompt tokens
             -> greedy generation -> model/parsing.parse_answer -> Answer

Settings (``AnswererSpec.params`` as text, parsed into model/configuration.HybridSettings; CLI
``--answerer-opt KEY=VALUE`` or ``--answerer-config FILE.yaml``):
    model               artifact directory (required): config.json, vlm/, ts_modules.pt, toto/
    device              "cuda" / "cuda:1" / "cpu" (default: cuda if visible, else cpu)
    device_map          "auto" (default): on CUDA, spread the model over every GPU visible to this process (a Ray
                        actor with G GPUs sees exactly its G) by a plan checked before loading (model/placement.py):
                        decoder layers whole, Toto and the projector on the first GPU, KV headroom kept for the
                        largest question. "single": everything on `device`.
    dtype               auto (bf16 on CUDA, fp32 on CPU) | float32 | bfloat16 | float16
    max_new_tokens      default prompts.DEFAULT_MAX_NEW_TOKENS (256: what the requested reasoning needs); a reply
                        cut off by the limit is recorded with parse status "truncated" and no parsed answer
    batch_size          most questions generated together by answer_batch (left-padded), default 8; with a GPU
                        plan, big questions go in smaller batches so a batch stays within the planned token budget
    shuffle_options     true/false (default false): shuffle each question's options with
                        prompts.option_seed(spec.seed, question_id); the seed is recorded in notes["option_order_seed"]
                        (-1 = corpus order)
    series_metadata     true/false (default true): list each group's channels (in token order) and its time range
                        in the prompt, in the reference's "Time Series Channels" / "Time Series Metadata" format
    max_channel_names   channel names listed per group (default 1000, the reference's largest variate budget);
                        the rest is counted in the prompt and in notes, never dropped silently
    system_prompt       optional system message
    image_dir           optional local directory of plots named {query_group}.png (the corpus'
                        arfbench-images/): each group's plot is given to the VLM before the prompt text; groups
                        without a file go without (notes["images"] says how many were found)
    toto                Toto backbone directory (default: <model>/toto)
    threads             CPU threads for torch (the flow passes the actor's CPU count; ignored on GPU)
    gpu_memory_gib, gpu_memory_fraction, max_question_tokens: the GPU plan's budget per device and KV sizing
    input_policy        "full" (default: every variate and step, both groups of a pair) | "reference": what the
                        published Toto-QA evaluation fed the model (first 100 variates, 1,000 for Tier 3; the finest
                        ARFBench interval fitting 4,096 steps; NaN filled; first group only), to reproduce its
                        figures; recorded per answer (context_policy "reference", variates/steps used)
    long_context_policy, max_context_steps, max_variates_per_chunk, patches_per_spacewise_chunk, nan_policy:
                        HybridConfig overrides (model/configuration.py)

Unknown params are an error (a typo must not silently change a run).
"""

from __future__ import annotations

import os
import time
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
import torch

from model.configuration import HybridSettings
from model.modeling_hybrid import HybridInputs, HybridModel, read_artifact_config, resolve_device, resolve_dtype
from model.parsing import parse_reply
from model.placement import PlacementPlan, estimate_question_tokens, plan_placement, ts_module_bytes, visible_gpu_budgets
from model.prompts import DEFAULT_MAX_NEW_TOKENS, build_prompt, question_options
from model.records import Answer, InputUse, Question, SeriesGroup
from model.settings import SettingsError, parse_settings
from model.toto_encoder import EncodedSeries

__all__ = ["HybridAnswerer", "create_hybrid_answerer", "plan_visible_gpus", "series_metadata"]

def _format_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} seconds"
    if seconds < 3600:
        return f"{seconds / 60:.1f} minutes"
    if seconds < 86400:
        return f"{seconds / 3600:.2f} hours"
    return f"{seconds / 86400:.2f} days"


def _format_ns(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def series_metadata(groups: Sequence[SeriesGroup], max_channel_names: int = 1000) -> tuple[str, dict[str, str]]:
    """Channel names (in variate-token order) and time range of each group, as prompt text, plus notes.

    One group: exactly the reference's layout (``format_ts_metadata_for_prompt``), with UTC timestamps. Several
    groups: one such block per group, headed "Time series group k (query group ID)".
    """
    blocks: list[str] = []
    notes: dict[str, str] = {}
    for index, group in enumerate(groups):
        names = list(group.variate_names)
        listed = names[:max_channel_names]
        lines = ["Time Series Channels (in order):"] + [f"Channel {i + 1}: {name}" for i, name in enumerate(listed)]
        if len(names) > len(listed):
            lines.append(f"... and {len(names) - len(listed)} more channels (not listed)")
        lines.append("")
        lines.append("Time Series Metadata:")
        lines.append(f"- Time interval: {_format_duration(group.interval_s)}")
        if group.n_steps:
            lines.append(f"- First timestamp: {_format_ns(group.timestamp_ns(0))}")
            lines.append(f"- Last timestamp: {_format_ns(group.timestamp_ns(group.n_steps - 1))}")
            lines.append(f"- Total duration: {_format_duration(group.n_steps * group.interval_s)}")
        text = "\n".join(lines)
        if len(groups) > 1:
            text = f"Time series group {index + 1} (query group {group.group_id}):\n{text}"
        blocks.append(text)
        notes[f"g{index}.channels_listed"] = f"{len(listed)}/{len(names)}"
    return "\n\n".join(blocks), notes


# What the published Toto-QA evaluation fed the model (DataDog/ARFBench eval_toto_vlm.py): the first 100 variates
# (1,000 for Tier 3 categories), at the finest of ARFBench's intervals that fits 4,096 steps (else the first 4,096
# steps of the coarsest), NaN forward- then backward-filled, then 0; only the first group of a pair question.
REFERENCE_INTERVALS_S: tuple[int, ...] = (10, 60, 300, 1800, 3600, 86400)
REFERENCE_MAX_STEPS = 4096
REFERENCE_MAX_VARIATES = 100
REFERENCE_MAX_VARIATES_TIER3 = 1000
_TIER3_CATEGORIES = ("Anomaly Indicator", "Anomaly Correlation")


def reference_view(group: SeriesGroup, max_variates: int) -> tuple[SeriesGroup, int]:
    """The group as the reference evaluation saw it, and how many of its original steps that covers.

    The reference picked the coarsest needed of several rollup files; from one file the same resolution is made
    by averaging consecutive steps (Datadog's default avg rollup), NaN-aware.
    """
    n_steps = group.n_steps
    factor = 1
    candidates = [s // group.interval_s for s in REFERENCE_INTERVALS_S if s >= group.interval_s and s % group.interval_s == 0]
    for candidate in candidates:
        factor = candidate
        if -(-n_steps // candidate) <= REFERENCE_MAX_STEPS:
            break
    values = group.values[:max_variates]
    if factor > 1:
        blocks = -(-n_steps // factor)
        padded = np.full((values.shape[0], blocks * factor), np.nan, dtype=np.float32)
        padded[:, :n_steps] = values
        shaped = padded.reshape(values.shape[0], blocks, factor)
        counts = np.isfinite(shaped).sum(axis=2)
        sums = np.nansum(shaped, axis=2)
        with np.errstate(invalid="ignore", divide="ignore"):
            values = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan).astype(np.float32)
    values = values[:, :REFERENCE_MAX_STEPS]
    filled = pd.DataFrame(values.T).ffill().bfill().fillna(0.0).to_numpy(dtype=np.float32).T
    view = SeriesGroup(group.group_id, np.ascontiguousarray(filled), group.variate_names[:max_variates], group.start_ns, group.interval_s * factor)
    return view, min(n_steps, values.shape[1] * factor)


@dataclass
class _Prepared:
    question: Question
    options: list[str]
    seed: int
    inputs: HybridInputs | None
    started: float
    prep_s: float
    notes: dict[str, str] = field(default_factory=dict)
    use: InputUse | None = None


class HybridAnswerer:
    """Answers questions with a loaded :class:`HybridModel` (see the module docstring for the settings)."""

    def __init__(
        self,
        model: HybridModel,
        *,
        name: str = "hybrid",
        seed: int = 0,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        batch_size: int = 8,
        batch_token_budget: int | None = None,
        shuffle: bool = False,
        with_series_metadata: bool = True,
        max_channel_names: int = 1000,
        system_prompt: str | None = None,
        image_dir: str | None = None,
        input_policy: str = "full",
    ) -> None:
        if input_policy not in ("full", "reference"):
            raise ValueError(f"input_policy must be 'full' or 'reference', got {input_policy!r}")
        self.input_policy = input_policy
        self.name = name
        self.model = model
        self.seed = int(seed)
        self.max_new_tokens = int(max_new_tokens)
        self.batch_size = int(batch_size)
        # Tokens one generate call may hold: len(batch) x (longest input + max_new_tokens); None = no limit.
        self.batch_token_budget = batch_token_budget
        self.shuffle = bool(shuffle)
        self.with_series_metadata = bool(with_series_metadata)
        self.max_channel_names = int(max_channel_names)
        self.system_prompt = system_prompt
        self.image_dir = image_dir
        self._cache: OrderedDict[tuple, tuple[weakref.ref, EncodedSeries]] = OrderedDict()

    # ------------------------------------------------------------------------------------------- encoding cache

    def _encode(self, group: SeriesGroup) -> EncodedSeries:
        """Toto embeddings of a group, cached (several questions share a group; values held weakly)."""
        key = (group.group_id, id(group.values), tuple(group.values.shape), int(group.start_ns), int(group.interval_s))
        hit = self._cache.get(key)
        if hit is not None and hit[0]() is group.values:
            self._cache.move_to_end(key)
            return hit[1]
        encoded = self.model.encode_series(group.values)
        try:
            self._cache[key] = (weakref.ref(group.values), encoded)
        except TypeError:
            return encoded
        while len(self._cache) > 4:
            self._cache.popitem(last=False)
        return encoded

    # ------------------------------------------------------------------------------------------- answering

    def answer(self, question: Question, series: Sequence[SeriesGroup]) -> Answer:
        """One question, generated alone (batch of one)."""
        prepared = self._prepare(question, series)
        return self._generate([prepared])[0]

    def answer_batch(self, questions: Sequence[Question], series_list: Sequence[Sequence[SeriesGroup]]) -> list[Answer]:
        """Several questions; generation runs ``batch_size`` questions at a time (left-padded inputs_embeds),
        similar lengths together. Greedy, so the answers equal :meth:`answer`'s up to float rounding."""
        if len(questions) != len(series_list):
            raise ValueError(f"{len(questions)} questions but {len(series_list)} series lists")
        prepared = [self._prepare(question, series) for question, series in zip(questions, series_list)]
        answers: list[Answer | None] = [None] * len(prepared)
        ready = [i for i, item in enumerate(prepared) if item.inputs is not None]
        for i, item in enumerate(prepared):
            if item.inputs is None:
                answers[i] = self._no_options(item)
        ready.sort(key=lambda i: prepared[i].inputs.length)
        for chunk in self._batches(ready, [prepared[i].inputs.length for i in ready]):
            for i, answer in zip(chunk, self._generate([prepared[i] for i in chunk])):
                answers[i] = answer
        return [answer for answer in answers if answer is not None]

    def _batches(self, items: list[int], lengths: list[int]) -> list[list[int]]:
        """Consecutive items (sorted by input length) in batches of at most batch_size whose padded size
        len(batch) x (longest input + max_new_tokens) stays within batch_token_budget; a question larger than the
        budget goes alone."""
        batches: list[list[int]] = []
        current: list[int] = []
        longest = 0
        for item, length in zip(items, lengths):
            grown = max(longest, length) + self.max_new_tokens
            too_big = self.batch_token_budget is not None and (len(current) + 1) * grown > self.batch_token_budget
            if current and (len(current) >= self.batch_size or too_big):
                batches.append(current)
                current, longest = [], 0
            current.append(item)
            longest = max(longest, length)
        if current:
            batches.append(current)
        return batches

    def _prepare(self, question: Question, series: Sequence[SeriesGroup]) -> _Prepared:
        started = time.perf_counter()
        options, seed = question_options(question, self.seed, self.shuffle)
        notes: dict[str, str] = {"option_order_seed": str(seed)}
        if not options:
            return _Prepared(question, options, seed, None, started, time.perf_counter() - started, notes)
        if len(series) != len(question.query_groups):
            raise ValueError(
                f"question {question.question_id}: {len(question.query_groups)} query groups but {len(series)} series given"
            )
        seen, steps_covered = self._seen(question, series)
        summary = None
        if self.with_series_metadata and seen:
            summary, meta_notes = series_metadata(seen, self.max_channel_names)
            notes.update(meta_notes)
        prompt = build_prompt(question, options, summary)
        images = self._images(seen)
        if self.image_dir is not None:
            notes["images"] = f"{len(images)}/{len(seen)}"
        prompt_ids = self.model.tokenize_prompt(prompt, self.system_prompt, n_images=len(images))
        encodings = [self._encode(group) for group in seen]
        for index, encoded in enumerate(encodings):
            notes.update(encoded.notes(prefix=f"g{index}."))
        inputs = self.model.build_inputs(encodings, prompt_ids, images=images or None)
        notes.update(
            ts_tokens=str(inputs.n_ts_tokens), separator_tokens=str(inputs.n_separator_tokens), text_tokens=str(inputs.n_text_tokens),
            image_tokens=str(inputs.n_image_tokens),
        )
        policies = {encoded.policy for encoded in encodings}
        use = InputUse(
            variates_used=sum(encoded.n_variates for encoded in encodings),
            variates_total=sum(group.n_variates for group in series),
            steps_used=sum(steps_covered) if self.input_policy == "reference" else sum(e.steps_encoded for e in encodings),
            steps_total=sum(group.n_steps for group in series),
            context_policy="reference" if self.input_policy == "reference" else (policies.pop() if len(policies) == 1 else "mixed"),
            context_windows=sum(encoded.n_windows for encoded in encodings),
            channels_listed=sum(min(self.max_channel_names, g.n_variates) for g in seen) if self.with_series_metadata else 0,
            channels_total=sum(group.n_variates for group in series),
            images_given=len(images),
        )
        return _Prepared(question, options, seed, inputs, started, time.perf_counter() - started, notes, use)

    def _seen(self, question: Question, series: Sequence[SeriesGroup]) -> tuple[list[SeriesGroup], list[int]]:
        """The groups the model is given (all of them, as they are, by default), and the original steps each covers."""
        if self.input_policy == "full" or not series:
            return list(series), [group.n_steps for group in series]
        limit = REFERENCE_MAX_VARIATES_TIER3 if question.category in _TIER3_CATEGORIES else REFERENCE_MAX_VARIATES
        view, covered = reference_view(series[0], limit)
        return [view], [covered]

    def _images(self, series: Sequence[SeriesGroup]) -> list[Any]:
        """Each group's plot {image_dir}/{group_id}.png, where present (PIL images)."""
        if self.image_dir is None:
            return []

        from PIL import Image

        images = []
        for group in series:
            path = os.path.join(self.image_dir, f"{group.group_id}.png")
            if os.path.isfile(path):
                with Image.open(path) as image:
                    images.append(image.convert("RGB"))
        return images

    def _generate(self, batch: list[_Prepared]) -> list[Answer]:
        ready = [item for item in batch if item.inputs is not None]
        out: dict[int, Answer] = {}
        if ready:
            started = time.perf_counter()
            generated = self.model.generate([item.inputs for item in ready], max_new_tokens=self.max_new_tokens)
            share = (time.perf_counter() - started) / len(ready)
            for item, generation in zip(ready, generated):
                text = self.model.decode(generation.token_ids)
                notes = dict(item.notes, batch_size=str(len(ready)))
                parsed, status = parse_reply(text, item.options, generation.finished)
                if not generation.finished:
                    notes["truncated_at"] = str(self.max_new_tokens)
                out[id(item)] = Answer(
                    raw_response=text,
                    parsed_answer=parsed,
                    parse_status=status,
                    latency_s=item.prep_s + share,
                    tokens_in=item.inputs.length,
                    tokens_out=len(generation.token_ids),
                    notes=notes,
                    inputs=item.use,
                )
        return [out[id(item)] if item.inputs is not None else self._no_options(item) for item in batch]

    @staticmethod
    def _no_options(item: _Prepared) -> Answer:
        return Answer(
            raw_response="",
            parsed_answer=None,
            parse_status="unmatched",
            latency_s=item.prep_s,
            tokens_in=0,
            tokens_out=0,
            notes=dict(item.notes, error="question has no options"),
            inputs=item.use,
        )


def plan_visible_gpus(settings: HybridSettings, dtype: torch.dtype) -> PlacementPlan:
    """The checked placement of the artifact over every GPU this process sees (a Ray actor sees its own G)."""
    from transformers import AutoConfig

    config, _ = read_artifact_config(settings.model, settings.toto, **settings.config_overrides())
    vlm_config = AutoConfig.from_pretrained(os.path.join(settings.model, config.vlm_path))
    budgets = visible_gpu_budgets(settings.gpu_memory_gib, settings.gpu_memory_fraction)
    hidden = int(getattr(vlm_config, "text_config", vlm_config).hidden_size)
    question_tokens = settings.max_question_tokens or estimate_question_tokens(
        max_channel_names=settings.max_channel_names if settings.series_metadata else 0, images=2 if settings.image_dir else 0
    )
    return plan_placement(
        vlm_config, budgets, dtype=dtype, ts_bytes=ts_module_bytes(config, hidden, dtype), question_tokens=question_tokens,
        max_new_tokens=settings.max_new_tokens, batch_size=settings.batch_size,
    )


def create_hybrid_answerer(spec: Any) -> HybridAnswerer:
    """Factory for the answerer registry: settings from ``spec.params`` (model/configuration.HybridSettings)."""
    settings = parse_settings(HybridSettings, dict(spec.params), spec.name)
    if not os.path.isdir(settings.model):
        raise SettingsError(f"answerer {spec.name}: setting model={settings.model!r}: not a directory here")
    if settings.threads:
        torch.set_num_threads(settings.threads)
    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)
    plan = None
    if device.type == "cuda" and settings.device_map == "auto":
        plan = plan_visible_gpus(settings, dtype)  # PlacementError (with the sizes) before any weight loads
        device = torch.device(f"cuda:{plan.ts_device}")
        print(f"arfscore hybrid: GPU plan\n{plan.describe()}", flush=True)
    model = HybridModel.from_pretrained(
        settings.model, device=device, dtype=dtype, device_map=plan.device_map if plan else None, toto_path=settings.toto,
        **settings.config_overrides(),
    )
    return HybridAnswerer(
        model,
        name=spec.name,
        seed=spec.seed,
        max_new_tokens=settings.max_new_tokens,
        batch_size=settings.batch_size,
        batch_token_budget=plan.batch_token_budget if plan else None,
        shuffle=settings.shuffle_options,
        with_series_metadata=settings.series_metadata,
        max_channel_names=settings.max_channel_names,
        system_prompt=settings.system_prompt,
        image_dir=settings.image_dir,
        input_policy=settings.input_policy,
    )


create_hybrid_answerer.settings = HybridSettings  # type: ignore[attr-defined]  # for "model.pipeline:create_hybrid_answerer"
