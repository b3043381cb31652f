"""Plots of query groups for vision answerers: `arfbench-images/{query_group}.png`, read where the corpus has them,
rendered (tasks/plots.arfbench_plot) where it has not.

`arfscore render-plots CORPUS [--out DIR]` writes them ahead of time (into the corpus, or elsewhere). During a run,
an actor whose answerer reads plots takes the corpus' file when there is one and otherwise renders the plot in
memory; it never writes into the corpus (no node writes results or corpus files during a run).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from model.records import SeriesGroup
from tasks.corpus import Corpus, load_corpus
from tasks.plots import arfbench_plot
from tasks.storage import filesystem_for, read_if_exists, result_filesystem, write_atomic

__all__ = ["IMAGES_DIR", "group_plot", "render_plots"]

IMAGES_DIR = "arfbench-images"


def group_plot(corpus: Corpus, group: SeriesGroup) -> bytes:
    """The corpus' plot of ``group`` when it has one, else one rendered now (same rule as render-plots)."""
    fs, root = filesystem_for(corpus.location)
    path = f"{root}/{IMAGES_DIR}/{group.group_id}.png"

    found = read_if_exists(path, fs, f"{corpus.location.rstrip('/')}/{IMAGES_DIR}/{group.group_id}.png")
    return found if found is not None else arfbench_plot(group)


def render_plots(
    corpus: Corpus | str, out: str | None = None, *, overwrite: bool = False, on_group: Callable[[str], None] | None = None
) -> dict[str, int]:
    """Write one PNG per query group of ``corpus`` (an index or its location) to ``out`` (default: the corpus'
    arfbench-images/), local or s3://; groups whose file exists are kept unless ``overwrite``. Returns {"written",
    "kept", "failed"}; a group whose series cannot be read is counted as failed and skipped."""
    from tasks.series import SeriesError

    corpus = load_corpus(corpus) if isinstance(corpus, str) else corpus
    target = (out or f"{corpus.location.rstrip('/')}/{IMAGES_DIR}").rstrip("/")
    fs = result_filesystem(target)  # None for a local directory; s3fs takes s3:// paths as they are
    counts = {"written": 0, "kept": 0, "failed": 0}
    for group_id in sorted(corpus.group_files):
        path = f"{target}/{group_id}.png"
        exists = fs.exists(path) if fs is not None else os.path.exists(path)
        if exists and not overwrite:
            counts["kept"] += 1
        else:
            try:
                png = arfbench_plot(corpus.open_group(group_id))
            except SeriesError:
                counts["failed"] += 1
            else:
                write_atomic(path, lambda handle, png=png: handle.write(png), fs)
                counts["written"] += 1
        if on_group is not None:
            on_group(group_id)
    return counts
