"""Cluster-bootstrap intervals and paired comparisons: reproducible, plain bootstrap when groups are singletons,
a run against itself differs by exactly 0 with p = 1, McNemar's exact p by hand, intervals hold the estimate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks.intervals import bootstrap_intervals, bootstrap_weights, cluster_ids, compare_runs, mcnemar_p
from tasks.metrics import compute_metrics

YES_NO = ["Yes", "No"]
STAMPS = ["Before the earliest timestamp", "2024-01-01 00:10:00", "2024-01-01 00:20:00", "2024-01-01 00:30:00", "No anomaly"]


def answers(run_id: str = "r1", seed: int = 0, n: int = 80, groups_of: int = 3) -> pd.DataFrame:
    """Presence (Tier 1) and Start (Tier 2) questions, ``groups_of`` questions per query group."""
    rng = np.random.default_rng(seed)
    rows = []
    for q in range(n):
        start = q % 2 == 1
        options = STAMPS if start else YES_NO
        truth = options[q % len(options)]
        right = rng.random() < 0.6
        parsed = truth if right else (None if rng.random() < 0.2 else options[(options.index(truth) + 1) % len(options)])
        rows.append({
            "run_id": run_id, "answerer": "stat", "question_id": q, "query_group": f"{q // groups_of}_0",
            "category": "Anomaly Start" if start else "Anomaly Presence", "tier": "Tier 2" if start else "Tier 1",
            "options": options, "correct_answer": truth, "parsed_answer": parsed, "status": "ok",
        })
    return pd.DataFrame(rows)


def test_clusters_join_questions_that_share_a_query_group():
    assert cluster_ids(["1_0", "2_0", "1_0", "3_0, 2_0", "4_0", "4_0, 5_0", "5_0"]).tolist() == [0, 1, 0, 1, 2, 2, 2]


def test_bootstrap_is_reproducible_and_holds_the_point_estimates():
    df = answers()
    first, again, other = bootstrap_intervals(df, 300, seed=7), bootstrap_intervals(df, 300, seed=7), bootstrap_intervals(df, 300, seed=8)
    pd.testing.assert_frame_equal(first, again)
    assert not first.equals(other)
    merged = compute_metrics(df).merge(first, on=["run_id", "answerer", "scope", "key"])
    assert len(merged) == 5  # 2 categories, 2 tiers, overall
    assert (merged["accuracy_lo"] <= merged["accuracy"]).all() and (merged["accuracy"] <= merged["accuracy_hi"]).all()
    assert (merged["macro_f1_lo"] <= merged["macro_f1"]).all() and (merged["macro_f1"] <= merged["macro_f1_hi"]).all()
    assert (merged["accuracy_hi"] - merged["accuracy_lo"] > 0.05).all()


def test_with_one_question_per_group_it_is_the_plain_bootstrap():
    df = answers(groups_of=1)
    got = bootstrap_intervals(df, 500, seed=3).set_index(["scope", "key"])
    # The plain bootstrap by hand: resample questions with replacement, accuracy per resample, percentiles.
    draws = np.random.default_rng(3).integers(0, len(df), size=(500, len(df)))
    correct = (df["parsed_answer"] == df["correct_answer"]).to_numpy(float)
    overall = correct[draws].mean(axis=1)
    assert got.loc[("overall", "all"), "accuracy_lo"] == pytest.approx(np.percentile(overall, 2.5))
    assert got.loc[("overall", "all"), "accuracy_hi"] == pytest.approx(np.percentile(overall, 97.5))
    weights = bootstrap_weights(np.arange(len(df)), 500, seed=3)
    assert (weights.sum(axis=1) == len(df)).all()


def test_a_run_compared_with_itself_differs_by_zero_with_p_one():
    df = answers()
    table = compare_runs(df, df.assign(run_id="r2"), 200).set_index(["scope", "key"])
    assert (table["accuracy_diff"] == 0).all() and (table["accuracy_diff_lo"] == 0).all() and (table["accuracy_diff_hi"] == 0).all()
    assert (table["macro_f1_diff"] == 0).all() and (table["mcnemar_p"] == 1.0).all()
    point = compute_metrics(df).set_index(["scope", "key"])
    for index, row in table.iterrows():
        assert row["accuracy_a"] == pytest.approx(point.loc[index, "accuracy"])
        assert row["macro_f1_a"] == pytest.approx(point.loc[index, "macro_f1"])


def test_mcnemar_exact_p_by_hand_and_a_better_run():
    # 2 questions right only in A, 9 right only in B: p = 2 * P(X <= 2), X ~ Bin(11, 1/2) = 2 * 67 / 2048.
    assert mcnemar_p(2, 9) == pytest.approx(2 * 67 / 2048)
    assert mcnemar_p(9, 2) == pytest.approx(2 * 67 / 2048) and mcnemar_p(0, 0) == 1.0 and mcnemar_p(3, 3) == 1.0
    a = answers()
    b = a.assign(run_id="r2", parsed_answer=a["correct_answer"])  # B is right everywhere
    overall = compare_runs(a, b, 300).set_index(["scope", "key"]).loc[("overall", "all")]
    wrong_in_a = int((a["parsed_answer"] != a["correct_answer"]).sum())
    assert overall["right_only_a"] == 0 and overall["right_only_b"] == wrong_in_a
    assert overall["mcnemar_p"] == pytest.approx(mcnemar_p(0, wrong_in_a)) and overall["mcnemar_p"] < 1e-6
    assert 0 < overall["accuracy_diff_lo"] <= overall["accuracy_diff"] <= overall["accuracy_diff_hi"]


def test_a_category_whose_truths_have_no_class_leaves_the_tier_and_overall_f1_defined():
    df = answers(n=40)
    magnitude = df.iloc[:5].assign(
        question_id=range(100, 105), query_group=[f"m{i}_0" for i in range(5)], category="Anomaly Magnitude", tier="Tier 2",
        options=[["10%", "50%"]] * 5, correct_answer="", parsed_answer="10%",
    )
    df = pd.concat([df, magnitude], ignore_index=True)
    merged = compute_metrics(df).merge(bootstrap_intervals(df, 200, seed=1), on=["run_id", "answerer", "scope", "key"]).set_index(["scope", "key"])
    for scope in [("overall", "all"), ("tier", "Tier 2")]:
        low, point, high = merged.loc[scope, ["macro_f1_lo", "macro_f1", "macro_f1_hi"]]
        assert np.isfinite([low, point, high]).all() and low <= point <= high, scope
    compared = compare_runs(df, df.assign(run_id="r2")).set_index(["scope", "key"])
    assert np.isfinite(compared.loc[("overall", "all"), ["macro_f1_a", "macro_f1_b"]].astype(float)).all()
