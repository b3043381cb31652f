"""`arfscore` command line: synthesize, validate, score and report ARFBench-style corpora."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console()


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
    )


@app.command()
def synth(
    out: Path = typer.Argument(..., help="directory to write the corpus into"),
    questions: int = typer.Option(40, "--questions", min=1),
    max_variates: int = typer.Option(16, "--max-variates", min=2),
    max_steps: int = typer.Option(512, "--max-steps", min=16),
    seed: int = typer.Option(0, "--seed"),
    min_variates: int = typer.Option(1, "--min-variates", min=1, help="use = --max-variates for fixed-size groups"),
    min_steps: int = typer.Option(64, "--min-steps", min=16, help="use = --max-steps for fixed-size groups"),
) -> None:
    """Write a synthetic ARFBench-style corpus (all categories and tiers, answers known by construction)."""
    from tasks.synthetic import SynthConfig, plan_corpus, synthesize_corpus

    try:
        config = SynthConfig(
            n_questions=questions, max_variates=max_variates, max_steps=max_steps, seed=seed,
            min_variates=min(min_variates, max_variates), min_steps=min(min_steps, max_steps),
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
        n_groups = len({g for q in load_corpus(corpus).questions for g in q.query_groups})
        with _progress() as progress:
            task = progress.add_task("read query groups", total=0 if questions_only else n_groups, rate="")
            report = validate_corpus(corpus, read_series=not questions_only, on_group=lambda _: progress.advance(task))
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


@app.command()
def demo(out: Path = typer.Option(Path("demo"), "--out"), seed: int = typer.Option(0, "--seed")) -> None:
    """Synthesize a small corpus and validate it (the built-in default job)."""
    corpus = out / "corpus"
    synth(corpus, questions=48, max_variates=24, max_steps=2048, seed=seed, min_variates=1, min_steps=256)
    validate(str(corpus), questions_only=False)


if __name__ == "__main__":
    app()
