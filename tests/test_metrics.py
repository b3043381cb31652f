"""tasks.metrics: every binning rule pinned by hand, and a hand-computed end-to-end case."""

from __future__ import annotations

import math
import random

import pandas as pd
import pytest

from tasks.metrics import (
    bin_answer,
    category_f1,
    compute_metrics,
    count_channels,
    parse_options,
    reference_metrics,
    summarize_repeats,
)

PRESENCE = "Anomaly Presence"
START = "Anomaly Start"
END = "Anomaly End"
CATEGORIZATION = "Anomaly Categorization"
MAGNITUDE = "Anomaly Magnitude"
IDENTIFICATION = "Anomaly Identification"

T = [f"2024-01-01 00:0{i}:00" for i in range(1, 6)]  # T[0] < T[1] < ... < T[4]


def bins(category: str, options: list[str], *, answers: list[str] | None = None, **kw) -> list[str | None]:
    return [bin_answer(category, a, options, **kw) for a in (options if answers is None else answers)]


# ------------------------------------------------------------------------------------------------ options


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('["a", "b"]', ["a", "b"]),
        ('[{"value": "a"}, {"value": "b", "extra": 1}]', ["a", "b"]),
        ('[{"label": "a"}]', []),
        ('[{"value": "a"}, "b"]', []),
        ('[["a"]]', []),
        ("[true]", []),
        ("[]", []),
        ('{"value": "a"}', []),
        ('"a"', []),
        ("not json", []),
        ("", []),
        (None, []),
        (float("nan"), []),
        (["a"], []),  # not a string
        ("[1, 2.5]", ["1", "2.5"]),  # JSON numbers become str(), as in the reference
    ],
)
def test_parse_options(raw, expected):
    assert parse_options(raw) == expected


# ------------------------------------------------------------------------------------------------ direct classes


@pytest.mark.parametrize("category", [PRESENCE, "Anomaly Indicator", "Anomaly Correlation", "Something Else"])
def test_direct_categories_use_the_answer_text(category):
    assert bin_answer(category, "Yes", ["Yes", "No"]) == "Yes"
    assert bin_answer(category, " Yes ", ["Yes", "No"]) == " Yes "  # not stripped, as in the reference
    assert bin_answer(category, "Maybe", ["Yes", "No"]) == "Maybe"
    assert bin_answer(category, None, ["Yes", "No"]) is None
    assert bin_answer(category, float("nan"), ["Yes", "No"]) is None
    assert bin_answer(category, "", ["Yes", "No"]) is None


# ------------------------------------------------------------------------------------------------ categorization


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("Level shift", "Level Shift"),
        ("A transient SPIKE", "Transient Spike"),
        ("Change in variance", "Change in Seasonality/Variance"),
        ("Change in Seasonality", "Change in Seasonality/Variance"),
        ("change in trend", "Change in Trend"),
        ("No anomaly", "No Anomaly"),
        ("  no ANOMALY detected ", "No Anomaly"),  # substring match
        ("No anomaly, level shift", "No Anomaly"),  # "no anomaly" checked first
        ("  Something else ", "Something else"),  # stripped raw text
        ("", None),
        (None, None),
    ],
)
def test_categorization(answer, expected):
    assert bin_answer(CATEGORIZATION, answer, []) == expected


# ------------------------------------------------------------------------------------------------ magnitude


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["No anomaly", "5x"], ["no_anomaly", "smallest"]),  # k=1
        (["10", "0.1"], ["large", "smallest"]),  # k=2, sorted numerically
        (["1", "2", "3"], ["smallest", "medium", "large"]),  # k=3
        (["10%", "20%", "30%", "40%"], ["smallest", "small", "medium", "large"]),  # k=4
        (["1", "2", "3", "4", "5"], ["smallest", "small", "medium", "medium", "large"]),  # k=5
        (["2", "2.0", "3"], ["smallest", "smallest", "large"]),  # distinct values: k=2
    ],
)
def test_magnitude_bins_by_k(options, expected):
    assert bins(MAGNITUDE, options) == expected
    assert bins(MAGNITUDE, options, reference_compatible=True) == expected


def test_magnitude_no_anomaly_and_invalid():
    options = ["No anomaly", "1", "10"]
    assert bin_answer(MAGNITUDE, " no ANOMALY ", options) == "no_anomaly"
    assert bin_answer(MAGNITUDE, "No anomaly", []) == "no_anomaly"
    assert bin_answer(MAGNITUDE, "7", options) is None  # not among the options' numbers
    assert bin_answer(MAGNITUDE, "no number", options) is None
    assert bin_answer(MAGNITUDE, "1", ["No anomaly", "none here"]) is None  # options carry no number
    assert bin_answer(MAGNITUDE, "No anomaly at all", options) is None  # exact "no anomaly" only
    assert bin_answer(MAGNITUDE, "about 10 times", options) == "large"  # first number of the text


def test_magnitude_thousands_parsed_whole_vs_reference():
    options = ["No anomaly", "1", "10", "100", "1,000"]
    # Whole: {1, 10, 100, 1000}, k=4.
    assert bins(MAGNITUDE, options) == ["no_anomaly", "smallest", "small", "medium", "large"]
    # Reference regex reads "1,000" as 1: {1, 10, 100}, k=3, and "1,000" collides with "1".
    assert bins(MAGNITUDE, options, reference_compatible=True) == [
        "no_anomaly",
        "smallest",
        "medium",
        "large",
        "smallest",
    ]


def test_magnitude_whole_numbers_sign_and_fraction():
    assert bins(MAGNITUDE, ["-5", "5"]) == ["smallest", "large"]
    assert bins(MAGNITUDE, ["-5", "5"], reference_compatible=True) == ["smallest", "smallest"]
    assert bins(MAGNITUDE, [".5", "5"]) == ["smallest", "large"]
    assert bins(MAGNITUDE, ["10,000.5", "2"]) == ["large", "smallest"]
    assert bins(MAGNITUDE, ["1-2", "3-4"]) == ["smallest", "large"]  # a range: its first number, no sign


# ------------------------------------------------------------------------------------------------ start


@pytest.mark.parametrize(
    ("count", "expected"),
    [
        (1, ["earliest"]),
        (2, ["earliest", "late"]),
        (3, ["earliest", "medium", "late"]),
        (4, ["earliest", "early", "medium", "late"]),
        (5, ["earliest", "early", "medium", "medium", "late"]),
    ],
)
def test_start_without_before_option(count, expected):
    options = ["No anomaly", *reversed(T[:count])]  # reversed: binning sorts
    assert bins(START, options, answers=T[:count]) == expected
    assert bin_answer(START, "No anomaly", options) == "no_anomaly"


@pytest.mark.parametrize(
    ("count", "expected"),
    [
        (1, ["early"]),
        (2, ["early", "late"]),
        (3, ["early", "medium", "late"]),
        (4, ["early", "medium", "medium", "late"]),
        (5, ["early", "medium", "medium", "medium", "late"]),
    ],
)
def test_start_with_before_option(count, expected):
    options = ["Before the earliest timestamp", *T[:count], "No anomaly"]
    assert bins(START, options, answers=T[:count]) == expected
    assert bin_answer(START, "Before the earliest timestamp", options) == "earliest"


def test_start_special_cases():
    options = [T[0], T[1], T[2]]
    assert bin_answer(START, " NO anomaly ", options) == "no_anomaly"
    assert bin_answer(START, "before the earliest", options) == "earliest"  # even without such an option
    assert bin_answer(START, f"Around {T[1]} UTC", options) == "medium"  # timestamp inside text
    assert bin_answer(START, T[3], options) is None  # not among the options
    assert bin_answer(START, "yesterday", options) is None
    assert bin_answer(START, T[0], ["No anomaly"]) is None  # no timestamps at all
    assert bin_answer(START, T[0], [T[0], T[0], T[1]]) == "earliest"  # distinct: k=2


# ------------------------------------------------------------------------------------------------ end


@pytest.mark.parametrize(
    ("count", "expected"),
    [
        (1, ["latest"]),
        (2, ["early", "latest"]),
        (3, ["early", "medium", "latest"]),
        (4, ["early", "medium", "late", "latest"]),
        (5, ["early", "medium", "medium", "late", "latest"]),
    ],
)
def test_end_without_not_resolved_option(count, expected):
    options = [*reversed(T[:count]), "No anomaly"]
    assert bins(END, options, answers=T[:count]) == expected
    assert bin_answer(END, "no anomaly", options) == "no_anomaly"


@pytest.mark.parametrize(
    ("count", "expected"),
    [
        (1, ["late"]),
        (2, ["early", "late"]),
        (3, ["early", "medium", "late"]),
        (4, ["early", "medium", "medium", "late"]),
        (5, ["early", "medium", "medium", "medium", "late"]),
    ],
)
def test_end_with_not_resolved_option(count, expected):
    options = [*T[:count], "Not resolved", "No anomaly"]
    assert bins(END, options, answers=T[:count]) == expected
    assert bin_answer(END, "Not resolved", options) == "latest"


def test_end_special_cases():
    options = [T[0], T[1]]
    assert bin_answer(END, "It is NOT RESOLVED yet", options) == "latest"  # even without such an option
    assert bin_answer(END, T[4], options) is None
    assert bin_answer(END, "", options) is None


# ------------------------------------------------------------------------------------------------ identification


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("pod_name:614", 1),
        ("pod_name:614, pod_name:198", 2),
        ("a:1, b:2, c:3", 3),
        ("method:1 and method:2", 2),
        ("a:1 and b:2 and c:3", 3),
        ("a:1 and b:2, c:3", 2),  # " and " wins over ", "
        ("service:2,track_type:15,service:1,track_type:41", 2),  # repeated first dimension
        ("service:2,track_type:15", 1),  # no repeat
        ("x:1, 2", 1),  # ", " followed by a digit is no separator
        ("plain text", 1),
    ],
)
def test_count_channels(text, expected):
    assert count_channels(text) == expected


def test_identification_bins():
    options = [
        "No anomaly among the listed channels",
        "pod:c",
        "pod:a",
        "pod:b",
        "pod:a, pod:b",
        "pod:a and pod:b and pod:c",
        "service:2,track_type:15,service:1,track_type:41",
    ]
    expected = [
        "no_anomaly",
        "one_channel_large",  # "pod:c" >= "pod:b" (second of sorted singles a, b, c)
        "one_channel_small",  # "pod:a" < "pod:b"
        "one_channel_large",  # "pod:b" is not < "pod:b"
        "two_channel",
        "three_channel",
        "two_channel",
    ]
    assert bins(IDENTIFICATION, options) == expected
    assert bin_answer(IDENTIFICATION, " NO ANOMALY ", options) == "no_anomaly"
    assert bin_answer(IDENTIFICATION, "a:1, b:2, c:3, d:4", options) == "three_channel"
    # Not an exact no-anomaly label: one channel that sorts before "pod:b".
    assert bin_answer(IDENTIFICATION, "No anomaly found", options) == "one_channel_small"
    assert bin_answer(IDENTIFICATION, "pod:zz", options) == "one_channel_large"  # need not be an option
    assert bin_answer(IDENTIFICATION, None, options) is None


def test_identification_fewer_than_two_single_channel_options():
    options = ["No anomaly", "host:z", "host:a, host:b"]
    assert bin_answer(IDENTIFICATION, "host:z", options) == "one_channel_small"
    assert bin_answer(IDENTIFICATION, "host:zz", ["host:a and host:b"]) == "one_channel_small"


def test_raw_category_names_are_accepted():
    options = ["No anomaly", "1", "10", "100", "1,000"]
    assert bin_answer("anomaly  magnitude", "1,000", options) == "large"
    assert bin_answer("Tier-2 Anomaly Start", T[0], [T[0], T[1]]) == "earliest"
    assert bin_answer("anomaly categorization", "change in variance", []) == "Change in Seasonality/Variance"


# ------------------------------------------------------------------------------------------------ category F1


def frame(rows: list[tuple], category: str = PRESENCE) -> pd.DataFrame:
    return pd.DataFrame(
        [{"category": category, "options": list(o), "correct_answer": t, "parsed_answer": p} for o, t, p in rows]
    )


def test_single_class_truth_default_counts_invalid_as_miss():
    yes_no = ["Yes", "No"]
    rows = frame([(yes_no, "Yes", "Yes"), (yes_no, "Yes", None), (yes_no, "Yes", "No")])
    rng = random.Random(0)
    out = category_f1(rows, rng=rng)
    # labels = ["Yes"]; "No" is outside the labels, so two invalid rows, both mapped to a sentinel (a miss).
    # Yes: TP 1, FP 0, FN 2 -> precision 1, recall 1/3, F1 = 2 * 1 * (1/3) / (4/3) = 1/2.
    assert out["labels"] == ["Yes"]
    assert out["n"] == 3 and out["invalid"] == 2
    assert out["precision"] == pytest.approx(1.0)
    assert out["recall"] == pytest.approx(1 / 3)
    assert out["macro_f1"] == pytest.approx(0.5)
    assert rng.random() == random.Random(0).random()  # no wrong class to pick: rng untouched


def test_single_class_truth_reference_maps_invalid_onto_the_class():
    yes_no = ["Yes", "No"]
    rows = frame([(yes_no, "Yes", "Yes"), (yes_no, "Yes", None), (yes_no, "Yes", "No")])
    out = category_f1(rows, rng=random.Random(0), reference_compatible=True)
    assert out["invalid"] == 2
    assert out["macro_f1"] == pytest.approx(1.0)  # the reference scores both invalid rows correct


def test_category_f1_leaves_out_rows_whose_truth_has_no_class():
    options = ["1", "10"]
    rows = frame([(options, "1", "1"), (options, "banana", "10"), (options, "10", "10")], MAGNITUDE)
    out = category_f1(rows, rng=random.Random(0))
    assert out["n"] == 2 and out["invalid"] == 0
    assert out["labels"] == ["large", "smallest"]
    assert out["macro_f1"] == pytest.approx(1.0)


def test_category_f1_with_no_usable_truth():
    rows = frame([(["1"], "banana", "1")], MAGNITUDE)
    out = category_f1(rows, rng=random.Random(0))
    assert out["n"] == 0 and out["labels"] == [] and math.isnan(out["macro_f1"])


# ------------------------------------------------------------------------------------------------ end to end

YES_NO = ["Yes", "No"]
MAG = ["No anomaly", "0.5", "2", "10", "1,000"]
CAT = ["Level shift", "Transient spike", "Change in variance", "Change in seasonality", "No anomaly"]


def answers(run_id: str = "r1", answerer: str = "stat") -> pd.DataFrame:
    rows = [
        # qid, category, tier, options, truth, parsed, status
        (1, PRESENCE, "Tier 1", YES_NO, "Yes", "Yes", "ok"),
        (2, PRESENCE, "Tier 1", YES_NO, "No", "Yes", "ok"),
        (3, PRESENCE, "Tier 1", YES_NO, "Yes", None, "ok"),  # invalid (unparsed)
        (4, PRESENCE, "Tier 1", YES_NO, "No", "No", "ok"),
        (5, MAGNITUDE, "Tier 2", MAG, "2", "2", "ok"),
        (6, MAGNITUDE, "Tier 2", MAG, "1,000", "10", "ok"),
        (7, MAGNITUDE, "Tier 2", MAG, "No anomaly", "No anomaly", "ok"),
        (8, MAGNITUDE, "Tier 2", MAG, "10", None, "error"),  # error row
        (9, CATEGORIZATION, "Tier 2", CAT, "Change in variance", "Change in seasonality", "ok"),
        (10, CATEGORIZATION, "Tier 2", CAT, "Level shift", "Level shift", "ok"),
        (11, CATEGORIZATION, "Tier 2", CAT, "Transient spike", "Transient spike", "ok"),
    ]
    return pd.DataFrame(
        [
            {
                "run_id": run_id,
                "answerer": answerer,
                "question_id": q,
                "category": c,
                "tier": tier,
                "options": list(o),
                "correct_answer": t,
                "parsed_answer": p,
                "is_correct": p == t,
                "status": s,
            }
            for q, c, tier, o, t, p, s in rows
        ]
    )


def lookup(metrics: pd.DataFrame, scope: str, key: str, run_id: str = "r1", answerer: str = "stat") -> pd.Series:
    sel = metrics[
        (metrics["run_id"] == run_id)
        & (metrics["answerer"] == answerer)
        & (metrics["scope"] == scope)
        & (metrics["key"] == key)
    ]
    assert len(sel) == 1, (scope, key)
    return sel.iloc[0]


# Hand computation (default, corrected metrics). One random.Random(0); categories in first-appearance order:
# Presence, Magnitude, Categorization.
#
# Accuracy (error/invalid rows stay in the denominator; q9 is the right class but the wrong text: wrong):
#   Presence 2/4 (q1, q4), Magnitude 2/4 (q5, q7), Categorization 2/3 (q10, q11);
#   Tier 1 = 2/4, Tier 2 = 4/7, overall = 6/11. invalid: Presence 1 (q3), Magnitude 1 (q8, error), overall 2.
#
# Presence: labels [No, Yes]. q3 invalid, truth Yes -> rng.choice(["No"]) = "No".
#   (choice of 1 draws getrandbits(1) until < 1: Random(0) gives 1 then 0, so two 32-bit words are used.)
#   y_true Yes No Yes No / y_pred Yes Yes No No: each class TP 1, FP 1, FN 1 -> F1 0.5, P 0.5, R 0.5.
# Magnitude, options parsed whole: {0.5, 2, 10, 1000}, k=4 -> 0.5 smallest, 2 small, 10 medium, 1000 large.
#   truths q5 small, q6 large, q7 no_anomaly, q8 medium -> labels [large, medium, no_anomaly, small].
#   preds q5 small, q6 medium ("10"), q7 no_anomaly, q8 invalid (error), truth medium ->
#   rng.choice(["large", "no_anomaly", "small"]): getrandbits(2) on words 3, 4, 5 of Random(0) gives 3, 3, 1
#   (3 rejected) -> index 1 -> "no_anomaly".
#   large: TP 0 FP 0 FN 1 -> 0; medium: TP 0 FP 1 FN 1 -> 0; no_anomaly: TP 1 FP 1 -> P 1/2 R 1 F1 2/3;
#   small: 1.  Macro F1 = (0 + 0 + 2/3 + 1) / 4 = 5/12; P = (0 + 0 + 1/2 + 1) / 4 = 3/8; R = (0+0+1+1)/4 = 1/2.
# Categorization: labels [Change in Seasonality/Variance, Level Shift, Transient Spike]; all predictions in
#   class (q9: variance vs seasonality is one merged class) -> F1 1.
# Tier 1 F1 = 0.5. Tier 2 F1 = (4 * 5/12 + 3 * 1) / 7 = (14/3) / 7 = 2/3.
# Overall F1 = (4 * 0.5 + 4 * 5/12 + 3 * 1) / 11 = (20/3) / 11 = 20/33.
EXPECTED_DEFAULT = {
    ("category", PRESENCE): (4, 2, 2 / 4, 0.5, 1, 1),
    ("category", MAGNITUDE): (4, 2, 2 / 4, 5 / 12, 1, 1),
    ("category", CATEGORIZATION): (3, 2, 2 / 3, 1.0, 0, 0),
    ("tier", "Tier 1"): (4, 2, 2 / 4, 0.5, 1, 1),
    ("tier", "Tier 2"): (7, 4, 4 / 7, 2 / 3, 1, 1),
    ("overall", "all"): (11, 6, 6 / 11, 20 / 33, 2, 2),
}

# Hand computation (reference_compatible=True): the error row q8 is dropped; "1,000" reads as 1.
# Presence: unchanged, same rng draw ("No") -> F1 0.5.
# Magnitude: {0.5, 1, 2, 10}, k=4 -> 0.5 smallest, 1 small, 2 medium, 10 large.
#   truths q5 medium, q6 small ("1,000" -> 1), q7 no_anomaly -> labels [medium, no_anomaly, small].
#   preds q5 medium, q6 "10" -> large: outside the labels, invalid, truth small ->
#   rng.choice(["medium", "no_anomaly"]): getrandbits(2) on words 3, 4, 5 gives 3, 3, 1 -> "no_anomaly".
#   q7 no_anomaly. medium: 1; small: TP 0 -> 0; no_anomaly: TP 1 FP 1 -> 2/3. Macro F1 = (1 + 2/3 + 0)/3 = 5/9.
#   Accuracy 2/3, invalid 0 (no unparsed rows left), f1_invalid 1.
# Categorization: F1 1, accuracy 2/3.
# Tier 2: n 6, accuracy 4/6, F1 = (3 * 5/9 + 3 * 1) / 6 = 7/9. Overall: n 10, accuracy 6/10,
#   F1 = (4 * 0.5 + 3 * 5/9 + 3 * 1) / 10 = (20/3) / 10 = 2/3.
EXPECTED_REFERENCE = {
    ("category", PRESENCE): (4, 2, 2 / 4, 0.5, 1, 1),
    ("category", MAGNITUDE): (3, 2, 2 / 3, 5 / 9, 0, 1),
    ("category", CATEGORIZATION): (3, 2, 2 / 3, 1.0, 0, 0),
    ("tier", "Tier 1"): (4, 2, 2 / 4, 0.5, 1, 1),
    ("tier", "Tier 2"): (6, 4, 4 / 6, 7 / 9, 0, 1),
    ("overall", "all"): (10, 6, 6 / 10, 2 / 3, 1, 2),
}


def check(metrics: pd.DataFrame, expected: dict, **where) -> None:
    mine = (metrics["run_id"] == where.get("run_id", "r1")) & (metrics["answerer"] == where.get("answerer", "stat"))
    assert int(mine.sum()) == len(expected)
    for (scope, key), (n, n_correct, accuracy, f1, invalid, f1_invalid) in expected.items():
        row = lookup(metrics, scope, key, **where)
        assert (row["n"], row["n_correct"], row["invalid"], row["f1_invalid"]) == (n, n_correct, invalid, f1_invalid)
        assert row["accuracy"] == pytest.approx(accuracy), (scope, key)
        assert row["macro_f1"] == pytest.approx(f1), (scope, key)


def test_end_to_end_by_hand():
    metrics = compute_metrics(answers())
    check(metrics, EXPECTED_DEFAULT)
    magnitude = lookup(metrics, "category", MAGNITUDE)
    assert magnitude["precision"] == pytest.approx(3 / 8)
    assert magnitude["recall"] == pytest.approx(1 / 2)
    assert list(metrics["scope"]) == ["category"] * 3 + ["tier"] * 2 + ["overall"]
    assert list(metrics["key"][:3]) == [PRESENCE, CATEGORIZATION, MAGNITUDE]  # CATEGORIES order


def test_end_to_end_reference_compatible_by_hand():
    check(compute_metrics(answers(), reference_compatible=True), EXPECTED_REFERENCE)


def test_is_correct_column_is_not_trusted_and_error_rows_are_wrong():
    df = answers()
    df.loc[df["question_id"] == 8, "parsed_answer"] = "10"  # an error row with a (stale) right answer
    df["is_correct"] = True
    check(compute_metrics(df), EXPECTED_DEFAULT)


def test_shuffled_input_gives_the_same_metrics():
    df = pd.concat([answers("r1", "stat"), answers("r2", "stat"), answers("r1", "random")], ignore_index=True)
    base = compute_metrics(df)
    for seed in range(3):
        shuffled = compute_metrics(df.sample(frac=1.0, random_state=seed).reset_index(drop=True))
        pd.testing.assert_frame_equal(shuffled, base)
    for run_id, answerer in [("r1", "stat"), ("r2", "stat"), ("r1", "random")]:
        check(base, EXPECTED_DEFAULT, run_id=run_id, answerer=answerer)  # each run has its own Random(0)


def test_empty_input():
    out = compute_metrics(answers().iloc[:0])
    assert out.empty and "macro_f1" in out.columns


# ------------------------------------------------------------------------------------------------ repeats


def test_summarize_repeats():
    run2 = answers("r2")
    run2.loc[run2["question_id"] == 2, "parsed_answer"] = "No"  # r2 gets q2 right
    run3 = answers("r3")
    metrics = compute_metrics(pd.concat([answers("r1"), run2, run3], ignore_index=True))
    # r2 Presence: y_true Yes No Yes No / y_pred Yes No No(rng) No -> Yes: P 1 R 1/2 F1 2/3; No: P 2/3 R 1 F1 4/5.
    r2_f1 = (2 / 3 + 4 / 5) / 2
    assert lookup(metrics, "category", PRESENCE, run_id="r2")["macro_f1"] == pytest.approx(r2_f1)

    summary = summarize_repeats(metrics)
    presence = summary[(summary["scope"] == "category") & (summary["key"] == PRESENCE)].iloc[0]
    assert presence["n_runs"] == 3 and presence["group"] == "all"
    accs = [0.5, 0.75, 0.5]
    mean = sum(accs) / 3
    assert presence["accuracy_mean"] == pytest.approx(mean)
    assert presence["accuracy_std"] == pytest.approx(math.sqrt(sum((a - mean) ** 2 for a in accs) / 3))
    assert (presence["accuracy_min"], presence["accuracy_max"]) == (0.5, 0.75)
    f1s = [0.5, r2_f1, 0.5]
    assert presence["macro_f1_mean"] == pytest.approx(sum(f1s) / 3)
    assert presence["macro_f1_max"] == pytest.approx(r2_f1)
    assert len(summary) == 6  # one row per (answerer, scope, key): never one row per run

    grouped = summarize_repeats(metrics, {"r1": "cfg-a", "r3": "cfg-a", "r2": "cfg-b"})
    a = grouped[(grouped["group"] == "cfg-a") & (grouped["key"] == PRESENCE)].iloc[0]
    assert a["n_runs"] == 2 and a["accuracy_std"] == 0.0 and a["accuracy_mean"] == pytest.approx(0.5)
    b = grouped[(grouped["group"] == "cfg-b") & (grouped["key"] == PRESENCE)].iloc[0]
    assert b["n_runs"] == 1 and b["accuracy_std"] == 0.0 and b["accuracy_mean"] == pytest.approx(0.75)


def test_reference_metrics_first_run_accuracy_pooled_f1():
    run2 = answers("r2")
    run2.loc[run2["question_id"] == 2, "parsed_answer"] = "No"
    ref = reference_metrics(pd.concat([run2, answers("r1")], ignore_index=True))
    overall = ref[ref["scope"] == "overall"].iloc[0]
    assert overall["first_run_id"] == "r1" and overall["n_runs"] == 2
    assert overall["accuracy"] == pytest.approx(6 / 10)  # r1 only, error row dropped
    presence = ref[ref["key"] == PRESENCE].iloc[0]
    # Pooled Presence F1 over r1 then r2 with one Random(0): both invalid rows have wrong class "No".
    # y_true Yes No Yes No Yes No Yes No / y_pred Yes Yes No No Yes No No No
    # Yes: TP 2 FP 1 FN 2 -> P 2/3 R 1/2 F1 4/7; No: TP 3 FP 2 FN 1 -> P 3/5 R 3/4 F1 2/3.
    assert presence["n_f1"] == 8 and presence["f1_invalid"] == 2
    assert presence["macro_f1"] == pytest.approx((4 / 7 + 2 / 3) / 2)


def test_reference_compatible_drops_input_errors_but_keeps_answerer_failures():
    """The reference skips questions whose input is missing, but an API error stays a wrong answer."""
    input_error = answers()
    input_error["error_kind"] = [None] * 7 + ["input"] + [None] * 3
    check(compute_metrics(input_error, reference_compatible=True), EXPECTED_REFERENCE)  # q8 dropped, as before
    failed = answers()
    failed["error_kind"] = [None] * 7 + ["answerer"] + [None] * 3
    ref = compute_metrics(failed, reference_compatible=True)
    magnitude = lookup(ref, "category", MAGNITUDE)
    assert magnitude["n"] == 4 and magnitude["n_correct"] == 2 and magnitude["invalid"] == 1  # q8 kept, wrong
    assert lookup(ref, "overall", "all")["n"] == 11
    # Corrected metrics keep every error row whatever its kind.
    check(compute_metrics(failed), EXPECTED_DEFAULT)
    pooled = reference_metrics(failed)
    assert pooled[pooled["scope"] == "overall"].iloc[0]["n"] == 11
