"""The `openai` answerer: any OpenAI-compatible chat-completions endpoint (vLLM's server, hosted APIs), through the
official `openai` client, with concurrency, rate limits, retries, token accounting and a response cache.

Per question: the ARFBench-style system prompt, then the question and options (tasks' prompt, as the hybrid gets
it), with each group's plot (``inputs`` plot: the corpus' arfbench-images/ or one rendered in the actor), its series
as text (``inputs`` text: model/prompts.series_as_text, the downsampling rule recorded), or both. The reply is
parsed as every answer is (model/parsing.py); a reply cut off by ``max_tokens`` is recorded as truncated.

- Concurrency: ``answer_batch`` runs up to ``max_concurrency`` requests at once (asyncio); actors hand it a shard's
  questions together.
- Rate limits: paced token buckets for ``requests_per_minute`` and ``tokens_per_minute`` (prompt estimate +
  max_tokens per request), no burst; retries spend from them too.
- Retries: 429, 408, 409, 5xx, timeouts and connection errors are retried up to ``max_retries`` times, waiting what
  the server's Retry-After says, else exponential backoff with jitter (tenacity); anything else (400, 401, 403,
  404, 422, a malformed response) becomes the question's error row naming the cause, and the run goes on.
- Accounting: prompt and completion tokens, latency, the model name the server returned, cost (``price_in`` /
  ``price_out`` in USD per million tokens) and the option order's seed are recorded with each answer.
- Cache: keyed by a hash of (model, the full messages with images replaced by their sha256, sampling settings,
  this answerer's version), stored as JSON under ``cache_dir`` (local or s3://; the flow defaults it to
  ``{out}/cache``; "none" turns it off). A rerun with the same inputs under a new run id makes no call; any change
  of a key part misses.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from model.answerers import AnswererSpec, register_answerer
from model.errors import ArfscoreError
from model.parsing import parse_reply
from model.prompts import ARFBENCH_SYSTEM_PROMPT, DEFAULT_MAX_NEW_TOKENS, build_prompt, plotted_variates, question_options, series_as_text
from model.records import Answer, InputUse, Question, SeriesGroup
from model.settings import parse_settings
from tasks.storage import read_if_exists, result_filesystem, write_atomic

__all__ = ["API_ANSWERER_VERSION", "ApiAnswerError", "OpenAIAnswerer", "OpenAISettings", "ResponseCache", "TokenBucket"]

API_ANSWERER_VERSION = "openai-1"  # part of the cache key: bump when prompts or parsing change what a reply means


class ApiAnswerError(ArfscoreError):
    """One question's request failed for good (a non-retryable status, a malformed response, retries exhausted)."""


@dataclass(frozen=True)
class OpenAISettings:
    """--answerer-opt KEY=VALUE for `--answerer openai` (module docstring)."""

    base_url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"  # name of the variable holding the key (none needed for a local vLLM)
    inputs: Literal["plot", "text", "both"] = "plot"
    max_concurrency: int = 8
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    max_tokens: int = DEFAULT_MAX_NEW_TOKENS
    temperature: float = 0.0
    timeout_s: float = 120.0
    max_retries: int = 6
    price_in: float = 0.0  # USD per million prompt tokens
    price_out: float = 0.0  # USD per million completion tokens
    shuffle_options: bool = False
    system_prompt: str | None = None  # default: model/prompts.ARFBENCH_SYSTEM_PROMPT
    cache_dir: str | None = None  # "none": no cache
    threads: int = 0
    # How requests are made, not what they ask: a resume may change these (not in the run manifest).
    NOT_DEFINING: ClassVar[tuple[str, ...]] = (
        "api_key_env", "max_concurrency", "requests_per_minute", "tokens_per_minute", "timeout_s", "max_retries", "cache_dir", "threads",
    )
    PATHS: ClassVar[tuple[str, ...]] = ("cache_dir",)

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL, got {self.base_url!r}")
        if not self.model.strip():
            raise ValueError("model must name the served model")
        for name in ("max_concurrency", "max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("requests_per_minute", "tokens_per_minute"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.max_retries < 0 or self.timeout_s <= 0 or self.temperature < 0 or self.price_in < 0 or self.price_out < 0:
            raise ValueError("max_retries, price_in and price_out must be >= 0, timeout_s > 0, temperature >= 0")

    @property
    def batch_size(self) -> int:
        """Questions an actor hands the answerer at once: enough to keep max_concurrency requests in flight."""
        return 4 * self.max_concurrency

    def shard_size_hint(self) -> int:
        """Questions per shard by default: an actor's requests in flight are bounded by its shard's questions, so
        one batch, within [16, 512]."""
        return min(512, max(16, self.batch_size))


class TokenBucket:
    """``rate_per_minute`` units a minute, paced: no burst beyond one take (the largest take sets the capacity), so
    any window of T seconds sees at most one take plus rate x T units, as a provider's limiter counts them."""

    def __init__(self, rate_per_minute: float) -> None:
        self.rate = rate_per_minute / 60.0
        self.capacity = 1.0
        self.level = 1.0
        self.updated = time.monotonic()
        self.lock = asyncio.Lock()

    async def take(self, amount: float) -> None:
        async with self.lock:  # first come, first served
            self.capacity = max(self.capacity, amount)
            while True:
                now = time.monotonic()
                self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
                self.updated = now
                if self.level >= amount:
                    self.level -= amount
                    return
                await asyncio.sleep((amount - self.level) / self.rate)


class ResponseCache:
    """Replies by key, one JSON file each under ``location`` (a directory or s3://bucket/prefix)."""

    def __init__(self, location: str) -> None:
        self.location = location.rstrip("/")
        self.fs = result_filesystem(self.location)  # None for a local directory; s3fs takes s3:// paths as they are

    def _path(self, key: str) -> str:
        return f"{self.location}/{key[:2]}/{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        payload = read_if_exists(self._path(key), self.fs)
        return json.loads(payload) if payload else None

    def put(self, key: str, value: dict[str, Any]) -> None:
        payload = json.dumps(value, sort_keys=True).encode("utf-8")
        write_atomic(self._path(key), lambda handle: handle.write(payload), self.fs)


def _retry_after_s(error: BaseException) -> float | None:
    """Seconds the server asked to wait (Retry-After: seconds or an HTTP date), if it said."""
    response = getattr(error, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def _transient(error: BaseException) -> bool:
    import openai

    if isinstance(error, (openai.APITimeoutError, openai.APIConnectionError)):
        return True
    status = getattr(error, "status_code", None)
    return isinstance(error, openai.APIStatusError) and status is not None and (status in (408, 409, 429) or status >= 500)


class _Wait:
    """Retry-After when the server gives one, else exponential backoff with jitter."""

    def __init__(self) -> None:
        self.backoff = wait_exponential_jitter(multiplier=0.5, max=30.0)

    def __call__(self, retry_state: Any) -> float:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        told = _retry_after_s(error) if error is not None else None
        return told if told is not None else self.backoff(retry_state)


class OpenAIAnswerer:
    """See the module docstring."""

    def __init__(self, spec: AnswererSpec) -> None:
        self.name = spec.name
        self.seed = spec.seed
        self.settings: OpenAISettings = parse_settings(OpenAISettings, dict(spec.params), spec.name)
        self.reads_plots = self.settings.inputs in ("plot", "both")
        self.batch_size = self.settings.batch_size  # actors hand this many questions at once (at most a shard)
        cache_dir = self.settings.cache_dir
        self.cache = ResponseCache(cache_dir) if cache_dir and cache_dir.lower() != "none" else None
        self.calls = 0  # requests sent (cache hits send none)

    # ------------------------------------------------------------------------------------------------- messages

    def _messages(self, question: Question, options: list[str], series: Sequence[SeriesGroup]) -> tuple[list[dict], dict[str, Any]]:
        content: list[dict[str, Any]] = []
        seen: dict[str, Any] = {"images": 0, "text_rule": None, "variates_shown": 0}
        if self.settings.inputs in ("plot", "both"):
            for group in series:
                if group.image_png is None:
                    raise ApiAnswerError(f"query group {group.group_id}: no plot to send (inputs={self.settings.inputs})")
                encoded = base64.b64encode(group.image_png).decode("ascii")
                content.append({"type": "image_url", "image_url": {"url": f"data:image/png;base64,{encoded}"}})
                seen["images"] += 1
        summary = None
        if self.settings.inputs in ("text", "both"):
            summary, seen["text_rule"], seen["variates_shown"] = series_as_text(series)
        content.append({"type": "text", "text": build_prompt(question, options, summary)})
        system = self.settings.system_prompt or ARFBENCH_SYSTEM_PROMPT
        return [{"role": "system", "content": system}, {"role": "user", "content": content}], seen

    def _key(self, messages: list[dict]) -> str:
        def hashed(part: Any) -> Any:
            if isinstance(part, dict) and part.get("type") == "image_url":
                return {"type": "image_url", "sha256": hashlib.sha256(part["image_url"]["url"].encode()).hexdigest()}
            return part

        frozen = [{**m, "content": [hashed(p) for p in m["content"]] if isinstance(m["content"], list) else m["content"]} for m in messages]
        body = {"model": self.settings.model, "messages": frozen, "temperature": self.settings.temperature,
                "max_tokens": self.settings.max_tokens, "version": API_ANSWERER_VERSION}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode("utf-8")).hexdigest()

    # -------------------------------------------------------------------------------------------------- calling

    async def _call(self, client: Any, messages: list[dict], limits: list[tuple[TokenBucket, float]]) -> dict[str, Any]:
        """The reply as a plain record (what the cache stores), after limits and retries."""
        import openai

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.settings.max_retries + 1), wait=_Wait(), retry=retry_if_exception(_transient), reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    for bucket, amount in limits:
                        await bucket.take(amount)
                    self.calls += 1
                    response = await client.chat.completions.create(
                        model=self.settings.model, messages=messages, max_tokens=self.settings.max_tokens,
                        temperature=self.settings.temperature,
                    )
        except openai.APIStatusError as error:
            attempts = retrying.statistics.get("attempt_number", 1)
            raise ApiAnswerError(f"API error {error.status_code} ({type(error).__name__}) after {attempts} attempt(s): {error.message}") from error
        except (openai.APITimeoutError, openai.APIConnectionError) as error:
            raise ApiAnswerError(f"API unreachable after {self.settings.max_retries + 1} attempt(s): {type(error).__name__}: {error}") from error
        except (openai.APIResponseValidationError, json.JSONDecodeError, ValueError) as error:
            raise ApiAnswerError(f"malformed API response: {type(error).__name__}: {error}") from error
        if not getattr(response, "choices", None):
            raise ApiAnswerError("malformed API response: no choices")
        choice = response.choices[0]
        usage = getattr(response, "usage", None)
        return {
            "text": (choice.message.content or "") if choice.message else "",
            "finish_reason": choice.finish_reason,
            "served_model": getattr(response, "model", None),
            "prompt_tokens": getattr(usage, "prompt_tokens", None),
            "completion_tokens": getattr(usage, "completion_tokens", None),
        }

    async def _one(self, client: Any, gate: asyncio.Semaphore, limits: list[TokenBucket | None], question: Question,
                   series: Sequence[SeriesGroup]) -> Answer:
        started = time.perf_counter()
        options, seed = question_options(question, self.seed, self.settings.shuffle_options)
        messages, seen = self._messages(question, options, series)
        key = self._key(messages)
        reply = await asyncio.to_thread(self.cache.get, key) if self.cache is not None else None
        cached = reply is not None
        if reply is None:
            prompt_estimate = sum(len(json.dumps(m)) for m in messages) / 4 if self.settings.inputs != "plot" else 1500.0
            wanted = [(limits[0], 1.0)] if limits[0] else []
            if limits[1]:
                wanted.append((limits[1], prompt_estimate + self.settings.max_tokens))
            async with gate:
                reply = await self._call(client, messages, wanted)
            if self.cache is not None:
                await asyncio.to_thread(self.cache.put, key, reply)
        parsed, status = parse_reply(reply["text"], options, finished=reply["finish_reason"] != "length")
        prompt_tokens, completion_tokens = reply["prompt_tokens"], reply["completion_tokens"]
        cost = ((prompt_tokens or 0) * self.settings.price_in + (completion_tokens or 0) * self.settings.price_out) / 1e6
        variates = sum(g.n_variates for g in series)
        steps = sum(g.n_steps for g in series)
        drawn = plotted_variates(series)
        shown = {"plot": drawn, "text": seen["variates_shown"], "both": max(drawn, seen["variates_shown"])}[self.settings.inputs]
        notes = {"option_order_seed": str(seed), "cache": "hit" if cached else "miss"}
        if seen["text_rule"]:
            notes["text_rule"] = seen["text_rule"]
        return Answer(
            raw_response=reply["text"], parsed_answer=parsed, parse_status=status, latency_s=time.perf_counter() - started,
            tokens_in=prompt_tokens, tokens_out=completion_tokens, notes=notes,
            inputs=InputUse(
                variates_used=shown, variates_total=variates, steps_used=steps, steps_total=steps,
                context_policy=self.settings.inputs, channels_total=variates, images_given=seen["images"],
            ),
            served_model=reply["served_model"], cost_usd=None if cached else cost, cache_hit=cached,
        )

    async def _all(self, questions: Sequence[Question], series_list: Sequence[Sequence[SeriesGroup]]) -> list[Answer | Exception]:
        import openai

        key = os.environ.get(self.settings.api_key_env) or "none"  # a local vLLM server takes any key
        client = openai.AsyncOpenAI(base_url=self.settings.base_url, api_key=key, max_retries=0, timeout=self.settings.timeout_s)
        gate = asyncio.Semaphore(self.settings.max_concurrency)
        limits = [
            TokenBucket(self.settings.requests_per_minute) if self.settings.requests_per_minute else None,
            TokenBucket(self.settings.tokens_per_minute) if self.settings.tokens_per_minute else None,
        ]
        try:
            tasks = [self._one(client, gate, limits, q, s) for q, s in zip(questions, series_list)]
            return list(await asyncio.gather(*tasks, return_exceptions=True))
        finally:
            await client.close()

    def answer_batch(self, questions: Sequence[Question], series_list: Sequence[Sequence[SeriesGroup]]) -> list[Answer | Exception]:
        """Every question concurrently (up to max_concurrency requests at once); a question that failed for good
        comes back as its exception (the actor turns it into that question's error row)."""
        results = asyncio.run(self._all(questions, series_list))
        for item in results:
            if isinstance(item, BaseException) and not isinstance(item, Exception):
                raise item
        return results

    def answer(self, question: Question, series: Sequence[SeriesGroup]) -> Answer:
        result = self.answer_batch([question], [series])[0]
        if isinstance(result, Exception):
            raise result
        return result


def create_openai_answerer(spec: AnswererSpec) -> OpenAIAnswerer:
    return OpenAIAnswerer(spec)


register_answerer("openai", create_openai_answerer, settings=OpenAISettings)
