"""model/parsing.py and model/prompts.py: messy model replies back to option texts; prompt and shuffle."""

from __future__ import annotations

import json

import pytest

from model.parsing import PARSE_STATUSES, match_option, parse_answer
from model.prompts import NO_SHUFFLE, build_prompt, option_label, option_seed, shuffle_options
from model.records import Question

KINDS = ["Level shift", "Transient spike", "Change in trend", "No anomaly"]
MAGNITUDES = ["0", "0.1", "1"]
TIMES = ["2024-01-01 10:00:00", "2024-01-01 11:30:00", "Before the earliest timestamp", "No anomaly"]
YES_NO = ["Yes", "No"]


@pytest.mark.parametrize(
    ("raw", "options", "expected", "status"),
    [
        # JSON, whole / fenced / embedded / single-quoted / numbers / broken
        ('{"reasoning": "jump at 10:00", "answer": "Level shift"}', KINDS, "Level shift", "json"),
        ('```json\n{"reasoning": "r", "answer": "Transient spike"}\n```', KINDS, "Transient spike", "json"),
        ('```\n{"answer": "No anomaly"}\n```\nLet me know if you need more.', KINDS, "No anomaly", "json"),
        (
            'Sure! Here is my answer:\n{"reasoning": "mean moved {a lot}.", "answer": "change in trend"}\nThanks.',
            KINDS,
            "Change in trend",
            "json",
        ),
        ('{"reasoning": "x", "answer": "Level shift"} The level shift is obvious.', KINDS, "Level shift", "json"),
        ("{'reasoning': 'it\\'s a spike', 'answer': 'Transient spike'}", KINDS, "Transient spike", "json"),
        ("{'reasoning': 'none', 'answer': 'No anomaly', 'confident': true}", KINDS, "No anomaly", "json"),
        ('{"reasoning": "r", "answer": "B"}', KINDS, "Transient spike", "json"),
        ('{"reasoning": "r", "answer": "(D)"}', KINDS, "No anomaly", "json"),
        ('{"reasoning": "r", "answer": 0.1}', MAGNITUDES, "0.1", "json"),
        ('{"reasoning": "r", "answer": 0.10}', MAGNITUDES, "0.1", "json"),
        ('{"reasoning": "r", "answer": 1}', MAGNITUDES, "1", "json"),
        ('{"reasoning": "r", "answer": 2}', KINDS, "Transient spike", "json"),  # 1-based index
        ('{"reasoning": "r", "answer": "Level shift. It jumps."}', KINDS, "Level shift", "json"),
        ('{"reasoning": "the value is 0.1.", "answer": "0.1"}', MAGNITUDES, "0.1", "json"),
        ('{"reasoning": "r", "Answer": "level  SHIFT"}', KINDS, "Level shift", "json"),
        ('{"result": {"answer": "Yes"}}', YES_NO, "Yes", "json"),
        ('{"reasoning": "cut off", "answer": "Transient spike"', KINDS, "Transient spike", "json"),
        ('{"reasoning": "r", "answer": "2024-01-01 11:30:00"}', TIMES, "2024-01-01 11:30:00", "json"),
        # "Answer: X" lines
        ("**Answer:** B", KINDS, "Transient spike", "answer_line"),
        ("**Answer: Level shift**", KINDS, "Level shift", "answer_line"),
        ("answer: level shift.", KINDS, "Level shift", "answer_line"),
        ("ANSWER: no anomaly", KINDS, "No anomaly", "answer_line"),
        ("The series jumps. Reasoning done.\nFinal answer: Level shift", KINDS, "Level shift", "answer_line"),
        ("Let me think. A spike? Maybe.\nAnswer: C", KINDS, "Change in trend", "answer_line"),
        ("Answer:\n  Transient spike", KINDS, "Transient spike", "answer_line"),
        ("Answer: 2024-01-01 10:00:00", TIMES, "2024-01-01 10:00:00", "answer_line"),
        ("**Answer**: 2024-01-01 11:30:00.", TIMES, "2024-01-01 11:30:00", "answer_line"),
        ("Answer: 0.1", MAGNITUDES, "0.1", "answer_line"),
        ("Answer: 0.1. It is small.", MAGNITUDES, "0.1", "answer_line"),
        ("Answer: maybe A\nAnswer: B", KINDS, "Transient spike", "answer_line"),  # last line wins
        # the whole text before any cutting at "."
        ("0.1", MAGNITUDES, "0.1", "raw"),
        ("0.1\n", MAGNITUDES, "0.1", "raw"),
        ("0", MAGNITUDES, "0", "raw"),
        ("  2024-01-01 10:00:00  ", TIMES, "2024-01-01 10:00:00", "raw"),
        ("before the earliest timestamp.", TIMES, "Before the earliest timestamp", "raw"),
        ("Level shift", KINDS, "Level shift", "raw"),
        ('"Level shift"', KINDS, "Level shift", "raw"),
        ("`transient spike`", KINDS, "Transient spike", "raw"),
        ("B", KINDS, "Transient spike", "raw"),
        ("(B)", KINDS, "Transient spike", "raw"),
        ("B)", KINDS, "Transient spike", "raw"),
        ("b.", KINDS, "Transient spike", "raw"),
        ("Option D", KINDS, "No anomaly", "raw"),
        ("3", KINDS, "Change in trend", "raw"),
        ("A) Level shift", KINDS, "Level shift", "raw"),
        ("Yes\nThe anomaly is clear from the spike at 10:00.", YES_NO, "Yes", "raw"),
        # text before the first period
        ("Level shift. The mean moves up and stays.", KINDS, "Level shift", "before_period"),
        ("0.1. The change is small.", MAGNITUDES, "0.1", "before_period"),
        ("2024-01-01 11:30:00. The spike starts then.", TIMES, "2024-01-01 11:30:00", "before_period"),
        ("B. Because the series jumps", KINDS, "Transient spike", "before_period"),
        ("No. Nothing unusual happens", YES_NO, "No", "before_period"),
        ("B.Because the series jumps", KINDS, "Transient spike", "before_period"),
        ("Level shift.The mean moves", KINDS, "Level shift", "before_period"),
        ("1. It is the largest", MAGNITUDES, "1", "before_period"),
    ],
)
def test_parse_answer_messy_outputs(raw: str, options: list[str], expected: str, status: str) -> None:
    assert parse_answer(raw, options) == (expected, status)


@pytest.mark.parametrize(
    ("raw", "options"),
    [
        ("", KINDS),
        ("   \n\t", KINDS),
        ("I cannot tell from the data", KINDS),
        ("asdf qwerty", KINDS),
        ("E", KINDS),  # letter out of range
        ("5", KINDS),  # index out of range
        ("0", KINDS),
        ('{"reasoning": "r", "answer": "Seasonality"}', KINDS),
        ('{"reasoning": "r", "answer": null}', KINDS),
        ("2", MAGNITUDES),  # numeric options: no index matching
        ("0.5", MAGNITUDES),
        ("The answer is 0.1 or maybe 1", MAGNITUDES),
        ("2024-01-01 12:00:00", TIMES),
        ("Level", KINDS),  # no partial / substring matching
        ("Yes", []),  # no options at all
    ],
)
def test_parse_answer_unmatched(raw: str, options: list[str]) -> None:
    assert parse_answer(raw, options) == (None, "unmatched")


def test_zero_point_one_is_not_cut_to_zero() -> None:
    # The reference cut at the first "." before matching: "0.1" became "0". Every route must keep "0.1".
    for raw in ("0.1", "0.1.", '{"answer": "0.1"}', '{"answer": 0.1}', "Answer: 0.1", "**Answer:** 0.1."):
        assert parse_answer(raw, MAGNITUDES)[0] == "0.1", raw
    assert parse_answer("1.0", MAGNITUDES)[0] == "1"  # same number, different spelling


def test_duplicates_by_case() -> None:
    options = ["Level shift", "level shift", "Transient spike"]
    assert parse_answer("level shift", options) == ("level shift", "raw")  # exact wins
    assert parse_answer("Level shift", options) == ("Level shift", "raw")
    assert parse_answer('{"answer": "Level shift"}', options) == ("Level shift", "json")
    assert parse_answer("LEVEL SHIFT", options) == (None, "unmatched")  # ambiguous: no guess
    assert parse_answer("C", options) == ("Transient spike", "raw")
    # exact duplicates are one text: no ambiguity
    assert parse_answer("yes", ["Yes", "Yes", "No"]) == ("Yes", "raw")


def test_letter_like_options_disable_letters() -> None:
    options = ["A", "B", "C or D"]
    assert parse_answer("B", options) == ("B", "raw")
    assert parse_answer("(c)", options) == (None, "unmatched")  # "c" could be option C or a label: no guess
    assert parse_answer("3", options) == ("C or D", "raw")  # indexes still work


def test_whitespace_and_punctuation_insensitive() -> None:
    options = ["service:a, host:b", "service:a and service:b", "No anomaly among the listed channels"]
    assert parse_answer("Service:A,  host:B", options) == ("service:a, host:b", "raw")
    assert parse_answer("no anomaly among the listed channels!", options)[0] == options[2]
    assert parse_answer('Answer: "service:a and service:b".', options) == (options[1], "answer_line")


def test_statuses_are_declared() -> None:
    assert set(PARSE_STATUSES) == {"json", "answer_line", "before_period", "raw", "unmatched"}
    for raw in ('{"answer": "Yes"}', "Answer: Yes", "Yes", "Yes. Sure", "???"):
        assert parse_answer(raw, YES_NO)[1] in PARSE_STATUSES


def test_match_option_steps() -> None:
    assert match_option("Yes", YES_NO) == "Yes"
    assert match_option(" yes. ", YES_NO) == "Yes"
    assert match_option("B", YES_NO) == "No"
    assert match_option("2", YES_NO) == "No"
    assert match_option("maybe", YES_NO) is None


def test_non_string_raw_is_tolerated() -> None:
    assert parse_answer(None, YES_NO) == (None, "unmatched")  # type: ignore[arg-type]


def _question(**overrides) -> Question:
    fields = dict(
        question_id=7,
        question="Is there an anomaly in the error rate of service:a?",
        category="Anomaly Presence",
        tier="Tier 1",
        options=("Yes", "No"),
        correct_answer="Yes",
        query_groups=("35928_0",),
    )
    fields.update(overrides)
    return Question(**fields)


def test_build_prompt_lists_lettered_options_and_asks_for_json() -> None:
    q = _question(options=tuple(KINDS), correct_answer="Level shift", category="Anomaly Categorization")
    prompt = build_prompt(q, KINDS, series_summary="3 variates x 120 steps at 60 s")
    assert q.question in prompt
    assert "3 variates x 120 steps at 60 s" in prompt
    for i, text in enumerate(KINDS):
        assert f"{'ABCD'[i]}. {text}" in prompt
    assert '"reasoning"' in prompt and '"answer"' in prompt
    assert prompt.index("A. Level shift") < prompt.index("D. No anomaly")
    # the JSON template in the prompt is valid JSON once filled in
    template = next(line for line in prompt.splitlines() if line.startswith("{"))
    assert set(json.loads(template)) == {"reasoning", "answer"}
    assert "summary" not in build_prompt(q, KINDS).lower()


def test_build_prompt_uses_given_order_and_round_trips() -> None:
    q = _question(options=tuple(KINDS), correct_answer="Level shift")
    shuffled, _ = shuffle_options(KINDS, 3)
    prompt = build_prompt(q, shuffled)
    assert f"A. {shuffled[0]}" in prompt
    # a reply with the letter of the prompt maps back to the shown option
    assert parse_answer("Answer: B", shuffled) == (shuffled[1], "answer_line")
    with pytest.raises(ValueError):
        build_prompt(q, [])


def test_shuffle_options_is_deterministic_and_a_permutation() -> None:
    options = [f"opt {i}" for i in range(8)]
    a, seed_a = shuffle_options(options, 42)
    b, seed_b = shuffle_options(tuple(options), 42)
    assert a == b and seed_a == seed_b == 42
    assert sorted(a) == sorted(options)
    assert options == [f"opt {i}" for i in range(8)]  # input untouched
    orders = {tuple(shuffle_options(options, s)[0]) for s in range(20)}
    assert len(orders) > 1
    same, seed = shuffle_options(options, NO_SHUFFLE)
    assert same == options and seed == NO_SHUFFLE


def test_option_seed_and_labels() -> None:
    assert option_seed(1, 5) == option_seed(1, 5)
    assert option_seed(1, 5) != option_seed(1, 6) != option_seed(2, 6)
    assert 0 <= option_seed(123, 10**9) < 2**63
    assert option_seed(-1, 5) == NO_SHUFFLE
    assert [option_label(i) for i in (0, 1, 25, 26, 27)] == ["A", "B", "Z", "AA", "AB"]
