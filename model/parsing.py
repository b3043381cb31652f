"""Read a model's free-text reply back into one of the question's options (DESIGN.md section 6).

Pure functions, no I/O.

Candidates are taken from the reply in this order, and the first candidate that matches an option wins:

1. ``json``: the "answer" field of a JSON object: the whole reply, a ```json fenced block, or an object embedded in
   surrounding prose; single-quoted (Python-style) objects and truncated objects (regex on ``"answer": ...``) are
   accepted too. The answer may be a string or a number (numbers keep their literal text, so 0.10 stays "0.10").
2. ``answer_line``: a line ``Answer: X`` (case-insensitive, optional markdown ``**`` around, "Final answer:" too);
   the last such line is tried first (models put the final answer last).
3. ``raw``: the whole reply (stripped), then its first non-empty line.
4. ``before_period``: the text before the first "." that is not a decimal point (a "." between two digits, as
   in "0.5", is never a cut point, so "0.5" cannot become the option "0").

Every candidate is first matched WHOLE; cutting at "." only ever makes new, later candidates. That is the fix for
the reference, which cut at the first "." before matching and so turned "0.1" into "0". For the same reason the
whole reply (``raw``) is tried before the ``before_period`` cuts: if the entire reply is an option, it is the answer.
Inside the json and answer_line steps, a value that does not match whole is also tried cut at its first period
in the same way (same status).

Matching one candidate against the options (:func:`match_option`):
exact text -> case/whitespace-insensitive (internal whitespace collapsed, surrounding quotes/backticks/markdown
``*`` and trailing punctuation stripped; numbers also compare by value, "0.10" == "0.1") -> an option letter
("B", "(B)", "B)", "B.", "Option B", "B) level shift" when the text agrees) or a 1-based index. A normalised match
that hits two different option texts (options duplicated up to case) is ambiguous and matches nothing. Letters
are not used when an option is itself letter-like, indexes are not used when an option is a number.

Unmatched replies give ``(None, "unmatched")``: they are invalid answers, counted, never dropped.
"""

from __future__ import annotations

import ast
import json
import re
import unicodedata
from collections.abc import Iterator, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = ["PARSE_STATUSES", "match_option", "parse_answer", "parse_reply"]

PARSE_STATUSES: tuple[str, ...] = ("json", "answer_line", "before_period", "raw", "unmatched")

_MAX_JSON_STARTS = 256  # bound the work on pathological replies with many "{"

# A line "Answer: X", "**Answer:** X", "**Answer: X**", "Final answer: X" (any case; full-width colon too).
_ANSWER_LINE = re.compile(
    r"^[ \t>#*_\-]*(?:the[ \t]+)?(?:final[ \t]+)?answer[ \t*]*[:\uff1a][ \t*]*(?P<value>.*?)[ \t*]*$",
    re.IGNORECASE | re.MULTILINE,
)
# The "answer" field read directly, for JSON that does not parse (truncated, stray quotes).
_ANSWER_FIELD = re.compile(
    r"""["']answer["']\s*:\s*"""
    r"""(?:"(?P<dq>(?:[^"\\]|\\.)*)"|'(?P<sq>(?:[^'\\]|\\.)*)'|(?P<num>[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?))""",
    re.IGNORECASE,
)
_PERIOD = re.compile(r"(?<!\d)\.|\.(?!\d)")  # a "." that is not a decimal point
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_LETTER_ONLY = re.compile(r"\(?\s*(?:option\s+)?(?P<label>[A-Za-z]{1,2}|\d{1,4})\s*\)?\s*[.:)]?", re.IGNORECASE)
_LETTER_PREFIX = re.compile(
    r"\(?\s*(?:option\s+)?(?P<label>[A-Za-z]{1,2})\s*[.:)]\s*(?P<rest>\S.*)", re.IGNORECASE | re.DOTALL
)
_STRIP_CHARS = " \t\r\n\"'`*\u201c\u201d\u2018\u2019"
_TRAILING_PUNCT = ".,;:!?"


class _Literal(str):
    """A JSON number kept as its literal text."""


def parse_answer(raw: str, options: Sequence[str]) -> tuple[str | None, str]:
    """Return (the exact text of the chosen option, or None; the parse status).

    Status is one of ``PARSE_STATUSES``: the step whose candidate matched, or "unmatched".
    """
    text = "" if raw is None else str(raw)
    opts = [str(o) for o in options]
    if not text.strip() or not opts:
        return None, "unmatched"
    tried: set[str] = set()
    for candidate, status in _candidates(text):
        key = candidate.strip()
        if not key or key in tried:
            continue
        tried.add(key)
        chosen = match_option(key, opts)
        if chosen is not None:
            return chosen, status
    return None, "unmatched"


def parse_reply(raw: str, options: Sequence[str], finished: bool) -> tuple[str | None, str]:
    """:func:`parse_answer` of a model's reply; a reply cut off by the token limit (``finished`` False) has no
    answer, whatever it says so far: (None, "truncated")."""
    return parse_answer(raw, options) if finished else (None, "truncated")


# ---------------------------------------------------------------------------------------------------- candidates


def _candidates(text: str) -> Iterator[tuple[str, str]]:
    for value in _json_answers(text):
        yield from ((c, "json") for c in _with_cuts(value))
    for value in _answer_lines(text):
        yield from ((c, "answer_line") for c in _with_cuts(value))
    stripped = text.strip()
    yield stripped, "raw"
    first_line = next((line for line in stripped.splitlines() if line.strip()), "")
    yield first_line, "raw"
    period = _PERIOD.search(stripped)
    if period:
        yield stripped[: period.start()], "before_period"


def _with_cuts(value: str) -> list[str]:
    """The value whole, then cut at its first period (never at a decimal point)."""
    out = [value]
    period = _PERIOD.search(value.strip())
    if period:
        out.append(value.strip()[: period.start()])
    return out


def _answer_lines(text: str) -> list[str]:
    lines = text.splitlines()
    values: list[str] = []
    for i, line in enumerate(lines):
        m = _ANSWER_LINE.match(line)
        if not m:
            continue
        value = m.group("value").strip()
        if not value:  # "Answer:" alone on its line: the answer is on the next non-empty line
            value = next((nxt.strip() for nxt in lines[i + 1 :] if nxt.strip()), "")
        if value:
            values.append(value)
    return values[::-1]  # last answer line first


def _json_answers(text: str) -> list[str]:
    values: list[str] = []
    for obj in _json_objects(text):
        value = _answer_field(obj)
        if value is not None and value not in values:
            values.append(value)
    if not values:  # truncated or otherwise broken JSON: read the field directly
        for m in _ANSWER_FIELD.finditer(text):
            if m.group("dq") is not None:
                try:
                    value = json.loads(f'"{m.group("dq")}"')
                except json.JSONDecodeError:
                    value = m.group("dq")
            elif m.group("sq") is not None:
                value = m.group("sq").replace("\\'", "'")
            else:
                value = m.group("num")
            if value not in values:
                values.append(value)
    return values


def _json_objects(text: str) -> Iterator[Any]:
    """Dicts found in the text: strict JSON at each "{" first, then Python-literal objects (single quotes)."""
    decoder = json.JSONDecoder(parse_float=_Literal, parse_int=_Literal)
    starts = [m.start() for m in re.finditer(r"\{", text)][:_MAX_JSON_STARTS]
    found = False
    pos = 0
    for start in starts:
        if start < pos:  # inside an object already decoded
            continue
        try:
            obj, end = decoder.raw_decode(text, start)
        except (json.JSONDecodeError, RecursionError, ValueError):
            continue
        pos = end
        found = True
        yield obj
    if found:
        return
    for start in starts:
        block = _balanced_block(text, start)
        if block is None:
            continue
        for source in (block, re.sub(r"\btrue\b|\bfalse\b|\bnull\b", _py_keyword, block)):
            try:
                obj = ast.literal_eval(source)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
            yield obj
            break


def _py_keyword(m: re.Match[str]) -> str:
    return {"true": "True", "false": "False", "null": "None"}[m.group(0)]


def _balanced_block(text: str, start: int) -> str | None:
    depth = 0
    for i in range(start, len(text)):
        ch = text[i]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start : i + 1]
    return None


def _answer_field(obj: Any, depth: int = 0) -> str | None:
    """The "answer" value of a dict (searched one level of nesting down too), as text."""
    if not isinstance(obj, dict) or depth > 2:
        return None
    for key in ("answer", "final_answer", "final answer"):
        for k, v in obj.items():
            if isinstance(k, str) and k.strip().lower() == key:
                value = _as_text(v)
                if value is not None:
                    return value
    for v in obj.values():
        if isinstance(v, dict):
            value = _answer_field(v, depth + 1)
            if value is not None:
                return value
    return None


def _as_text(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):  # includes _Literal (a JSON number kept as written)
        return value
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dict) and "value" in value:
        return _as_text(value["value"])
    if isinstance(value, (list, tuple)) and len(value) == 1:
        return _as_text(value[0])
    return None


# ------------------------------------------------------------------------------------------------------ matching


def _normalise(text: str) -> str:
    s = unicodedata.normalize("NFKC", text)
    previous = None
    while s != previous:  # peel quotes, markdown and trailing punctuation in any nesting: '"B."' -> B
        previous = s
        s = s.strip(_STRIP_CHARS).rstrip(_TRAILING_PUNCT)
    return " ".join(s.split()).casefold()


def _as_number(text: str) -> Decimal | None:
    if not _NUMBER.fullmatch(text):
        return None
    try:
        return Decimal(text)
    except InvalidOperation:
        return None


def _label_index(label: str) -> int:
    index = 0
    for ch in label.upper():
        index = index * 26 + (ord(ch) - ord("A") + 1)
    return index - 1


def _looks_like_label(option: str) -> bool:
    """An option that could be read as a letter ("A", "(b)", "AB"): then letters are not used for matching."""
    bare = option.strip(_STRIP_CHARS)
    return bool(re.fullmatch(r"\(?(?:[A-Za-z]|[A-Z]{2})\)?[.:)]?", bare))


def _unique(hits: list[str]) -> str | None:
    distinct = list(dict.fromkeys(hits))
    return distinct[0] if len(distinct) == 1 else None


def match_option(candidate: str, options: Sequence[str]) -> str | None:
    """Match one candidate text to an option (exact, normalised, then letter/index); None when nothing or ambiguous."""
    cand = candidate.strip()
    if not cand or not options:
        return None
    if cand in options:
        return cand
    norm = _normalise(cand)
    if not norm:
        return None
    norm_options = [_normalise(o) for o in options]
    hits = [o for o, n in zip(options, norm_options) if n == norm]
    if hits:
        return _unique(hits)  # several different texts equal up to case: ambiguous, not a guess
    number = _as_number(norm)
    numeric_options = [_as_number(n) for n in norm_options]
    if number is not None:
        hits = [o for o, v in zip(options, numeric_options) if v is not None and v == number]
        if hits:
            return _unique(hits)

    letters_ok = not any(_looks_like_label(o) for o in options)
    index_ok = not any(v is not None for v in numeric_options)
    bare = cand.strip(_STRIP_CHARS)
    m = _LETTER_ONLY.fullmatch(bare)
    if m:
        label = m.group("label")
        if label.isdigit():
            i = int(label) - 1
            return options[i] if index_ok and 0 <= i < len(options) else None
        if len(label) == 2 and not label.isupper():
            return None  # "no", "ok": words, not labels
        i = _label_index(label)
        return options[i] if letters_ok and 0 <= i < len(options) else None
    m = _LETTER_PREFIX.fullmatch(bare)
    if m and letters_ok and (len(m.group("label")) == 1 or m.group("label").isupper()):
        i = _label_index(m.group("label"))
        if 0 <= i < len(options) and _normalise(m.group("rest")) == norm_options[i]:
            return options[i]
    return None
