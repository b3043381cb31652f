"""The synthetic generator gives nothing away: an answerer that sees only the options scores at chance per category.

Chance for an answerer without the series = always the category's most frequent answer class (learned on one
corpus, scored on another); the options-only answerer also sees each option's place in the list, whether a
timestamp breaks the spacing of the others and its length (tasks/giveaways.py). Planning only: no series written.
"""

from __future__ import annotations

from collections import Counter

from model.records import Question, canonical_category
from tasks.giveaways import chance_and_options_only
from tasks.synthetic import BEFORE_EARLIEST, MAGNITUDE_LADDER, NOT_RESOLVED, TIER_OF_CATEGORY, SynthConfig, plan_corpus

QUESTIONS = 2400  # 300 per category: the binomial noise of a share is ~0.03


def _questions(seed: int) -> list[Question]:
    plan = plan_corpus(SynthConfig(n_questions=QUESTIONS, max_variates=64, max_steps=4000, seed=seed, realism=0.5))
    return [
        Question(i, q.question, canonical_category(q.category), TIER_OF_CATEGORY[q.category], q.options, q.correct_answer, q.query_groups)
        for i, q in enumerate(plan.questions)
    ]


def test_an_options_only_answerer_scores_at_chance_in_every_category():
    table = chance_and_options_only(_questions(1), _questions(2))
    print("\nFIGURE options-only answerer on synthetic data (held-out corpus):")
    for category, row in table.items():
        print(f"  {category:24s} n {row['n']:4d}  uniform {row['uniform']:.2f}  chance {row['chance']:.2f}  options-only {row['options_only']:.2f}")
    assert len(table) == 8
    for category, row in table.items():
        assert row["options_only"] <= row["chance"] + 0.06, (category, row)


def test_special_answers_are_right_in_a_share_like_the_release_and_sizes_reach_the_noise():
    plan = plan_corpus(SynthConfig(n_questions=QUESTIONS, max_variates=64, max_steps=4000, seed=3))
    correct = Counter((q.category, q.correct_answer) for q in plan.questions)
    per_category = Counter(q.category for q in plan.questions)
    before = correct[("Anomaly Start", BEFORE_EARLIEST)] / per_category["Anomaly Start"]
    unresolved = correct[("Anomaly End", NOT_RESOLVED)] / per_category["Anomaly End"]
    assert 0.05 <= before <= 0.25 and 0.1 <= unresolved <= 0.35, (before, unresolved)
    sizes = Counter(g.anomaly.magnitude_pct for g in plan.groups if g.anomaly is not None)
    assert min(sizes) == MAGNITUDE_LADDER[0] == 5.0 and sizes[5.0] > 0
