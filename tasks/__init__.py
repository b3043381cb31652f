"""arfscore tasks: plain functions the flows wire together (corpus, shards, answering, store, metrics, report)."""

# The one place the version is written (pyproject.toml reads it); the run manifest records it, so a resume under
# another version is refused. It is importable where the code is shipped as files only (a Ray Jobs working_dir).
__version__ = "0.2.0"
