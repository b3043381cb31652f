"""`arfscore` command line: synthesize, validate, score and report ARFBench-style corpora."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# An offline batch tool: no usage telemetry from the local Prefect server or Ray (this also avoids DNS timeouts).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.markup import escape  # noqa: E402
from rich.table import Table  # noqa: E402

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console()


def _progress():
    from tasks.progress import progress_bar

    return progress_bar(console)


@app.command()
def synth(
    out: Path = typer.Argument(..., help="directory to write the corpus into"),
    questions: int = typer.Option(40, "--questions", min=1),
    max_variates: int = typer.Option(16, "--max-variates", min=2),
    max_steps: int = typer.Option(512, "--max-steps", min=16),
    seed: int = typer.Option(0, "--seed"),
    min_variates: int = typer.Option(1, "--min-variates", min=1, help="use = --max-variates for fixed-size groups"),
    min_steps: int = typer.Option(64, "--min-steps", min=16, help="use = --max-steps for fixed-size groups"),
    realism: float = typer.Option(
        0.5, "--realism", min=0.0, max=1.0,
        help="fraction of groups with production-like noise (autocorrelated, louder, benign outliers); 0 = clean",
    ),
) -> None:
    """Write a synthetic ARFBench-style corpus (all categories and tiers, answers known by construction)."""
    from tasks.synthetic import SynthConfig, plan_corpus, synthesize_corpus

    try:
        config = SynthConfig(
            n_questions=questions, max_variates=max_variates, max_steps=max_steps, seed=seed,
            min_variates=min(min_variates, max_variates), min_steps=min(min_steps, max_steps), realism=realism,
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    n_groups = len(plan_corpus(config).groups)
    with _progress() as progress:
        task = progress.add_task("synthesize groups", total=n_groups, rate="")
        plan = synthesize_corpus(str(out), config, on_group=lambda _: progress.advance(task))
    console.print(f"wrote {len(plan.questions)} questions over {len(plan.groups)} query groups to {out}")


@app.command()
def validate(
    corpus: str = typer.Argument(..., help="corpus directory or s3://bucket/prefix"),
    questions_only: bool = typer.Option(False, "--questions-only", help="check the csv and file list, read no series"),
) -> None:
    """Check a corpus; print a summary and every problem (file, question, field). Exit 1 when invalid."""
    from tasks.corpus import CorpusError, load_corpus, validate_corpus

    try:
        index = load_corpus(corpus)
        n_groups = len({g for q in index.questions for g in q.query_groups})
        with _progress() as progress:
            task = progress.add_task("read query groups", total=0 if questions_only else n_groups, rate="")
            report = validate_corpus(index, read_series=not questions_only, on_group=lambda _: progress.advance(task))
    except CorpusError as error:
        console.print(f"[red]invalid corpus[/red]: {error}")
        raise typer.Exit(1) from error

    console.print(f"{report.location}: {report.n_questions} questions, {report.n_groups} query groups", soft_wrap=True)
    table = Table()
    table.add_column("category")
    table.add_column("tier")
    table.add_column("questions", justify="right")
    for (category, tier), count in report.by_category_tier.items():
        table.add_row(category, tier, str(count))
    console.print(table)
    if not questions_only:
        console.print(f"largest group: {report.max_variates:,} variates, {report.max_steps:,} steps")
    for problem in report.problems:
        console.print(f"[red]problem[/red] {problem}", markup=True, highlight=False)
    if report.problems:
        console.print(f"[red]{len(report.problems)} problem(s)[/red]")
        raise typer.Exit(1)
    console.print("[green]valid[/green]")


def _print_leaderboard(board, title: str = "leaderboard") -> None:
    from tasks.report import with_interval

    table = Table(title=title, caption="[95% cluster-bootstrap interval]")
    for column in ("answerer", "run", "n", "accuracy", "macro F1", "invalid", "errors"):
        table.add_column(column, justify="left" if column in ("answerer", "run") else "right")
    for row in board.itertuples():
        accuracy = with_interval(row.accuracy, row.accuracy_lo, row.accuracy_hi)
        f1 = with_interval(row.macro_f1, row.macro_f1_lo, row.macro_f1_hi)
        table.add_row(row.answerer, row.run_id, str(row.n), accuracy, f1, str(row.invalid), str(row.n_error))
    console.print(table)


def _key_values(options: list[str] | None, option_name: str) -> dict[str, str]:
    """Repeated KEY=VALUE options as a mapping (later ones win); anything else is a usage error naming it."""
    values: dict[str, str] = {}
    for option in options or []:
        key, sep, value = option.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{option!r}: expected KEY=VALUE", param_hint=option_name)
        values[key.strip()] = value
    return values


def _answerer_settings(config_file: Path | None, options: list[str] | None, model: str | None) -> dict[str, Any]:
    """--answerer-config FILE.yaml (a mapping of settings), then each --answerer-opt KEY=VALUE over it, then --model."""
    import yaml

    settings: dict[str, Any] = {}
    if config_file is not None:
        try:
            loaded = yaml.safe_load(config_file.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as error:
            raise typer.BadParameter(f"{config_file}: {error}", param_hint="--answerer-config") from error
        if loaded is not None and not isinstance(loaded, dict):
            raise typer.BadParameter(f"{config_file}: expected a mapping of settings, got {type(loaded).__name__}", param_hint="--answerer-config")
        settings.update({str(key): value for key, value in (loaded or {}).items()})
    settings.update(_key_values(options, "--answerer-opt"))
    if model:
        settings["model"] = model
    return settings


@app.command()
def score(
    corpus: str = typer.Argument(..., help="corpus directory or s3://bucket/prefix"),
    answerer: str = typer.Option("stat", "--answerer", help="random | frequent | stat | hybrid | vlm | openai | package.module:factory"),
    run_id: str = typer.Option(..., "--run-id", help="[A-Za-z0-9._-]; rerunning the same id resumes it"),
    out: str = typer.Option("results", "--out", help="results directory or s3://bucket/prefix"),
    ray_address: str = typer.Option(None, "--ray-address", help="existing Ray cluster (default: RAY_ADDRESS, else a local Ray)"),
    actors: int = typer.Option(2, "--actors", min=1),
    num_gpus_per_actor: float = typer.Option(0.0, "--num-gpus-per-actor", min=0.0),
    shard_size: int = typer.Option(
        None, "--shard-size", min=1,
        help="questions per shard (default: a resume keeps its recorded size; else 16, the openai answerer 4 x max_concurrency)",
    ),
    repeats: int = typer.Option(1, "--repeats", min=1),
    seed: int = typer.Option(0, "--seed"),
    model: str = typer.Option(None, "--model", help="model directory (hybrid answerer; = --answerer-opt model=DIR)"),
    answerer_opt: list[str] = typer.Option(None, "--answerer-opt", help="answerer setting KEY=VALUE (repeatable)"),
    answerer_config: Path = typer.Option(None, "--answerer-config", help="YAML mapping of answerer settings"),
    question_timeout: float = typer.Option(600.0, "--question-timeout", min=0.0, help="seconds per question; 0 = none"),
    placement_timeout: float = typer.Option(600.0, "--placement-timeout", min=1.0, help="seconds to wait for actors to be placed"),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=0, help="cluster-bootstrap resamples for the 95% intervals (0: none)"),
    cache: str = typer.Option(None, "--cache", help="response cache of API answerers (default: OUT/cache; local or s3://)"),
    no_cache: bool = typer.Option(False, "--no-cache", help="no response cache: every question is a new request"),
) -> None:
    """Score a corpus through the Prefect flow and a Ray actor pool; print the leaderboard."""
    import pandas as pd

    from flows.score import expand_run_id, score_corpus
    from model.errors import ArfscoreError
    from tasks.answering import answerer_params
    from tasks.corpus import load_corpus
    from tasks.shards import IncompleteRunError
    from tasks.storage import StorageError, absolute_location

    try:
        expand_run_id(run_id)  # before starting Prefect and Ray: a bad id is a usage error, not a failed run
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--run-id") from error
    settings = _answerer_settings(answerer_config, answerer_opt, model)
    try:
        answerer_params(answerer, settings)  # unknown key or bad value: exit 1 naming it, before anything starts
    except ValueError as error:
        console.print(f"[red]invalid answerer settings[/red]: {escape(str(error))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from error
    try:
        load_corpus(absolute_location(corpus))  # a corpus unusable as a whole: one line, before Prefect and Ray start
    except ArfscoreError as error:
        console.print(f"[red]run {escape(run_id)} failed[/red]: {escape(str(error))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from error
    try:
        rows = score_corpus(
            corpus=corpus, answerer=answerer, run_id=run_id, out=out, ray_address=ray_address, actors=actors,
            num_gpus_per_actor=num_gpus_per_actor, shard_size=shard_size, repeats=repeats, seed=seed,
            question_timeout_s=question_timeout or None, answerer_settings=settings, placement_timeout_s=placement_timeout,
            bootstrap=bootstrap, cache="none" if no_cache else cache,
        )
    except (ArfscoreError, FileNotFoundError, PermissionError) as error:  # bad corpus or --out, storage down, manifest
        # differs, cluster too small, incomplete run: one clear message
        console.print(f"[red]run {escape(run_id)} failed[/red]: {escape(str(error))}", highlight=False, soft_wrap=True)
        if isinstance(error, (StorageError, IncompleteRunError)):
            console.print("shards already written are kept: rerun with the same --run-id to resume", highlight=False)
        raise typer.Exit(1) from error
    _print_leaderboard(pd.DataFrame(rows), title=f"leaderboard: {run_id}")


@app.command()
def report(
    out: str = typer.Option("results", "--out"),
    run_id: list[str] = typer.Option(None, "--run-id", help="only these runs (repeatable)"),
    by_category: bool = typer.Option(False, "--by-category", help="also print accuracy per category and tier"),
    html_file: Path = typer.Option(None, "--html", help="also write one self-contained HTML report to this file"),
    max_drilldown: int = typer.Option(20, "--max-drilldown", min=0, help="wrong answers drawn per run in the HTML report"),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=1, help="paired cluster-bootstrap resamples for the HTML comparisons"),
) -> None:
    """Print the leaderboard, what share of answers saw the full input, and optionally the category x tier table;
    --html FILE writes the analysts' page (leaderboard with intervals, comparisons, plots, drilldowns)."""
    from tasks.report import coverage_lines, read_coverage, read_leaderboard
    from tasks.store import open_views

    board = read_leaderboard(out, run_id or None)
    if board.empty:
        console.print(f"no runs under {out}")
        raise typer.Exit(1)
    if html_file is not None:
        from tasks.html_report import write_html_report

        written = write_html_report(out, str(html_file), run_id or None, max_drilldown, bootstrap)
        console.print(f"wrote {written['path']}: {written['bytes'] / 1e6:.1f} MB, {written['images']} images, {written['seconds']:.1f} s")
    _print_leaderboard(board)
    for line in coverage_lines(read_coverage(out, run_id or None)):
        console.print(line, highlight=False, soft_wrap=True)
    if by_category:
        con = open_views(out)
        frame = con.execute("select * from category_tier order by answerer, run_id, tier, category").df()
        con.close()
        console.print(frame.to_string(index=False))


@app.command()
def compare(
    run_a: str = typer.Argument(..., help="the baseline run"),
    run_b: str = typer.Argument(..., help="the run compared with it (differences are B - A)"),
    out: str = typer.Option("results", "--out"),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=1, help="paired cluster-bootstrap resamples"),
    as_json: bool = typer.Option(False, "--json", help="print JSON for machines"),
) -> None:
    """Paired comparison of two runs: per category, tier and overall, both figures, the difference with a 95% paired
    cluster-bootstrap interval, McNemar's exact p-value, and the questions that flipped."""
    import json

    from tasks.report import compare_report, with_interval

    try:
        result = compare_report(out, run_a, run_b, bootstrap)
    except ValueError as error:
        console.print(f"[red]cannot compare[/red]: {escape(str(error))}", highlight=False)
        raise typer.Exit(1) from error
    table, flipped = result["table"], result["flipped"]
    if as_json:
        print(json.dumps({
            "run_a": run_a, "run_b": run_b, "resamples": bootstrap,
            "rows": json.loads(table.to_json(orient="records")), "flipped": json.loads(flipped.to_json(orient="records")),
        }, indent=2))
        return
    view = Table(title=f"{run_b} vs {run_a} (B - A; 95% paired cluster-bootstrap intervals, McNemar exact p)")
    for column in ("scope", "key", "n", "accuracy A", "accuracy B", "difference", "macro F1 A", "macro F1 B", "difference ", "only A", "only B", "p"):
        view.add_column(column, justify="left" if column in ("scope", "key") else "right")
    for row in table.itertuples():
        view.add_row(
            row.scope, row.key, str(row.n), f"{row.accuracy_a:.3f}", f"{row.accuracy_b:.3f}",
            with_interval(row.accuracy_diff, row.accuracy_diff_lo, row.accuracy_diff_hi),
            f"{row.macro_f1_a:.3f}", f"{row.macro_f1_b:.3f}", with_interval(row.macro_f1_diff, row.macro_f1_diff_lo, row.macro_f1_diff_hi),
            str(row.right_only_a), str(row.right_only_b), f"{row.mcnemar_p:.3g}",
        )
    console.print(view)
    console.print(f"{len(flipped)} question(s) flipped: {int(flipped['correct_b'].sum())} now right, {int(flipped['correct_a'].sum())} now wrong")
    for row in flipped.head(20).itertuples():
        change = "now right" if row.correct_b else "now wrong"
        line = f"  question {row.question_id} ({row.category}): {change}: A {row.answer_a!r}, B {row.answer_b!r}, truth {row.correct_answer!r}"
        console.print(line, highlight=False, soft_wrap=True)


@app.command()
def sql(
    out: str = typer.Option("results", "--out"),
    query: str = typer.Option(None, "--query", "-q", help="run one SQL query against the views and print it"),
) -> None:
    """Create or refresh the DuckDB file with every view of sql/; optionally run a query."""
    from tasks.store import open_views, run_sql_asserts

    con = open_views(out)
    views = [row[0] for row in con.execute("select view_name from duckdb_views() where not internal order by 1").fetchall()]
    console.print(f"views: {', '.join(views)}")
    failures = {name: rows for name, rows in run_sql_asserts(con).items() if rows}
    if failures:
        console.print(f"[red]data assertions failed[/red]: {failures}")
    if query:
        console.print(con.execute(query).df().to_string(index=False))
    con.close()
    if failures:
        raise typer.Exit(1)


@app.command("runtime-env")
def runtime_env_command(
    pip: bool = typer.Option(True, "--pip/--no-pip", help="install the pinned dependencies on the nodes"),
    env: list[str] = typer.Option(None, "--env", help="environment variable KEY=VALUE for the job and its actors"),
) -> None:
    """Print the runtime_env JSON that ships this checkout to a Ray cluster (for `ray job submit --runtime-env-json`)."""
    import json

    from tasks.jobs import runtime_env

    variables = _key_values(env, "--env")
    print(json.dumps(runtime_env(pip=pip, env_vars=variables)))


@app.command("render-plots")
def render_plots_command(
    corpus: str = typer.Argument(..., help="corpus directory or s3://bucket/prefix"),
    out: str = typer.Option(None, "--out", help="where the PNGs go (default: the corpus' arfbench-images/)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="render again where a plot exists"),
) -> None:
    """Write one ARFBench-style plot per query group (arfbench-images/{query_group}.png) for vision answerers."""
    from tasks.corpus import load_corpus
    from tasks.images import render_plots

    index = load_corpus(corpus)
    with _progress() as progress:
        task = progress.add_task("render plots", total=len(index.group_files), rate="")
        counts = render_plots(index, out, overwrite=overwrite, on_group=lambda _: progress.advance(task))
    console.print(f"{counts['written']} plot(s) written, {counts['kept']} kept, {counts['failed']} group(s) unreadable")


@app.command("make-tiny-model")
def make_tiny_model(
    out: Path = typer.Argument(..., help="directory for the artifact (vlm/, toto/, ts_modules.pt, config.json)"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Write a random tiny Toto-1.0-QA model in the published artifact layout (tests and CPU demos)."""
    from tasks.tiny_model import make_tiny_model as write_tiny_model

    path = write_tiny_model(str(out), seed=seed)
    console.print(f"wrote a tiny hybrid model to {path}")


@app.command()
def demo(out: Path = typer.Option(Path("demo"), "--out"), seed: int = typer.Option(0, "--seed")) -> None:
    """The built-in default job: synthesize a corpus, validate it, score it with stat, frequent and random."""
    corpus = out / "corpus"
    results = str(out / "results")
    synth(corpus, questions=96, max_variates=64, max_steps=4000, seed=seed, min_variates=1, min_steps=256, realism=0.5)
    validate(str(corpus), questions_only=False)
    from flows.score import score_corpus

    for name in ("stat", "frequent", "random"):
        score_corpus(corpus=str(corpus), answerer=name, run_id=f"demo-{name}", out=results, seed=seed)
    from tasks.report import read_leaderboard

    _print_leaderboard(read_leaderboard(results), title="demo leaderboard")
    console.print(
        f"query the results with SQL, e.g.:\n  .venv/bin/arfscore sql --out {results} -q "
        "\"select category, tier, answerer, accuracy from category_tier order by category, answerer\""
    )


if __name__ == "__main__":
    app()
