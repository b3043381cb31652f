"""Answerers: a small registry of question -> Answer strategies, each built once from a frozen AnswererSpec.

Pure compute, no I/O: the caller passes the question and one dense SeriesGroup per query group.

Registered here:
- ``random``: a seeded choice; it depends only on (seed, question_id), never on order or on which actor answers.
- ``frequent``: the ARFBench "most frequent" baseline: per category, the option that is most often the correct
  answer in the corpus (``AnswererSpec.answer_priors``, see :func:`answer_priors`).
- ``stat``: a statistical answerer for all eight categories (model/stat_features.py does the numbers: robust
  baseline, GLR window scan over all variates, change-point placement, shape features). Options are read by
  meaning: timestamps, "before the earliest", "not resolved", numbers, channel lists, anomaly kinds, yes/no.

Other modules add answerers with :func:`register_answerer` (model/pipeline.py adds "hybrid"). A spec name of the
form ``"package.module:factory"`` names a factory by import path (plugins, tests); it must be importable where
the answerer is created.

Settings: each answerer names a frozen settings dataclass (``register_answerer(name, factory, settings=Cls)``;
a plugin factory may carry a ``settings`` attribute). ``AnswererSpec.params`` holds them as text; the driver
checks them with :func:`validate_answerer_params` before any work starts, and the factory builds the same object
with :func:`answerer_settings`. A plugin without a settings class gets its params as free text.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import random
import re
import time
import weakref
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol, runtime_checkable

import numpy as np

from model.configuration import HybridSettings, VLMSettings
from model.records import CATEGORIES, Answer, InputUse, Question, SeriesGroup, canonical_category
from model.settings import NoSettings, parse_settings, settings_dict, settings_text
from model.stat_features import GroupAnalysis, StatConfig, analyze_group

__all__ = [
    "Answerer",
    "AnswererSpec",
    "FrequentAnswerer",
    "RandomAnswerer",
    "StatAnswerer",
    "answer_priors",
    "answerer_settings",
    "create_answerer",
    "register_answerer",
    "registered_answerers",
    "resolved_settings",
    "settings_fields",
    "settings_roles",
    "validate_answerer_params",
]


@runtime_checkable
class Answerer(Protocol):
    name: str

    def answer(self, question: Question, series: Sequence[SeriesGroup]) -> Answer: ...


@dataclass(frozen=True)
class _Registered:
    factory: Callable[["AnswererSpec"], Answerer]
    settings: type | None  # frozen settings dataclass; None = free-form text params


_REGISTRY: dict[str, _Registered] = {}
_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def registered_answerers() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def _is_import_path(name: str) -> bool:
    return bool(_IMPORT_PATH.match(name))


@dataclass(frozen=True)
class AnswererSpec:
    """How to build one answerer. Frozen and hashable; lists / dicts given for the tuple fields are normalised."""

    name: str
    seed: int = 0
    answer_priors: tuple[tuple[str, str, int], ...] = ()  # (category, correct answer text, count)
    params: tuple[tuple[str, str], ...] = ()  # free-form extra settings, e.g. (("model", "/models/x"),)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"answerer name must be a non-empty string, got {self.name!r}")
        if self.name not in _REGISTRY and not _is_import_path(self.name):
            raise ValueError(
                f"unknown answerer {self.name!r}; registered: {', '.join(registered_answerers())} "
                "(or give a factory as 'package.module:function')"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        object.__setattr__(self, "seed", int(self.seed))
        priors = []
        for entry in self.answer_priors:
            if len(entry) != 3:
                raise ValueError(f"answer_priors entries are (category, answer, count), got {entry!r}")
            category, text, count = entry
            if not isinstance(category, str) or not isinstance(text, str):
                raise ValueError(f"answer_priors category and answer must be strings, got {entry!r}")
            if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
                raise ValueError(f"answer_priors count must be an integer >= 0, got {entry!r}")
            priors.append((category, text, int(count)))
        object.__setattr__(self, "answer_priors", tuple(priors))
        raw_params = self.params.items() if isinstance(self.params, Mapping) else self.params
        params = []
        for entry in raw_params:
            if len(entry) != 2 or not all(isinstance(part, str) for part in entry):
                raise ValueError(f"params entries are (key, value) strings, got {entry!r}")
            params.append((entry[0], entry[1]))
        keys = [key for key, _ in params]
        duplicated = sorted({key for key in keys if keys.count(key) > 1})
        if duplicated:
            raise ValueError(f"params has duplicate keys {duplicated}")
        object.__setattr__(self, "params", tuple(sorted(params)))

    def param(self, key: str, default: str | None = None) -> str | None:
        return dict(self.params).get(key, default)


def register_answerer(name: str, factory: Callable[[AnswererSpec], Answerer], settings: type | None = None) -> None:
    """Add (or replace) an answerer factory under `name`, with its frozen settings dataclass."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z][\w\-]*", name):
        raise ValueError(f"answerer names are identifiers like 'hybrid', got {name!r}")
    if not callable(factory):
        raise TypeError(f"factory for {name!r} is not callable")
    if settings is not None and not dataclasses.is_dataclass(settings):
        raise TypeError(f"settings for {name!r} must be a dataclass, got {settings!r}")
    _REGISTRY[name] = _Registered(factory, settings)


def _lookup(name: str) -> _Registered:
    """The registry entry, or the factory a 'package.module:factory' path names (its ``settings`` attribute)."""
    entry = _REGISTRY.get(name)
    if entry is not None:
        return entry
    if not _is_import_path(name):
        raise ValueError(f"unknown answerer {name!r}; registered: {', '.join(registered_answerers())}")
    module_name, attribute = name.split(":", 1)
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"answerer {name!r}: cannot import the factory ({error})") from error
    settings = getattr(factory, "settings", None)
    return _Registered(factory, settings if dataclasses.is_dataclass(settings) else None)


def create_answerer(spec: AnswererSpec) -> Answerer:
    """Build the answerer a spec names (registry first, then a 'package.module:factory' import path)."""
    return _lookup(spec.name).factory(spec)


def validate_answerer_params(name: str, params: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """Check settings for answerer ``name`` against its settings class (SettingsError naming a bad key or value);
    returns them as sorted (key, text) pairs for :class:`AnswererSpec`. Free-form for plugins without a class."""
    text = {str(key): settings_text(value) for key, value in params.items()}
    settings = _lookup(name).settings
    if settings is not None:
        parse_settings(settings, text, name)
    return tuple(sorted(text.items()))


def settings_fields(name: str) -> tuple[str, ...] | None:
    """The setting names answerer ``name`` accepts, or None when its params are free-form."""
    settings = _lookup(name).settings
    return None if settings is None else tuple(f.name for f in dataclasses.fields(settings))


def settings_roles(name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(settings that are local paths, settings that are artifact directories whose content defines the run) of
    answerer ``name``: its settings class's PATHS and ARTIFACTS (none for free-form plugins)."""
    settings = _lookup(name).settings
    return tuple(getattr(settings, "PATHS", ())), tuple(getattr(settings, "ARTIFACTS", ()))


def answerer_settings(spec: AnswererSpec) -> Any:
    """The answerer's settings object built from ``spec.params`` (its factory calls this)."""
    settings = _lookup(spec.name).settings
    if settings is None:
        raise ValueError(f"answerer {spec.name!r} has no settings class")
    return parse_settings(settings, dict(spec.params), spec.name)


def resolved_settings(spec: AnswererSpec) -> dict[str, Any]:
    """Every setting that defines the answers, defaults included (the run manifest records these): all of them but
    those the settings class lists in NOT_DEFINING (how requests are made, threads, caches), never ``threads``."""
    settings = _lookup(spec.name).settings
    values = settings_dict(answerer_settings(spec)) if settings is not None else dict(spec.params)
    skip = {"threads", *getattr(settings, "NOT_DEFINING", ())}
    return {key: value for key, value in values.items() if key not in skip}


DEFAULT_SHARD_SIZE = 16  # questions per shard unless the answerer asks for more (a shard is the unit of resume)


def default_shard_size(spec: AnswererSpec) -> int:
    """Questions per shard when the user gives none: the settings' ``shard_size_hint()`` where the answerer has one
    (an API answerer wants enough questions per shard to keep ``max_concurrency`` requests in flight), else 16."""
    settings = _lookup(spec.name).settings
    hint = getattr(settings, "shard_size_hint", None) if settings is not None else None
    return int(answerer_settings(spec).shard_size_hint()) if hint is not None else DEFAULT_SHARD_SIZE


def answer_priors(questions: Iterable[Question]) -> tuple[tuple[str, str, int], ...]:
    """(category, correct answer, count) over a corpus, sorted by category, then count (desc), then text."""
    counts = Counter((question.category, question.correct_answer) for question in questions)
    return tuple(sorted(((c, a, n) for (c, a), n in counts.items()), key=lambda item: (item[0], -item[2], item[1])))


def _answer(
    option: str | None, reasoning: str, started: float, inputs: InputUse, notes: dict[str, str] | None = None
) -> Answer:
    raw = json.dumps({"answer": option, "reasoning": reasoning}, ensure_ascii=False)
    return Answer(
        raw_response=raw,
        parsed_answer=option,
        parse_status="direct" if option is not None else "unmatched",
        latency_s=time.perf_counter() - started,
        notes=notes or {},
        inputs=inputs,
    )


# ----------------------------------------------------------------------------------------------------
# Baselines
# ----------------------------------------------------------------------------------------------------


class RandomAnswerer:
    """Uniform choice seeded by (seed, question_id): order- and actor-independent."""

    def __init__(self, spec: AnswererSpec) -> None:
        self.name = spec.name
        self.seed = spec.seed

    def answer(self, question: Question, series: Sequence[SeriesGroup]) -> Answer:
        started = time.perf_counter()
        if not question.options:
            return _answer(None, "no options", started, InputUse.nothing(series))
        rng = random.Random(self.seed * 1_000_003 + int(question.question_id))
        choice = rng.choice(list(question.options))
        return _answer(choice, f"uniform choice, seed {self.seed}", started, InputUse.nothing(series))


class FrequentAnswerer:
    """ARFBench's 'most frequent' baseline: the option most often correct in the question's category."""

    def __init__(self, spec: AnswererSpec) -> None:
        self.name = spec.name
        self.by_category: dict[str, Counter[str]] = {}
        for category, text, count in spec.answer_priors:
            key = canonical_category(category) or category
            self.by_category.setdefault(key, Counter())[text] += count

    def answer(self, question: Question, series: Sequence[SeriesGroup]) -> Answer:
        started = time.perf_counter()
        use = InputUse.nothing(series)
        if not question.options:
            return _answer(None, "no options", started, use)
        counts = self.by_category.get(question.category) or self.by_category.get(canonical_category(question.category) or "", Counter())
        if counts:
            mode_text = min(counts.items(), key=lambda item: (-item[1], item[0]))[0]
            if mode_text in question.options:
                return _answer(mode_text, f"most frequent correct answer in {question.category} ({counts[mode_text]}x)", started, use)
            seen = [(counts[o], o) for o in question.options if counts.get(o, 0) > 0]
            if seen:
                best = min(seen, key=lambda item: (-item[0], item[1]))[1]
                return _answer(best, f"option most often correct in {question.category} ({counts[best]}x)", started, use)
        return _answer(question.options[0], f"no prior for {question.category}: first option", started, use)


# ----------------------------------------------------------------------------------------------------
# Reading options by meaning
# ----------------------------------------------------------------------------------------------------

_TIMESTAMP = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})[ T](\d{1,2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?")
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+")
_NO_ANOMALY = re.compile(r"\bno\s+(?:\w+\s+)?anomal|\bnot\s+anomalous\b|\bno\s+incident\b|\bnone\b|\bnormal\s+behaviou?r\b")
_KIND_KEYWORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("seasonality", ("seasonal", "periodic", "cyclic", "cycle")),
    ("variance", ("variance", "volatil", "variab", "noise", "fluctuat")),
    ("trend", ("trend", "drift", "gradual", "ramp")),
    ("spike", ("spike", "transient", "dip", "outlier", "burst", "blip")),
    ("level_shift", ("level shift", "shift", "step change", "step", "plateau")),
)


def _lower(text: str) -> str:
    return " ".join(str(text).lower().split())


def _is_no_anomaly(text: str) -> bool:
    return bool(_NO_ANOMALY.search(_lower(text)))


def _timestamp_ns(text: str) -> int | None:
    match = _TIMESTAMP.search(text)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(part) if part else 0 for part in match.groups())
    try:
        stamp = datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc)
    except ValueError:
        return None
    return int(stamp.timestamp()) * 1_000_000_000


def _first_number(text: str) -> float | None:
    match = _NUMBER.search(text)
    if match is None:
        return None
    try:
        return float(match.group(0).replace(",", ""))
    except ValueError:
        return None


def _option_kind(text: str) -> str | None:
    low = _lower(text)
    if _is_no_anomaly(low):
        return "none"
    for kind, keywords in _KIND_KEYWORDS:
        if any(keyword in low for keyword in keywords):
            return kind
    return None


def _yes_no(text: str) -> str | None:
    low = _lower(text)
    if low.startswith("yes") or low.startswith("true"):
        return "yes"
    if low.startswith("no") or low.startswith("false") or _is_no_anomaly(low):
        return "no"
    return None


def _worse_direction(question_text: str) -> tuple[int, str]:
    """+1 when higher values are worse, -1 when lower are, from the caption; else guessed from the metric name."""
    low = _lower(question_text)
    match = re.search(
        r"\b(higher|larger|greater|increas\w*|lower|smaller|decreas\w*)\s+(?:values?\s+|numbers?\s+)?(?:is|are)\s+(worse|bad|better|good)\b", low
    )
    if match:
        up = match.group(1).startswith(("high", "larg", "great", "increas"))
        bad = match.group(2) in ("worse", "bad")
        return (1 if up == bad else -1), "caption"
    good_metric = re.search(r"healthy|throughput|success|hits|availability|uptime|requests?\b|count\b", low)
    if good_metric and not re.search(r"error|fail|latenc|duration|lag|cpu|memory", low):
        return -1, "metric name (lower is worse)"
    return 1, "default (higher is worse)"


def _match_channels(text: str, names: Sequence[str], name_index: Mapping[str, int]) -> tuple[set[int], int]:
    """Variate rows named by a channel-list option, and the number of listed tokens that match no variate."""
    tokens = [token.strip().strip("'\"`[]") for token in re.split(r"\s+and\s+|;\s*|,\s+(?=[A-Za-z_])|\n", text)]
    tokens = [token for token in tokens if token]
    rows: set[int] = set()
    unknown = 0
    for token in tokens:
        row = name_index.get(token)
        if row is None:
            row = name_index.get(token.lower())
        if row is None:
            unknown += 1
        else:
            rows.add(row)
    if unknown and names:
        # Fall back to substring search (longest names first, so "host:a1" is not read as "host:a").
        rows = set()
        remaining = text
        for name in sorted(names, key=len, reverse=True):
            if name and name in remaining:
                rows.add(name_index[name])
                remaining = remaining.replace(name, " ")
        unknown = 0 if rows else len(tokens)
    return rows, unknown


# ----------------------------------------------------------------------------------------------------
# The statistical answerer
# ----------------------------------------------------------------------------------------------------

class StatAnswerer:
    """Statistics over every variate of every query group (model/stat_features.py), then the option that fits.

    Analyses are cached per group (by identity of the values array, held weakly) so several questions on one
    group cost one analysis."""

    def __init__(self, spec: AnswererSpec) -> None:
        self.name = spec.name
        self.config = answerer_settings(spec)
        self._cache: OrderedDict[tuple, tuple[weakref.ref, GroupAnalysis]] = OrderedDict()

    def analyze(self, group: SeriesGroup) -> GroupAnalysis:
        key = (group.group_id, id(group.values), tuple(group.values.shape), int(group.start_ns), int(group.interval_s))
        hit = self._cache.get(key)
        if hit is not None and hit[0]() is group.values:
            self._cache.move_to_end(key)
            return hit[1]
        analysis = analyze_group(group, self.config)
        try:
            ref = weakref.ref(group.values)
        except TypeError:
            return analysis
        self._cache[key] = (ref, analysis)
        while len(self._cache) > 4:
            self._cache.popitem(last=False)
        return analysis

    def answer(self, question: Question, series: Sequence[SeriesGroup]) -> Answer:
        started = time.perf_counter()
        options = list(question.options)
        if not options:
            return _answer(None, "no options", started, InputUse.everything(series))
        if not series:
            return _answer(options[0], "no series data: first option", started, InputUse.everything(series))
        analyses = [self.analyze(group) for group in series]
        handler = _HANDLERS.get(canonical_category(question.category) or question.category, _fallback)
        option, reason = handler(question, options, list(series), analyses, self.config)
        if option not in options:  # defensive: never return anything but an option
            option, reason = options[0], f"{reason}; fell back to the first option"
        blocks = sorted({a.notes.get("screen_block_steps", "1") for a in analyses} - {"1"})
        if blocks:
            reason += f"; scan on {'/'.join(blocks)}-step block sums (all variates and steps)"
        notes = {"analysis": " | ".join(a.summary() for a in analyses)}
        for index, analysis in enumerate(analyses):
            for key, value in analysis.notes.items():
                notes[f"g{index}.{key}"] = value
        return _answer(option, reason, started, InputUse.everything(series), notes)


Handler = Callable[[Question, list[str], list[SeriesGroup], list[GroupAnalysis], StatConfig], tuple[str, str]]


def _none_option(options: list[str]) -> str | None:
    return next((o for o in options if _is_no_anomaly(o)), None)


def _fallback(question, options, series, analyses, config) -> tuple[str, str]:
    return options[0], f"unknown category {question.category!r}: first option"


def _presence(question, options, series, analyses, config) -> tuple[str, str]:
    analysis = analyses[0]
    want = "yes" if any(a.detected for a in analyses) else "no"
    for option in options:
        if _yes_no(option) == want:
            return option, analysis.summary()
    return options[0], analysis.summary() + "; no yes/no option"


def _nearest(candidates: list[tuple[float, str]], position: float) -> str | None:
    if not candidates:
        return None
    return min(candidates, key=lambda item: (abs(item[0] - position), item[0]))[1]


def _option_steps(options: list[str], group: SeriesGroup) -> list[tuple[float, str]]:
    found = []
    for option in options:
        stamp = _timestamp_ns(option)
        if stamp is not None:
            found.append(((stamp - group.start_ns) / (group.interval_s * 1e9), option))
    return found


def _start(question, options, series, analyses, config) -> tuple[str, str]:
    group, analysis = series[0], analyses[0]
    none = _none_option(options)
    if not analysis.detected:
        return (none or options[0]), analysis.summary()
    before = next((o for o in options if "before" in _lower(o) and _timestamp_ns(o) is None), None)
    stamped = _option_steps(options, group)
    tolerance = max(1.0, 0.01 * analysis.n_steps)
    start = float(analysis.start)
    reason = f"{analysis.summary()}; start step {analysis.start}"
    if before is not None and start <= tolerance:
        return before, reason + " (at the series start)"
    candidates = stamped + ([(-1.0, before)] if before is not None else [])
    return (_nearest(candidates, start) or options[0]), reason


def _end(question, options, series, analyses, config) -> tuple[str, str]:
    group, analysis = series[0], analyses[0]
    none = _none_option(options)
    if not analysis.detected:
        return (none or options[0]), analysis.summary()
    unresolved = next(
        (
            o for o in options
            if _timestamp_ns(o) is None
            and re.search(r"not\s+(?:yet\s+)?(?:resolved|recovered)|unresolved|ongoing|still|after the latest|never", _lower(o))
        ),
        None,
    )
    stamped = _option_steps(options, group)
    last = float(analysis.end - 1)
    reason = f"{analysis.summary()}; last anomalous step {analysis.end - 1}"
    tolerance = max(1.0, 0.01 * analysis.n_steps)
    if unresolved is not None and analysis.end >= analysis.n_steps - tolerance:
        return unresolved, reason + " (lasts to the end)"
    candidates = stamped + ([(float(analysis.n_steps), unresolved)] if unresolved is not None else [])
    return (_nearest(candidates, last) or options[0]), reason


def _categorization(question, options, series, analyses, config) -> tuple[str, str]:
    analysis = analyses[0]
    kinds = {option: _option_kind(option) for option in options}
    if not analysis.detected:
        none = next((o for o, k in kinds.items() if k == "none"), None)
        return (none or options[0]), analysis.summary()
    scored = [(analysis.kind_scores.get(kind, -1.0), option) for option, kind in kinds.items() if kind not in (None, "none")]
    if not scored:
        return options[0], analysis.summary() + "; no option names a kind"
    best = max(scored, key=lambda item: item[0])[1]
    detail = ", ".join(f"{k}={v:.2f}" for k, v in sorted(analysis.kind_scores.items(), key=lambda kv: -kv[1]))
    return best, f"{analysis.summary()}; kind scores {detail}"


def _magnitude(question, options, series, analyses, config) -> tuple[str, str]:
    analysis = analyses[0]
    none = _none_option(options)
    if not analysis.detected:
        return (none or options[0]), analysis.summary()
    numbered = [(value, option) for option in options if option != none and (value := _first_number(option)) is not None]
    if not numbered:
        return options[0], analysis.summary() + "; no numeric option"
    estimate = analysis.magnitude_pct
    if estimate is None or not math.isfinite(estimate):
        return sorted(numbered)[len(numbered) // 2][1], analysis.summary() + "; baseline near zero: middle option"

    def distance(item: tuple[float, str]) -> float:
        value = abs(item[0])
        if value <= 0 or estimate <= 0:
            return abs(value - estimate)
        return abs(math.log(value) - math.log(estimate))

    best = min(numbered, key=lambda item: (distance(item), item[0]))[1]
    return best, f"{analysis.summary()}; estimated {estimate:.1f}%"


def _identification(question, options, series, analyses, config) -> tuple[str, str]:
    group, analysis = series[0], analyses[0]
    none = _none_option(options)
    if not analysis.detected:
        return (none or options[0]), analysis.summary()
    names = group.variate_names
    name_index = {name: row for row, name in enumerate(names)}
    name_index.update({name.lower(): row for row, name in enumerate(names) if name.lower() not in name_index})
    support = np.tanh(np.asarray(analysis.evidence, dtype=np.float64))
    scored = []
    for option in options:
        if option == none:
            continue
        rows, unknown = _match_channels(option, names, name_index)
        if not rows and not unknown:
            continue
        score = float(sum(support[row] for row in rows)) - 0.5 * unknown
        scored.append((score, -len(rows), option))
    flagged = [names[row] for row in analysis.flagged[:5]]
    reason = f"{analysis.summary()}; flagged {flagged}{' ...' if len(analysis.flagged) > 5 else ''}"
    if not scored:
        return (none or options[0]), reason + "; no option names a known channel"
    best = max(scored)
    if best[0] <= 0 and none is not None:
        return none, reason + "; no listed channel is anomalous"
    return best[2], reason


def _indicator(question, options, series, analyses, config) -> tuple[str, str]:
    analysis = analyses[0]
    none = _none_option(options)
    if not analysis.detected:
        return (none or options[0]), analysis.summary()
    worse, source = _worse_direction(question.question)
    degraded = analysis.direction == worse
    reason = f"{analysis.summary()}; {'higher' if worse > 0 else 'lower'} is worse ({source})"
    if not analysis.direction_known:
        reason += "; direction is a prior (symmetric anomaly)"
    bad, good = [], []
    for option in options:
        if option == none:
            continue
        low = _lower(option)
        if re.search(r"degrad|worse|deteriorat|negative impact|bad\b", low):
            bad.append(option)
        elif re.search(r"improv|better|recover|positive", low):
            good.append(option)
        elif _yes_no(option) == "yes":
            bad.append(option)
        elif _yes_no(option) == "no":
            good.append(option)
    pool = bad if degraded else good
    return (pool[0] if pool else options[0]), reason


def _correlation(question, options, series, analyses, config) -> tuple[str, str]:
    labels = {}
    for option in options:
        low = _lower(option)
        if re.search(r"either|neither|no anomal\w* in (?:both|any)", low) or (_is_no_anomaly(low) and "only" not in low):
            labels[option] = "neither"
        elif re.search(r"only one|one of the|just one|single", low):
            labels[option] = "one"
        elif re.search(r"different|not at the same|separate|unrelated|independent|lag", low):
            labels[option] = "different"
        elif re.search(r"same time|simultaneous|together|correlated|coincid|at once", low) or _yes_no(option) == "yes":
            labels[option] = "same"
    detected = [a for a in analyses if a.detected]
    summaries = " / ".join(a.summary() for a in analyses)
    if len(analyses) < 2:
        want = "one" if detected else "neither"
        reason = f"only one group given; {summaries}"
    elif len(detected) == 0:
        want, reason = "neither", summaries
    elif len(detected) == 1:
        want, reason = "one", summaries
    else:
        a, b = analyses[0], analyses[1]
        onset_a, onset_b = a.timestamp_ns(a.start), b.timestamp_ns(b.start)
        span_ns = min(a.n_steps * a.interval_s, b.n_steps * b.interval_s) * 1e9
        tolerance = max(config.same_time_fraction * span_ns, 1.5 * max(a.interval_s, b.interval_s) * 1e9)
        gap_s = abs(onset_a - onset_b) / 1e9
        want = "same" if abs(onset_a - onset_b) <= tolerance else "different"
        reason = f"{summaries}; onsets {gap_s:.0f} s apart (same-time tolerance {tolerance / 1e9:.0f} s)"
    pick = next((o for o, label in labels.items() if label == want), None)
    return (pick or options[0]), reason


_HANDLERS: dict[str, Handler] = {
    "Anomaly Presence": _presence,
    "Anomaly Start": _start,
    "Anomaly End": _end,
    "Anomaly Categorization": _categorization,
    "Anomaly Magnitude": _magnitude,
    "Anomaly Identification": _identification,
    "Anomaly Indicator": _indicator,
    "Anomaly Correlation": _correlation,
}
assert set(_HANDLERS) == set(CATEGORIES)

register_answerer("random", RandomAnswerer, settings=NoSettings)
register_answerer("frequent", FrequentAnswerer, settings=NoSettings)
register_answerer("stat", StatAnswerer, settings=StatConfig)


def _create_hybrid(spec: AnswererSpec) -> Answerer:
    # Imported on first use: torch + transformers + Toto load only in actors that run the hybrid model.
    from model.pipeline import create_hybrid_answerer

    return create_hybrid_answerer(spec)


register_answerer("hybrid", _create_hybrid, settings=HybridSettings)


def _create_vlm(spec: AnswererSpec) -> Answerer:
    from model.vlm import create_vlm_answerer  # torch + transformers load only where the model runs

    return create_vlm_answerer(spec)


register_answerer("vlm", _create_vlm, settings=VLMSettings)
