"""One self-contained HTML page for analysts: leaderboard with intervals, paired comparisons, plots, drilldowns.

Everything is inside the file (images as data: URIs, no script, no external resource), so it can be mailed or
attached to a ticket. Sections link to each other: the leaderboard's run names lead to each run's section, whose
list of wrong answers leads to their drilldowns. Built from the DuckDB views and the answer Parquet under ``out``;
drilldowns read the series from the run's corpus (recorded in the run record) and are skipped, with a note, when
it cannot be read.
"""

from __future__ import annotations

import base64
import html
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from model.records import Question
from tasks import plots
from tasks.corpus import Corpus, load_corpus
from tasks.intervals import DEFAULT_BOOTSTRAP, compare_runs
from tasks.metrics import _as_options, bin_answer
from tasks.report import read_leaderboard, with_interval
from tasks.store import open_views, read_answers

__all__ = ["write_html_report"]

_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 1400px; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f2f2f2; } td.text, th.text { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.significant { font-weight: bold; } .note { color: #666; font-size: 0.9em; }
nav a { margin-right: 1em; }
"""


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _anchor(*parts: Any) -> str:
    return "-".join("".join(ch if ch.isalnum() else "_" for ch in str(part)) for part in parts)


def _table(frame: pd.DataFrame, table_id: str = "", text_columns: Sequence[str] = ()) -> str:
    head = "".join(f'<th class="{"text" if c in text_columns else ""}">{html.escape(str(c))}</th>' for c in frame.columns)
    body = []
    for row in frame.itertuples(index=False):
        cells = "".join(
            f'<td class="{"text" if column in text_columns else ""}">{value if str(value).startswith("<a ") else html.escape(str(value))}</td>'
            for column, value in zip(frame.columns, row)
        )
        body.append(f"<tr>{cells}</tr>")
    ident = f' id="{table_id}"' if table_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _leaderboard_section(board: pd.DataFrame) -> str:
    shown = pd.DataFrame({
        "answerer": board["answerer"],
        "run": [f'<a href="#{_anchor("run", r)}">{html.escape(r)}</a>' for r in board["run_id"]],
        "n": board["n"],
        "accuracy [95% CI]": _intervals(board, "accuracy"),
        "macro F1 [95% CI]": _intervals(board, "macro_f1"),
        "invalid": board["invalid"],
        "errors": board["n_error"],
    })
    return (
        '<h2 id="leaderboard">Leaderboard</h2>'
        + _table(shown, "leaderboard", ("answerer", "run"))
        + '<p class="note">Intervals: 95% cluster bootstrap over query groups (questions about one incident are resampled '
        "together). Two runs whose intervals overlap may still differ: compare them pairwise below.</p>"
    )


def _intervals(frame: pd.DataFrame, column: str) -> list[str]:
    return [with_interval(*v) for v in zip(frame[column], frame[f"{column}_lo"], frame[f"{column}_hi"])]


def _comparison_section(answers_of: Mapping[str, pd.DataFrame], runs: Sequence[str], resamples: int) -> str:
    if len(runs) < 2:
        return '<h2 id="comparison">Comparison</h2><p class="note">Choose two or more runs to compare them.</p>'
    parts = ['<h2 id="comparison">Comparison with the first run</h2>']
    for other in runs[1:]:
        table = compare_runs(answers_of[runs[0]], answers_of[other], resamples)
        overall = table[table["scope"] == "overall"].iloc[0]
        shown = pd.DataFrame({
            "scope": table["scope"], "key": table["key"], "n": table["n"],
            f"accuracy {runs[0]}": table["accuracy_a"].map("{:.3f}".format), f"accuracy {other}": table["accuracy_b"].map("{:.3f}".format),
            "difference [95% CI]": _intervals(table, "accuracy_diff"),
            "macro F1 difference [95% CI]": _intervals(table, "macro_f1_diff"),
            "right only in first": table["right_only_a"], "right only in second": table["right_only_b"],
            "McNemar p": table["mcnemar_p"].map("{:.3g}".format),
        })
        parts.append(f'<h3 id="{_anchor("compare", runs[0], other)}">{html.escape(other)} vs {html.escape(runs[0])}</h3>')
        parts.append(_table(shown, text_columns=("scope", "key")))
        flipped = int(overall["right_only_a"] + overall["right_only_b"])
        parts.append(f'<p class="note">{flipped} question(s) flipped between the runs.</p>')
    return "".join(parts)


def _confusions(answers: pd.DataFrame) -> list[tuple[str, bytes]]:
    images = []
    for category, rows in answers.groupby("category", sort=True):
        truths, predictions = [], []
        for options, truth, predicted in zip(rows["options"], rows["correct_answer"], rows["parsed_answer"]):
            opts = _as_options(options)
            truths.append(bin_answer(category, truth, opts))
            predictions.append(bin_answer(category, predicted, opts) if isinstance(predicted, str) else None)
        labels = sorted({t for t in truths if t is not None})
        if labels:
            images.append((category, plots.confusion_matrix(category, truths, predictions, labels)))
    return images


def _drilldowns(
    con: Any, answers: pd.DataFrame, run: str, limit: int, corpora: dict[str, tuple[Corpus, dict[int, Question]] | Exception]
) -> tuple[list[str], list[str]]:
    """(links to the wrong answers, the drilldown sections) of one run. ``corpora``: corpora loaded so far by
    location (runs usually share one), with their questions by id, or why one could not be read."""
    wrong = answers[~answers["is_correct"].astype(bool)].sort_values("question_id")
    links = [
        f'<a href="#{_anchor("drill", run, q)}">{q}</a>' if position < limit else str(q)
        for position, q in enumerate(wrong["question_id"])
    ]
    if wrong.empty or limit <= 0:
        return links, []
    corpus_location = con.execute("select corpus from stg_runs where run_id = ?", [run]).fetchone()
    corpus, by_id = None, {}
    if corpus_location:
        location = corpus_location[0]
        if location not in corpora:
            try:
                loaded = load_corpus(location)
                corpora[location] = (loaded, {q.question_id: q for q in loaded.questions})
            except Exception as error:  # the report still goes out, with the reason
                corpora[location] = error
        if isinstance(corpora[location], Exception):
            reason = html.escape(str(corpora[location]))
            return links, [f'<p class="note">No drilldowns for {html.escape(run)}: corpus unreadable ({reason})</p>']
        corpus, by_id = corpora[location]
    sections = []
    for row in wrong.head(limit).itertuples():
        question = by_id.get(row.question_id)
        title = f"{html.escape(run)}: question {row.question_id} ({html.escape(str(row.category))})"
        header = f'<h4 id="{_anchor("drill", run, row.question_id)}">{title}</h4>'
        if question is None:
            sections.append(header + '<p class="note">question not in the corpus any more</p>')
            continue
        try:
            groups = [corpus.open_group(g) for g in question.query_groups]
        except Exception as error:
            sections.append(header + f'<p class="note">series unreadable: {html.escape(str(error))}</p>')
            continue
        png = plots.drilldown(groups, question.question, list(question.options), question.correct_answer, row.parsed_answer)
        text = (f"<p>{html.escape(question.question)}</p><p>correct: <b>{html.escape(question.correct_answer)}</b>; predicted: "
                f"<b>{html.escape(str(row.parsed_answer))}</b>{' (error: ' + html.escape(str(row.error)) + ')' if row.status == 'error' else ''}</p>")
        sections.append(header + text + _img(png, f"drilldown of question {row.question_id}"))
    return links, sections


def write_html_report(
    out: str, path: str, run_ids: Sequence[str] | None = None, max_drilldown: int = 20, resamples: int = DEFAULT_BOOTSTRAP
) -> dict[str, Any]:
    """Write the page to ``path``; returns {"path", "seconds", "bytes", "runs", "images"}. ValueError without runs.

    ``max_drilldown`` wrong answers are drawn in all, shared round-robin between the runs (the first runs get the
    remainder); every wrong answer is still listed."""
    started = time.perf_counter()
    board = read_leaderboard(out, run_ids)
    if board.empty:
        raise ValueError(f"no runs under {out}")
    runs = list(run_ids) if run_ids else sorted(board["run_id"])
    con = open_views(out)
    try:
        cells = con.execute(
            f"select * from category_tier where run_id in ({', '.join('?' for _ in runs)}) order by run_id, tier, category", runs
        ).df()
        per_category = cells.rename(columns={"category": "key"})
        sections = [_leaderboard_section(board)]
        category_table = cells.assign(
            **{"accuracy [95% CI]": _intervals(cells, "accuracy"), "macro F1 [95% CI]": _intervals(cells, "macro_f1")}
        )[["run_id", "category", "tier", "n", "accuracy [95% CI]", "macro F1 [95% CI]", "invalid"]]
        sections.append('<h2 id="categories">Categories and tiers</h2>' + _table(category_table, "categories", ("run_id", "category", "tier")))
        answers_of = {run: read_answers(out, run) for run in runs}
        sections.append(_comparison_section(answers_of, runs, resamples))
        sections.append('<h2 id="plots">Plots</h2>' + _img(plots.accuracy_by_category(per_category), "accuracy per category")
                        + _img(plots.category_tier_heatmap(cells), "category x tier heatmap"))
        quotas = [max_drilldown // len(runs) + (1 if index < max_drilldown % len(runs) else 0) for index in range(len(runs))]
        corpora: dict[str, tuple[Corpus, dict[int, Question]] | Exception] = {}
        for run, quota in zip(runs, quotas):
            answers = answers_of[run]
            links, drills = _drilldowns(con, answers, run, quota, corpora)
            confusion = "".join(_img(png, f"confusion {category}") for category, png in _confusions(answers))
            n_wrong = int((~answers["is_correct"].astype(bool)).sum())
            sections.append(
                f'<h2 id="{_anchor("run", run)}">Run {html.escape(run)}</h2>'
                f"<h3>Confusion matrices (ARFBench answer bins)</h3>{confusion}"
                f"<h3>Wrong answers ({n_wrong}; drilldowns of the first {len(drills)})</h3>"
                f"<p>{' '.join(links) or 'none'}</p>{''.join(drills)}"
            )
    finally:
        con.close()
    nav = "<nav>" + "".join(f'<a href="#{a}">{a}</a>' for a in ("leaderboard", "categories", "comparison", "plots")) + "</nav>"
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>arfscore report</title><style>{_STYLE}</style></head>'
            f"<body><h1>arfscore report: {html.escape(', '.join(runs))}</h1>{nav}{''.join(sections)}</body></html>")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(page)
    return {"path": path, "seconds": time.perf_counter() - started, "bytes": len(page.encode()), "runs": runs, "images": page.count("<img ")}
