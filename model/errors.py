"""The one base class of failures arfscore reports to users as a message (exit code 1, no traceback)."""

from __future__ import annotations

__all__ = ["ArfscoreError"]


class ArfscoreError(RuntimeError):
    """A failure whose message says what is wrong and where (file, question, field, node, setting).

    Subclasses live where they are raised: SettingsError (model/settings.py), PlacementError (model/placement.py),
    StorageError (tasks/storage.py), CorpusError (tasks/corpus.py), ManifestMismatchError (tasks/manifest.py),
    ClusterError and IncompleteRunError (tasks/cluster.py, tasks/answering.py). The CLI prints the message and exits 1.
    """
