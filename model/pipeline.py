"""The hybrid answerer: question + series -> prompt -> Toto-1.0-QA generation -> parsed answer.

A thin pipeline in the style of chronos-forecasting: callers pass Question / SeriesGroup records and get Answer
records; tensors stay inside model/modeling_hybrid.py.

    question -> options (optionally shuffled with a recorded per-question seed)
             -> prompt text (model/prompts.build_prompt; the series metadata as its summary) -> chat template
             -> variate tokens of EVERY group (both groups for pair questions) + prompt tokens
             -> greedy generation -> model/parsing.parse_answer -> Answer

Params (``AnswererSpec.params``, all strings):
    model               artifact directory (required): config.json, vlm/, ts_modules.pt, toto/
    device              "cuda" / "cuda:1" / "cpu" (default: cuda if available, else cpu): Toto + small modules, and
                        the VLM unless device_map is given
    device_map          "auto": shard the VLM over all visible GPUs (transformers' device_map; needs the
                        `accelerate` package, a project dependency)
    dtype               auto (bf16 on CUDA, fp32 on CPU) | float32 | bfloat16 | float16
    max_new_tokens      default 64
    batch_size          questions generated together by answer_batch (left-padded), default 8
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
    long_context_policy, max_context_steps, max_variates_per_chunk, patches_per_spacewise_chunk, nan_policy:
                        HybridConfig overrides (model/configuration.py)

Unknown params are an error (a typo must not silently change a run).
"""

from __future__ import annotations

import time
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import torch

from model.modeling_hybrid import HybridInputs, HybridModel
from model.parsing import parse_answer
from model.prompts import NO_SHUFFLE, build_prompt, option_seed, shuffle_options
from model.records import Answer, Question, SeriesGroup
from model.toto_encoder import EncodedSeries

__all__ = ["HybridAnswerer", "create_hybrid_answerer", "series_metadata"]

_CONFIG_OVERRIDES: dict[str, type] = {
    "long_context_policy": str,
    "max_context_steps": int,
    "max_variates_per_chunk": int,
    "patches_per_spacewise_chunk": int,
    "nan_policy": str,
}
_KNOWN_PARAMS = {
    "model", "device", "device_map", "dtype", "max_new_tokens", "batch_size", "shuffle_options", "series_metadata",
    "max_channel_names", "system_prompt", "toto", "image_dir", "threads", *_CONFIG_OVERRIDES,
}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _as_bool(key: str, value: str) -> bool:
    low = value.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(f"hybrid answerer: param {key}={value!r} is not true/false")


def _as_int(key: str, value: str, minimum: int = 1) -> int:
    try:
        number = int(value)
    except ValueError as error:
        raise ValueError(f"hybrid answerer: param {key}={value!r} is not an integer") from error
    if number < minimum:
        raise ValueError(f"hybrid answerer: param {key}={value!r} must be >= {minimum}")
    return number


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


@dataclass
class _Prepared:
    question: Question
    options: list[str]
    seed: int
    inputs: HybridInputs | None
    started: float
    prep_s: float
    notes: dict[str, str] = field(default_factory=dict)


class HybridAnswerer:
    """Answers questions with a loaded :class:`HybridModel` (see the module docstring for the settings)."""

    def __init__(
        self,
        model: HybridModel,
        *,
        name: str = "hybrid",
        seed: int = 0,
        max_new_tokens: int = 64,
        batch_size: int = 8,
        shuffle: bool = False,
        with_series_metadata: bool = True,
        max_channel_names: int = 1000,
        system_prompt: str | None = None,
        image_dir: str | None = None,
    ) -> None:
        self.name = name
        self.model = model
        self.seed = int(seed)
        self.max_new_tokens = int(max_new_tokens)
        self.batch_size = int(batch_size)
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
        for start in range(0, len(ready), self.batch_size):
            chunk = ready[start : start + self.batch_size]
            for i, answer in zip(chunk, self._generate([prepared[i] for i in chunk])):
                answers[i] = answer
        return [answer for answer in answers if answer is not None]

    def _prepare(self, question: Question, series: Sequence[SeriesGroup]) -> _Prepared:
        started = time.perf_counter()
        seed = option_seed(self.seed, question.question_id) if self.shuffle else NO_SHUFFLE
        options, seed = shuffle_options(question.options, seed)
        notes: dict[str, str] = {"option_order_seed": str(seed)}
        if not options:
            return _Prepared(question, options, seed, None, started, time.perf_counter() - started, notes)
        if len(series) != len(question.query_groups):
            raise ValueError(
                f"question {question.question_id}: {len(question.query_groups)} query groups but {len(series)} series given"
            )
        summary = None
        if self.with_series_metadata and series:
            summary, meta_notes = series_metadata(series, self.max_channel_names)
            notes.update(meta_notes)
        prompt = build_prompt(question, options, summary)
        images = self._images(series)
        if self.image_dir is not None:
            notes["images"] = f"{len(images)}/{len(series)}"
        prompt_ids = self.model.tokenize_prompt(prompt, self.system_prompt, n_images=len(images))
        encodings = [self._encode(group) for group in series]
        for index, encoded in enumerate(encodings):
            notes.update(encoded.notes(prefix=f"g{index}."))
        inputs = self.model.build_inputs(encodings, prompt_ids, images=images or None)
        notes.update(
            ts_tokens=str(inputs.n_ts_tokens), separator_tokens=str(inputs.n_separator_tokens), text_tokens=str(inputs.n_text_tokens),
            image_tokens=str(inputs.n_image_tokens),
        )
        return _Prepared(question, options, seed, inputs, started, time.perf_counter() - started, notes)

    def _images(self, series: Sequence[SeriesGroup]) -> list[Any]:
        """Each group's plot {image_dir}/{group_id}.png, where present (PIL images)."""
        if self.image_dir is None:
            return []
        import os

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
            for item, token_ids in zip(ready, generated):
                text = self.model.decode(token_ids)
                parsed, status = parse_answer(text, item.options)
                notes = dict(item.notes, batch_size=str(len(ready)))
                out[id(item)] = Answer(
                    raw_response=text,
                    parsed_answer=parsed,
                    parse_status=status,
                    latency_s=item.prep_s + share,
                    tokens_in=item.inputs.length,
                    tokens_out=len(token_ids),
                    notes=notes,
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
        )


def create_hybrid_answerer(spec: Any) -> HybridAnswerer:
    """Factory for the answerer registry: ``register_answerer("hybrid", create_hybrid_answerer)``."""
    params = dict(spec.params)
    unknown = sorted(set(params) - _KNOWN_PARAMS)
    if unknown:
        raise ValueError(f"hybrid answerer: unknown param(s) {unknown}; known: {sorted(_KNOWN_PARAMS)}")
    model_dir = params.get("model")
    if not model_dir:
        raise ValueError(
            "hybrid answerer: params['model'] is required: the Toto-1.0-QA artifact directory "
            "(config.json, vlm/, ts_modules.pt, toto/); `arfscore make-tiny-model DIR` writes a random tiny one"
        )
    import os

    if not os.path.isdir(model_dir):
        raise ValueError(f"hybrid answerer: params['model']={model_dir!r} is not a directory")
    if params.get("threads"):
        torch.set_num_threads(_as_int("threads", params["threads"]))
    overrides = {key: kind(params[key]) if kind is str else _as_int(key, params[key]) for key, kind in _CONFIG_OVERRIDES.items() if key in params}
    device = params.get("device") or None
    device_map = params.get("device_map") or None
    if device_map is not None and device_map != "auto":
        raise ValueError(f"hybrid answerer: param device_map={device_map!r}: only 'auto' is supported")
    if device is None and device_map == "auto" and torch.cuda.is_available():
        device = "cuda:0"
    model = HybridModel.from_pretrained(
        model_dir,
        device=device,
        dtype=params.get("dtype") or None,
        device_map=device_map,
        toto_path=params.get("toto") or None,
        **overrides,
    )
    return HybridAnswerer(
        model,
        name=spec.name,
        seed=spec.seed,
        max_new_tokens=_as_int("max_new_tokens", params.get("max_new_tokens", "64")),
        batch_size=_as_int("batch_size", params.get("batch_size", "8")),
        shuffle=_as_bool("shuffle_options", params.get("shuffle_options", "false")),
        with_series_metadata=_as_bool("series_metadata", params.get("series_metadata", "true")),
        max_channel_names=_as_int("max_channel_names", params.get("max_channel_names", "1000"), minimum=0),
        system_prompt=params.get("system_prompt") or None,
        image_dir=params.get("image_dir") or None,
    )
