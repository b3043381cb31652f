"""The run manifest: what defines a run, fixed when the run id first starts; a resume that differs is refused.

A run id is a promise that every answer under it was made the same way. The manifest records, at the first start:

- ``answerer`` and every one of its ``settings`` (defaults included, so a changed default is seen too), ``seed``;
- ``shard_size`` (the shard plan: another size would answer questions twice on resume);
- ``corpus``: the csv's sha256 and each Parquet file's size and checksum (the ETag on S3; locally the sha256 of
  the file's Parquet footer, which holds every column chunk's offset, size and statistics: any rewrite of the
  data changes it, and reading footers costs milliseconds where hashing 100 GB would cost minutes);
- ``models``: for each artifact directory in the settings (the settings class's ARTIFACTS: the hybrid's ``model`` and
  ``toto``, the vlm's ``model``), a hash of its config and weights
  index: every JSON / tokenizer file in full, and each weight file by name, size and header (safetensors) or
  first and last MiB (other formats);
- ``arfscore_version``.

Informational fields (where the corpus and model were read, when and by whom the run started) are recorded but
not compared: the same corpus moved to another path is the same run. A resume compares the defining fields and
raises :class:`ManifestMismatchError` listing each differing field, before anything is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import struct
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import fsspec

from model.errors import ArfscoreError
from tasks import __version__
from tasks.corpus import SERIES_DIR, Corpus
from tasks.storage import filesystem_for, with_io_retries
from tasks.store import read_manifest, write_manifest, written_shards

__all__ = [
    "DEFINING_FIELDS",
    "ManifestMismatchError",
    "build_manifest",
    "corpus_fingerprint",
    "ensure_manifest",
    "manifest_differences",
    "model_fingerprint",
]

MANIFEST_FORMAT = 1
DEFINING_FIELDS: tuple[str, ...] = ("answerer", "settings", "seed", "shard_size", "corpus", "models", "arfscore_version")
_HEAD_TAIL_BYTES = 1 << 20
_SMALL_FILE_BYTES = 4 << 20


class ManifestMismatchError(ArfscoreError):
    """A resume whose answerer, settings, shard plan, corpus, model or version differ from the run's first start."""


# ------------------------------------------------------------------------------------------------ fingerprints


def _parquet_footer_sha256(fs: fsspec.AbstractFileSystem, path: str, size: int) -> str:
    """sha256 of a Parquet file's footer (FileMetaData); of its last 64 KiB when the file is not Parquet."""
    with fs.open(path, "rb") as handle:
        if size >= 12:
            handle.seek(size - 8)
            tail = handle.read(8)
            if tail[4:] == b"PAR1":
                (length,) = struct.unpack("<I", tail[:4])
                if 0 < length <= size - 12:
                    handle.seek(size - 8 - length)
                    return hashlib.sha256(handle.read(length)).hexdigest()
        handle.seek(max(0, size - 65536))
        return hashlib.sha256(handle.read()).hexdigest()


def corpus_fingerprint(corpus: Corpus) -> dict[str, Any]:
    """{"csv_sha256", "files": {file name: "size=N etag=..." | "size=N footer_sha256=..."}, "sha256": digest}."""
    fs, root = filesystem_for(corpus.location)
    series_root = f"{root}/{SERIES_DIR}"

    def listing() -> list[dict[str, Any]]:
        fs.invalidate_cache()
        try:
            return fs.ls(series_root, detail=True)
        except FileNotFoundError:
            return []

    files: dict[str, str] = {}
    for entry in sorted(with_io_retries(listing, f"{corpus.location.rstrip('/')}/{SERIES_DIR}"), key=lambda e: e["name"]):
        name = entry["name"].rsplit("/", 1)[-1]
        if not name.endswith(".parquet") or entry.get("type") == "directory":
            continue
        size = int(entry.get("size") or 0)
        etag = entry.get("ETag") or entry.get("etag")
        if etag:
            files[name] = f"size={size} etag={str(etag).strip(chr(34))}"
        else:
            footer = with_io_retries(lambda: _parquet_footer_sha256(fs, entry["name"], size), f"{corpus.location}/{SERIES_DIR}/{name}")
            files[name] = f"size={size} footer_sha256={footer}"
    body = {"csv_sha256": corpus.checksum, "files": files}
    return {**body, "sha256": _digest(body)}


def _file_hash(path: str, name: str, size: int) -> str:
    """Full sha256 for configs and small files; for weights: size and header (safetensors) or head + tail."""
    with open(path, "rb") as handle:
        if size <= _SMALL_FILE_BYTES or name.endswith((".json", ".txt", ".model", ".jinja")):
            return "sha256=" + hashlib.sha256(handle.read()).hexdigest()
        if name.endswith(".safetensors"):
            (length,) = struct.unpack("<Q", handle.read(8))
            header = handle.read(min(length, 100 << 20))
            return f"size={size} header_sha256={hashlib.sha256(header).hexdigest()}"
        digest = hashlib.sha256(handle.read(_HEAD_TAIL_BYTES))
        handle.seek(max(0, size - _HEAD_TAIL_BYTES))
        digest.update(handle.read())
        return f"size={size} head_tail_sha256={digest.hexdigest()}"


def model_fingerprint(directory: str) -> dict[str, Any]:
    """{"files": {relative path: hash}, "sha256": digest} of an artifact directory (see the module docstring)."""
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{directory}: not a directory")
    files: dict[str, str] = {}
    for folder, subfolders, names in os.walk(directory):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        for name in sorted(names):
            if name.startswith("."):
                continue
            path = os.path.join(folder, name)
            relative = os.path.relpath(path, directory)
            files[relative] = _file_hash(path, name, os.path.getsize(path))
    return {"files": files, "sha256": _digest(files)}


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode("utf-8")).hexdigest()


# -------------------------------------------------------------------------------------------------- manifest


def build_manifest(
    *,
    run_id: str,
    answerer: str,
    settings: Mapping[str, Any],
    seed: int,
    shard_size: int,
    corpus_location: str,
    corpus: Mapping[str, Any],
    models: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    """The manifest of one run id. ``corpus``: :func:`corpus_fingerprint`; ``models``: setting key -> fingerprint."""
    return {
        "format": MANIFEST_FORMAT,
        "run_id": run_id,
        "answerer": answerer,
        "settings": dict(settings),
        "seed": int(seed),
        "shard_size": int(shard_size),
        "corpus": dict(corpus),
        "models": {key: dict(value) for key, value in sorted(models.items())},
        "arfscore_version": __version__,
        "info": {
            "corpus_location": corpus_location,
            "model_locations": {key: settings.get(key) for key in sorted(models)},
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "created_on": platform.node(),
        },
    }


def _flatten(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, Mapping):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            if key == "sha256" and prefix:  # a digest of the entries listed beside it: report those instead
                continue
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat or {prefix: {}}
    return {prefix: value}


def manifest_differences(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """One line per defining field that differs: "shard_size: recorded 16, now 8"."""
    lines = []
    for field in DEFINING_FIELDS:
        old, new = _flatten(recorded.get(field), field), _flatten(current.get(field), field)
        for key in sorted(set(old) | set(new)):
            if old.get(key, "<absent>") != new.get(key, "<absent>"):
                lines.append(f"{key}: recorded {_short(old.get(key, '<absent>'))}, now {_short(new.get(key, '<absent>'))}")
    return lines


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def ensure_manifest(out: str, run_id: str, manifest: Mapping[str, Any]) -> str:
    """Write the manifest at a run's first start, or check a resume against it. Returns "written" or "matched".

    Raises ManifestMismatchError (nothing written) when the recorded manifest differs in a defining field, or when
    answers exist without a manifest (a run started by an arfscore without manifests: it cannot be checked).
    """
    recorded = read_manifest(out, run_id)
    if recorded is None:
        if written_shards(out, run_id):
            raise ManifestMismatchError(
                f"run {run_id} has answers under {out} but no manifest (written by an arfscore without manifests: how "
                "its first start was defined is unknown): start a new --run-id"
            )
        write_manifest(manifest, out, run_id)
        return "written"
    differences = manifest_differences(recorded, manifest)
    if differences:
        listed = "\n".join(f"  {line}" for line in differences)
        raise ManifestMismatchError(
            f"run {run_id} was started with a different manifest; resume refused, nothing written "
            f"(rerun with the original settings, or use a new --run-id):\n{listed}"
        )
    return "matched"
