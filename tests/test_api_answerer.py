"""The `openai` answerer against a real chat-completions server on 127.0.0.1 (tests/chat_server.py), through the
real `openai` client: retries with Retry-After, error rows for what cannot succeed, the request rate within the
limit, tokens and cost, and a cache that makes a rerun free."""

from __future__ import annotations

import time

import numpy as np
import pytest

from model.answerers import AnswererSpec, create_answerer
from model.records import Question, SeriesGroup
from tasks.api_answerer import ApiAnswerError
from tests.chat_server import SERVED_MODEL, ChatServer

OPTIONS = ("Yes, there is an anomaly", "No, there is no anomaly")


@pytest.fixture
def server():
    started = ChatServer().start()
    yield started
    started.stop()


def _question(qid: int, marker: str = "") -> Question:
    return Question(qid, f"Is there an anomaly? {marker}", "Anomaly Presence", "Tier 1", OPTIONS, OPTIONS[0], ("g",))


def _series() -> list[SeriesGroup]:
    values = np.random.default_rng(0).normal(size=(3, 200)).astype(np.float32)
    return [SeriesGroup("g", values, ("host:a", "host:b", "host:c"), 1_700_000_000 * 10**9, 60)]


def _answerer(server: ChatServer, **settings):
    params = {"base_url": server.base_url, "model": "test-model", "inputs": "text", "timeout_s": "1", "cache_dir": "none", **settings}
    return create_answerer(AnswererSpec("openai", params={k: str(v) for k, v in params.items()}))


def test_transient_failures_are_retried_honouring_retry_after(server):
    answerer = _answerer(server, max_retries=4)
    started = time.perf_counter()
    results = answerer.answer_batch(
        [_question(1, "[[429x2]]"), _question(2, "[[500x1]]"), _question(3, "[[slow1]]"), _question(4)], [_series()] * 4
    )
    assert all(not isinstance(r, Exception) for r in results), results
    assert [r.parsed_answer for r in results] == [OPTIONS[0]] * 4
    assert answerer.calls == 3 + 2 + 2 + 1
    assert time.perf_counter() - started >= 0.4  # two Retry-After waits of 0.2 s for question 1
    first = results[0]
    assert first.served_model == SERVED_MODEL and (first.tokens_in, first.tokens_out) == (100, 20)
    assert first.inputs.context_policy == "text" and "text_rule" in first.notes


def test_what_cannot_succeed_comes_back_as_the_questions_error(server):
    answerer = _answerer(server, max_retries=2)
    bad, malformed, always_429, cut = answerer.answer_batch(
        [_question(1, "[[bad]]"), _question(2, "[[malformed]]"), _question(3, "[[429x9]]"), _question(4, "[[length]]")], [_series()] * 4
    )
    assert isinstance(bad, ApiAnswerError) and "API error 400 (BadRequestError) after 1 attempt(s)" in str(bad)
    assert isinstance(malformed, ApiAnswerError) and "malformed API response" in str(malformed)
    assert isinstance(always_429, ApiAnswerError) and "API error 429 (RateLimitError) after 3 attempt(s)" in str(always_429)
    assert cut.parse_status == "truncated" and cut.parsed_answer is None


def test_the_request_rate_stays_within_the_limit(server):
    answerer = _answerer(server, max_concurrency=8, requests_per_minute=600)  # 10 a second, paced
    started = time.perf_counter()
    results = answerer.answer_batch([_question(i) for i in range(30)], [_series()] * 30)
    elapsed = time.perf_counter() - started
    assert len(results) == 30 and all(not isinstance(r, Exception) for r in results)
    stamps = sorted(t for t, _ in server.requests)
    assert elapsed >= 2.8  # 29 intervals of 0.1 s after the first request
    worst = max(sum(1 for t in stamps if s <= t < s + 1.0) for s in stamps)
    print(f"\nFIGURE rate limit 600/min: 30 requests in {elapsed:.2f} s, at most {worst} in any second")
    assert worst <= 11


def test_tokens_cost_and_a_cache_that_makes_reruns_free(server, tmp_path):
    cache = str(tmp_path / "cache")
    first = _answerer(server, cache_dir=cache, price_in=1.0, price_out=2.0)
    answers = first.answer_batch([_question(i) for i in range(5)], [_series()] * 5)
    assert first.calls == 5 and all(a.cost_usd == pytest.approx((100 * 1.0 + 20 * 2.0) / 1e6) for a in answers)
    assert all(a.cache_hit is False for a in answers)
    again = _answerer(server, cache_dir=cache, price_in=1.0, price_out=2.0)
    cached = again.answer_batch([_question(i) for i in range(5)], [_series()] * 5)
    assert again.calls == 0 and len(server.requests) == 5  # no request at all
    assert all(a.cache_hit and a.cost_usd is None for a in cached) and [a.raw_response for a in cached] == [a.raw_response for a in answers]
    changed = _answerer(server, cache_dir=cache, temperature=0.5)
    changed.answer_batch([_question(0)], [_series()])
    assert changed.calls == 1  # another sampling setting: another key
    other_model = _answerer(server, cache_dir=cache, model="another-model")
    other_model.answer_batch([_question(0)], [_series()])
    assert other_model.calls == 1


def test_plots_are_sent_as_images_and_missing_plots_are_an_error(server):
    from tasks.plots import arfbench_plot

    series = _series()
    with_plot = [SeriesGroup(g.group_id, g.values, g.variate_names, g.start_ns, g.interval_s, arfbench_plot(g)) for g in series]
    answerer = _answerer(server, inputs="plot")
    assert answerer.reads_plots
    answer = answerer.answer(_question(1), with_plot)
    body = server.requests[-1][1]
    parts = body["messages"][-1]["content"]
    assert parts[0]["type"] == "image_url" and parts[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert answer.inputs.images_given == 1 and answer.parsed_answer == OPTIONS[0]
    with pytest.raises(ApiAnswerError, match="no plot to send"):
        answerer.answer(_question(2), series)


@pytest.mark.usefixtures("ray_cluster", "prefect_harness")
def test_a_scoring_run_through_the_flow_records_usage_and_a_rerun_makes_no_call(small_corpus, tmp_path, server):
    from flows.score import score_corpus
    from tasks.store import read_answers, read_manifest

    settings = {"base_url": server.base_url, "model": "test-model", "inputs": "both", "price_in": "1", "price_out": "2"}
    score_corpus(corpus=str(small_corpus), answerer="openai", run_id="api-1", out=str(tmp_path), shard_size=8, answerer_settings=settings)
    first = read_answers(str(tmp_path), "api-1")
    assert len(first) == 24 and (first["status"] == "ok").all(), first["error"].dropna().tolist()
    assert set(first["served_model"]) == {SERVED_MODEL} and (first["cache_hit"] == False).all()  # noqa: E712
    assert (first["prompt_tokens"] == 100).all() and first["cost_usd"].sum() == pytest.approx(24 * 140 / 1e6)
    assert (first["images_given"] >= 1).all() and set(first["context_policy"]) == {"both"}
    calls = len(server.requests)
    assert calls == 24
    score_corpus(corpus=str(small_corpus), answerer="openai", run_id="api-2", out=str(tmp_path), answerer_settings=settings)
    second = read_answers(str(tmp_path), "api-2")
    assert len(server.requests) == calls and second["cache_hit"].all()  # a new run id, the same inputs: no call
    assert list(second["parsed_answer"]) == list(first["parsed_answer"])
    assert (tmp_path / "cache").is_dir()
    # No --shard-size: a new run takes 4 x max_concurrency (8 by default), a resume keeps what it recorded.
    assert read_manifest(str(tmp_path), "api-2")["shard_size"] == 32
    score_corpus(corpus=str(small_corpus), answerer="openai", run_id="api-1", out=str(tmp_path), answerer_settings=settings)
    assert read_manifest(str(tmp_path), "api-1")["shard_size"] == 8 and len(read_answers(str(tmp_path), "api-1")) == 24


def test_the_cache_and_rendered_plots_live_on_s3_too(server, s3_server, small_corpus):
    from tasks.corpus import load_corpus
    from tasks.images import render_plots
    from tasks.storage import s3_filesystem

    fs = s3_filesystem()
    if not fs.exists("api-cache"):
        fs.mkdir("api-cache")
    first = _answerer(server, cache_dir="s3://api-cache/run-cache")
    questions = [_question(i, f"(number {i})") for i in range(3)]  # three prompts, three keys
    answers = first.answer_batch(questions, [_series()] * 3)
    again = _answerer(server, cache_dir="s3://api-cache/run-cache")
    cached = again.answer_batch(questions, [_series()] * 3)
    assert first.calls == 3 and again.calls == 0 and [a.raw_response for a in cached] == [a.raw_response for a in answers]
    assert len(fs.find("api-cache/run-cache")) == 3 and not any(".tmp" in path for path in fs.find("api-cache"))

    corpus = load_corpus(str(small_corpus))
    counts = render_plots(corpus, "s3://api-cache/plots")
    assert counts == {"written": len(corpus.group_files), "kept": 0, "failed": 0}
    assert render_plots(corpus, "s3://api-cache/plots")["kept"] == len(corpus.group_files)
    assert sorted(fs.ls("api-cache/plots")) == sorted(f"api-cache/plots/{g}.png" for g in corpus.group_files)
