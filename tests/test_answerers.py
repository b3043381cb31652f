"""Answerer registry, the random / frequent baselines, and the statistical answerer on hand-built series."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timezone

import numpy as np
import pytest

import model.answerers as answerers
from model.answerers import AnswererSpec, answer_priors, create_answerer, register_answerer, registered_answerers
from model.records import CATEGORIES, Answer, Question, SeriesGroup
from model.stat_features import StatConfig, analyze_group

START_NS = int(datetime(2024, 5, 1, tzinfo=timezone.utc).timestamp()) * 1_000_000_000
PRESENCE = ("Yes, there is an anomaly in the time-series", "No, there is no anomaly in the time-series")
KINDS = ("Level Shift", "Transient Spike", "Change in Trend", "Change in Seasonality", "Change in Variance", "No Anomaly")
CORRELATION = (
    "Yes, both series show an anomaly at the same time",
    "No, the anomalies occur at different times",
    "No, only one of the series shows an anomaly",
    "No anomaly in either series",
)
INDICATOR = ("Yes, the anomaly indicates a degradation", "No, the anomaly indicates an improvement", "No Anomaly")


# ----------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------


def make_group(values, *, names=None, interval_s=60, group_id="g_0") -> SeriesGroup:
    values = np.asarray(values, dtype=np.float32)
    if values.ndim == 1:
        values = values[None, :]
    names = tuple(names) if names is not None else tuple(f"service:s{i:02d}" for i in range(values.shape[0]))
    return SeriesGroup(group_id, values, names, START_NS, interval_s)


def noisy(n_variates=4, n_steps=1000, seed=0, level=100.0, noise=2.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return level + noise * rng.standard_normal((n_variates, n_steps))


def stamp(group: SeriesGroup, step: int) -> str:
    return datetime.fromtimestamp(group.timestamp_ns(step) / 1e9, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def question(category: str, options, correct=None, text="Question?", groups=("g_0",), qid=0) -> Question:
    options = tuple(options)
    return Question(qid, text, category, "Tier 2", options, correct if correct is not None else options[0], tuple(groups))


def stat_answer(q: Question, *groups: SeriesGroup) -> Answer:
    answer = create_answerer(AnswererSpec("stat")).answer(q, list(groups))
    assert answer.parsed_answer in q.options
    assert answer.parse_status == "direct"
    payload = json.loads(answer.raw_response)
    assert payload["answer"] == answer.parsed_answer and payload["reasoning"]
    assert answer.latency_s >= 0
    return answer


def level_shift_group(start=300, end=None, size=50.0, variates=(2,), n_variates=4, n_steps=1000, seed=0) -> SeriesGroup:
    values = noisy(n_variates, n_steps, seed)
    for v in variates:
        values[v, start:end] += size
    return make_group(values)


# ----------------------------------------------------------------------------------------------------
# registry and spec
# ----------------------------------------------------------------------------------------------------


def test_registry_lists_the_builtin_answerers_and_rejects_unknown_names():
    assert {"random", "frequent", "stat"} <= set(registered_answerers())
    with pytest.raises(ValueError) as error:
        AnswererSpec(name="oracle")
    for name in ("random", "frequent", "stat"):
        assert name in str(error.value)
    with pytest.raises(ValueError):
        AnswererSpec(name="")


def test_spec_is_frozen_hashable_and_normalises_its_fields():
    spec = AnswererSpec("stat", seed=3, answer_priors=[["Anomaly Presence", "Yes", 4]], params={"b": "2", "a": "1"})
    assert spec.params == (("a", "1"), ("b", "2"))
    assert spec.answer_priors == (("Anomaly Presence", "Yes", 4),)
    assert spec.param("a") == "1" and spec.param("missing", "x") == "x"
    assert hash(spec) == hash(AnswererSpec("stat", seed=3, answer_priors=(("Anomaly Presence", "Yes", 4),), params=(("b", "2"), ("a", "1"))))
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.seed = 4  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"seed": "1"},
        {"seed": True},
        {"answer_priors": (("Anomaly Presence", "Yes"),)},
        {"answer_priors": (("Anomaly Presence", "Yes", -1),)},
        {"params": (("a", 1),)},
        {"params": (("a", "1"), ("a", "2"))},
    ],
)
def test_spec_validation_errors(kwargs):
    with pytest.raises(ValueError):
        AnswererSpec("random", **kwargs)


def test_register_answerer_and_import_path_factories(monkeypatch):
    class Constant:
        def __init__(self, spec):
            self.name = spec.name

        def answer(self, question, series):
            return Answer("{}", question.options[-1], "direct")

    monkeypatch.setattr(answerers, "_REGISTRY", dict(answerers._REGISTRY))
    register_answerer("constant", Constant)
    q = question("Anomaly Presence", PRESENCE)
    assert create_answerer(AnswererSpec("constant")).answer(q, []).parsed_answer == PRESENCE[-1]
    # "package.module:factory" names a factory by import path (how the flow's test answerers are given).
    spec = AnswererSpec("model.answerers:RandomAnswerer")
    assert create_answerer(spec).answer(q, []).parsed_answer in PRESENCE
    with pytest.raises(ValueError):
        create_answerer(AnswererSpec("no_such_module.anywhere:factory"))
    with pytest.raises(ValueError):
        register_answerer("not a name", Constant)
    with pytest.raises(ValueError):
        create_answerer(AnswererSpec("stat", params={"threads": "many"}))


# ----------------------------------------------------------------------------------------------------
# baselines
# ----------------------------------------------------------------------------------------------------


def _mixed_questions(count=40):
    return [question(CATEGORIES[i % 8], [f"option {j}" for j in range(2 + i % 4)], qid=100 + i) for i in range(count)]


def test_random_is_seeded_by_question_id_not_by_order():
    questions = _mixed_questions()
    forward = create_answerer(AnswererSpec("random", seed=7))
    backward = create_answerer(AnswererSpec("random", seed=7))
    first = {q.question_id: forward.answer(q, []).parsed_answer for q in questions}
    second = {q.question_id: backward.answer(q, []).parsed_answer for q in reversed(questions)}
    assert first == second
    assert all(first[q.question_id] in q.options for q in questions)
    other = create_answerer(AnswererSpec("random", seed=8))
    assert any(other.answer(q, []).parsed_answer != first[q.question_id] for q in questions)
    assert forward.answer(questions[0], []).parse_status == "direct"


def test_answer_priors_counts_correct_answers_per_category():
    questions = [
        question("Anomaly Presence", PRESENCE, PRESENCE[0], qid=1),
        question("Anomaly Presence", PRESENCE, PRESENCE[0], qid=2),
        question("Anomaly Presence", PRESENCE, PRESENCE[1], qid=3),
        question("Anomaly Categorization", KINDS, "No Anomaly", qid=4),
    ]
    assert answer_priors(questions) == (
        ("Anomaly Categorization", "No Anomaly", 1),
        ("Anomaly Presence", PRESENCE[0], 2),
        ("Anomaly Presence", PRESENCE[1], 1),
    )


def test_frequent_picks_the_category_mode_then_the_most_common_listed_option():
    priors = (
        ("Anomaly Start", "No Anomaly", 5),
        ("Anomaly Start", "Before the earliest timestamp", 3),
        ("Anomaly Start", "2024-05-01 00:10:00", 3),
        ("Anomaly Presence", PRESENCE[0], 9),
        ("Anomaly Presence", PRESENCE[1], 2),
    )
    frequent = create_answerer(AnswererSpec("frequent", answer_priors=priors))
    assert frequent.answer(question("Anomaly Presence", PRESENCE[::-1]), []).parsed_answer == PRESENCE[0]
    with_mode = question("Anomaly Start", ["Before the earliest timestamp", "2024-05-01 00:10:00", "No Anomaly"])
    assert frequent.answer(with_mode, []).parsed_answer == "No Anomaly"
    # The mode is not offered: the listed option seen most often wins, ties broken by text.
    without_mode = question("Anomaly Start", ["2024-05-01 00:10:00", "Before the earliest timestamp", "2024-05-02 00:00:00"])
    assert frequent.answer(without_mode, []).parsed_answer == "2024-05-01 00:10:00"
    unseen = question("Anomaly End", ["a", "b"])
    assert frequent.answer(unseen, []).parsed_answer == "a"


# ----------------------------------------------------------------------------------------------------
# stat: clear hand-built cases, one per category
# ----------------------------------------------------------------------------------------------------


def test_stat_start_and_end_of_a_level_shift():
    resolved = level_shift_group(start=300, end=500)
    start_options = ["Before the earliest timestamp"] + [stamp(resolved, s) for s in (100, 300, 700)] + ["No Anomaly"]
    assert stat_answer(question("Anomaly Start", start_options), resolved).parsed_answer == stamp(resolved, 300)
    end_options = [stamp(resolved, s) for s in (200, 499, 800)] + ["Not resolved", "No Anomaly"]
    assert stat_answer(question("Anomaly End", end_options), resolved).parsed_answer == stamp(resolved, 499)
    # A shift over most of the series, lasting to its end: it started at the change and is not resolved.
    lasting = level_shift_group(start=350, end=None, size=80.0)
    assert stat_answer(question("Anomaly End", end_options), lasting).parsed_answer == "Not resolved"
    with_true_start = start_options[:2] + [stamp(lasting, 350)] + start_options[3:]
    assert stat_answer(question("Anomaly Start", with_true_start), lasting).parsed_answer == stamp(lasting, 350)


def test_stat_presence_and_no_anomaly_answers():
    quiet = make_group(noisy(6, 800, seed=3))
    assert stat_answer(question("Anomaly Presence", PRESENCE), quiet).parsed_answer == PRESENCE[1]
    assert stat_answer(question("Anomaly Categorization", KINDS), quiet).parsed_answer == "No Anomaly"
    start_options = ["Before the earliest timestamp", stamp(quiet, 100), stamp(quiet, 400), "No Anomaly"]
    assert stat_answer(question("Anomaly Start", start_options), quiet).parsed_answer == "No Anomaly"
    listed = [quiet.variate_names[1], f"{quiet.variate_names[0]}, {quiet.variate_names[2]}", "No anomaly among the listed channels"]
    assert stat_answer(question("Anomaly Identification", listed), quiet).parsed_answer == "No anomaly among the listed channels"
    shifted = level_shift_group()
    assert stat_answer(question("Anomaly Presence", PRESENCE), shifted).parsed_answer == PRESENCE[0]


@pytest.mark.parametrize(
    "kind",
    ["Level Shift", "Transient Spike", "Change in Trend", "Change in Seasonality", "Change in Variance"],
)
def test_stat_categorizes_clear_anomalies(kind):
    rng = np.random.default_rng(11)
    values = noisy(3, 1200, seed=5)
    window = slice(500, 800)
    if kind == "Level Shift":
        values[1, 500:] += 30
    elif kind == "Transient Spike":
        values[1, 600:606] += 60
    elif kind == "Change in Trend":
        values[1, window] += np.linspace(0, 60, 300)
    elif kind == "Change in Seasonality":
        values[1, window] += 20 * np.sin(2 * np.pi * np.arange(300) / 50)
    else:
        values[1, window] += 15 * rng.standard_normal(300)
    answer = stat_answer(question("Anomaly Categorization", KINDS), make_group(values))
    assert answer.parsed_answer == kind, answer.raw_response


def test_stat_identifies_the_anomalous_channels():
    values = noisy(8, 900, seed=2)
    values[[2, 6], 400:600] += 25
    names = tuple(f"service:web-{i},host:h{i}" for i in range(8))
    group = make_group(values, names=names)
    options = [
        names[2],
        f"{names[2]} and {names[6]}",
        f"{names[1]}, {names[6]}",
        f"{names[0]}, {names[3]}, {names[5]}",
        "No anomaly among the listed channels",
    ]
    assert stat_answer(question("Anomaly Identification", options), group).parsed_answer == options[1]
    comma_joined = [names[2], f"{names[2]}, {names[6]}", names[4], "No anomaly among the listed channels"]
    assert stat_answer(question("Anomaly Identification", comma_joined), group).parsed_answer == comma_joined[1]


@pytest.mark.parametrize(
    ("percent", "options", "expected"),
    [
        (250, ["50", "100", "250", "500", "No Anomaly"], "250"),
        (1000, ["100", "250", "500", "1,000", "No Anomaly"], "1,000"),
        (25, ["10", "25", "50", "100", "No Anomaly"], "25"),
    ],
)
def test_stat_magnitude_is_percent_deviation_from_baseline(percent, options, expected):
    values = noisy(3, 1000, seed=4, level=40.0, noise=0.8)
    values[0, 450:700] += 40.0 * percent / 100
    assert stat_answer(question("Anomaly Magnitude", options), make_group(values)).parsed_answer == expected


@pytest.mark.parametrize(
    ("worse", "change", "expected"),
    [("higher", +30, INDICATOR[0]), ("higher", -30, INDICATOR[1]), ("lower", -30, INDICATOR[0]), ("lower", +30, INDICATOR[1])],
)
def test_stat_indicator_uses_the_direction_and_the_caption(worse, change, expected):
    values = noisy(3, 1000, seed=6)
    values[1, 400:650] += change
    text = f"The time series shows the metric m. For this metric, {worse} values are worse.\nDoes the anomaly indicate a degradation?"
    options = list(INDICATOR)[::-1]
    assert stat_answer(question("Anomaly Indicator", options, text=text), make_group(values)).parsed_answer == expected


def test_stat_correlation_compares_onsets_of_both_groups():
    def group(shift_at, group_id):
        values = noisy(4, 1000, seed=sum(map(ord, group_id)))
        if shift_at is not None:
            values[1, shift_at : shift_at + 200] += 30
        return make_group(values, group_id=group_id)

    a = group(400, "a_0")
    q = question("Anomaly Correlation", CORRELATION, groups=("a_0", "b_0"))
    assert stat_answer(q, a, group(400, "b_0")).parsed_answer == CORRELATION[0]
    assert stat_answer(q, a, group(700, "b_0")).parsed_answer == CORRELATION[1]
    assert stat_answer(q, a, group(None, "b_0")).parsed_answer == CORRELATION[2]
    assert stat_answer(q, group(None, "a_0"), group(None, "b_0")).parsed_answer == CORRELATION[3]


def test_stat_reads_options_by_meaning_not_exact_strings():
    group = level_shift_group(start=600, end=None, size=60.0)
    presence = ["No", "Yes"]
    assert stat_answer(question("Anomaly Presence", presence), group).parsed_answer == "Yes"
    end = [stamp(group, 100), stamp(group, 300), "The metric has not recovered", "There is no anomaly"]
    assert stat_answer(question("Anomaly End", end), group).parsed_answer == end[2]
    kinds = ["A step change (level shift)", "A short spike", "A gradual drift", "No anomalies"]
    assert stat_answer(question("Anomaly Categorization", kinds), group).parsed_answer == kinds[0]


def test_stat_uses_every_variate_and_every_step():
    values = noisy(300, 3000, seed=9)
    values[299, 2700:2900] += 15  # the very last variate, near the very end
    group = make_group(values)
    chunked = analyze_group(group, StatConfig(chunk_variates=7, threads=2))
    single = analyze_group(group, StatConfig(chunk_variates=512, threads=1))
    assert chunked.flagged[:1] == single.flagged[:1] == (299,)
    np.testing.assert_allclose(chunked.screen_scores, single.screen_scores, rtol=1e-3, atol=1e-2)
    assert abs(chunked.start - 2700) <= 3 and abs(chunked.end - 2900) <= 3


def test_stat_caches_one_analysis_per_group():
    stat = create_answerer(AnswererSpec("stat"))
    group = level_shift_group()
    assert stat.analyze(group) is stat.analyze(group)
    other = level_shift_group(seed=1)
    assert stat.analyze(other) is not stat.analyze(group)


@pytest.mark.parametrize(
    "values",
    [
        np.full((3, 200), 5.0),  # constant
        np.where(np.arange(200) == 17, 3.0, np.nan)[None, :].repeat(2, axis=0),  # all NaN but one point
        np.array([[1.0, 2.0], [3.0, np.nan]]),  # two steps
        np.array([[np.nan, np.nan, np.nan]]),  # nothing at all
        np.concatenate([np.full((1, 150), 7.0), np.full((1, 150), 9.0)], axis=1),  # flat, one step
        np.random.default_rng(0).integers(0, 3, size=(2, 300)).astype(np.float64),  # small integers
    ],
)
def test_stat_never_crashes_on_degenerate_series(values):
    group = make_group(values)
    names = group.variate_names
    for category in CATEGORIES:
        if category == "Anomaly Identification":
            options = [names[0], " and ".join(names[:2]) if len(names) > 1 else names[0] + " x", "No anomaly among the listed channels"]
        elif category == "Anomaly Correlation":
            options = list(CORRELATION)
        elif category == "Anomaly Magnitude":
            options = ["10", "25", "50", "No Anomaly"]
        elif category in ("Anomaly Start", "Anomaly End"):
            options = ["Before the earliest timestamp", stamp(group, 0), "Not resolved", "No Anomaly"]
        else:
            options = list(PRESENCE) + list(KINDS)
        groups = (group, group) if category == "Anomaly Correlation" else (group,)
        stat_answer(question(category, options), *groups)


def test_stat_beats_frequent_on_a_small_synthetic_corpus(tmp_path):
    from tasks.corpus import load_corpus
    from tasks.synthetic import SynthConfig, synthesize_corpus

    synthesize_corpus(str(tmp_path), SynthConfig(n_questions=96, max_variates=12, max_steps=600, seed=3))
    corpus = load_corpus(str(tmp_path))
    assert not corpus.problems and len(corpus.questions) == 96
    priors = answer_priors(corpus.questions)
    stat = create_answerer(AnswererSpec("stat"))
    frequent = create_answerer(AnswererSpec("frequent", answer_priors=priors))
    hits = {"stat": 0, "frequent": 0}
    for q in corpus.questions:
        series = [corpus.open_group(group_id) for group_id in q.query_groups]
        hits["stat"] += stat.answer(q, series).parsed_answer == q.correct_answer
        hits["frequent"] += frequent.answer(q, series).parsed_answer == q.correct_answer
    assert hits["stat"] - hits["frequent"] >= 0.10 * len(corpus.questions), hits
    assert hits["stat"] >= 0.6 * len(corpus.questions), hits


def test_frequent_records_that_it_saw_nothing_on_every_path():
    """Regression: every return path of the frequent answerer carries an InputUse (it never looks at the series)."""
    from model.records import InputUse, SeriesGroup

    group = SeriesGroup("g", np.zeros((2, 5), np.float32), ("a", "b"), 0, 60)
    q = question("Anomaly Presence", PRESENCE)
    for priors in ([("Anomaly Presence", PRESENCE[0], 3)], [("Anomaly Presence", "Not an option", 5), ("Anomaly Presence", PRESENCE[1], 1)], []):
        answer = create_answerer(AnswererSpec("frequent", answer_priors=priors)).answer(q, [group])
        assert answer.inputs == InputUse(0, 2, 0, 5, "none")


def test_stat_medians_of_long_rows_and_sampled_lag_differences():
    from model import stat_features as sf

    rng = np.random.default_rng(5)
    long_rows = rng.normal(size=(6, sf._SORT_MEDIAN_MAX_STEPS + 11))
    long_rows[1, :50] = np.nan
    long_rows[2] = np.nan
    expected = np.array([np.nanmedian(row) if np.isfinite(row).any() else np.nan for row in long_rows])
    assert np.array_equal(sf._row_nanmedian(long_rows), expected, equal_nan=True)
    series = rng.normal(size=(2, sf._PROFILE_SAMPLE + 100))
    assert np.array_equal(sf._lag_differences(series[:, :1000], 7), series[:, 7:1000] - series[:, :993])  # short: every one
    sampled = sf._lag_differences(series, 3)
    assert sampled.shape[1] <= sf._PROFILE_SAMPLE and np.array_equal(sampled[:, 1], series[:, 5] - series[:, 2])  # stride 2
