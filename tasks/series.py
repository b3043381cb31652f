"""Long ARFBench Parquet (timestamp, group, value) -> dense float32 [variates, steps] on the regular grid.

Read in bounded memory: two streamed passes over the row groups with column projection and the `group`
column kept dictionary-encoded (a plain read of the string column costs ~17x the dense array at full
scale). Pass 1 collects the variate names and the time range; pass 2 scatters values into one
preallocated NaN array. Peak memory ~ dense array + a 1-byte occupancy map + one row group.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from model.records import SeriesGroup

REQUIRED_COLUMNS: tuple[str, ...] = ("timestamp", "group", "value")
GROUP_FILE_PATTERN = re.compile(r"^(?P<incident>[^_/]+)_(?P<index>\d+)_(?P<interval>\d+)\.parquet$")
_NS_PER_S = 1_000_000_000
_FLOAT32_MAX = float(np.finfo(np.float32).max)


class SeriesError(ValueError):
    """A query group's Parquet file cannot be turned into a dense array; names the file and field."""

    def __init__(self, file: str, field: str, message: str) -> None:
        self.file = file
        self.field = field
        self.message = message
        super().__init__(f"{file}: {field}: {message}")


@dataclass(frozen=True)
class GroupFile:
    """Where one query group lives: `{incident}_{index}_{interval_seconds}.parquet`."""

    group_id: str
    path: str
    interval_s: int


def parse_group_file_name(name: str, path: str) -> GroupFile | None:
    """GroupFile for an ARFBench series file name, or None when the name does not follow the pattern."""
    match = GROUP_FILE_PATTERN.match(name)
    if match is None:
        return None
    interval_s = int(match["interval"])
    if interval_s <= 0:
        return None
    return GroupFile(f"{match['incident']}_{match['index']}", path, interval_s)


def _timestamps_ns(column: pa.Array | pa.ChunkedArray, file: str) -> np.ndarray:
    """Epoch nanoseconds as int64 from a timestamp column or integer epochs (unit inferred from magnitude)."""
    kind = column.type
    if pa.types.is_timestamp(kind):
        column = pc.cast(column, pa.timestamp("ns", tz=kind.tz))
        values = column.cast(pa.int64())
    elif pa.types.is_integer(kind) or pa.types.is_floating(kind):
        values = column
    else:
        raise SeriesError(file, "timestamp", f"type {kind} is neither a timestamp nor an epoch number")
    if values.null_count:
        raise SeriesError(file, "timestamp", f"{values.null_count} null timestamps")
    raw = np.asarray(values.to_numpy(zero_copy_only=False))
    if pa.types.is_timestamp(kind):
        return raw.astype(np.int64, copy=False)
    if raw.size == 0:
        return raw.astype(np.int64)
    # Integer epochs: the unit is not stored, so infer it from the magnitude of the largest value.
    peak = float(np.nanmax(np.abs(raw)))
    scale = 1 if peak > 1e17 else 1_000 if peak > 1e14 else 1_000_000 if peak > 1e11 else _NS_PER_S
    return (raw * scale).astype(np.int64) if raw.dtype.kind == "f" else raw.astype(np.int64) * scale


def _open(source: str | BinaryIO, file: str) -> pq.ParquetFile:
    try:
        try:
            parquet = pq.ParquetFile(source, read_dictionary=["group"])
        except KeyError:  # no `group` column: open plainly so the check below names what is missing
            parquet = pq.ParquetFile(source)
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as error:
        raise SeriesError(file, "file", f"not a readable Parquet file ({error})") from error
    names = set(parquet.schema_arrow.names)
    missing = [column for column in REQUIRED_COLUMNS if column not in names]
    if missing:
        raise SeriesError(file, ",".join(missing), f"missing column(s) {missing}; found {sorted(names)}")
    return parquet


def _iter_row_groups(parquet: pq.ParquetFile, columns: list[str], file: str):
    for index in range(parquet.num_row_groups):
        try:
            yield parquet.read_row_group(index, columns=columns)
        except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as error:
            raise SeriesError(file, "file", f"row group {index} is corrupt or truncated ({error})") from error


def _group_codes(column: pa.ChunkedArray, file: str) -> tuple[list[np.ndarray], list[pa.Array]]:
    """Per chunk: dictionary indices and dictionary (the `group` column as read with read_dictionary)."""
    indices, dictionaries = [], []
    for chunk in column.chunks:
        if not pa.types.is_dictionary(chunk.type):
            chunk = chunk.dictionary_encode()
        if chunk.null_count:
            raise SeriesError(file, "group", f"{chunk.null_count} rows with a null group")
        indices.append(chunk.indices.to_numpy(zero_copy_only=False))
        dictionaries.append(chunk.dictionary.cast(pa.string()))
    return indices, dictionaries


def _scan_names_and_range(parquet: pq.ParquetFile, file: str) -> tuple[list[str], int, int, int]:
    """Pass 1: sorted variate names, first and last timestamp (ns), row count."""
    names: set[str] = set()
    first, last, rows = None, None, 0
    for table in _iter_row_groups(parquet, ["timestamp", "group"], file):
        rows += table.num_rows
        if table.num_rows == 0:
            continue
        _, dictionaries = _group_codes(table.column("group"), file)
        for dictionary in dictionaries:
            names.update(dictionary.to_pylist())
        stamps = _timestamps_ns(table.column("timestamp"), file)
        low, high = int(stamps.min()), int(stamps.max())
        first = low if first is None else min(first, low)
        last = high if last is None else max(last, high)
    if rows == 0 or first is None or last is None:
        raise SeriesError(file, "timestamp", "the file has no rows")
    return sorted(names), first, last, rows


def read_dense(source: str | BinaryIO, group_file: GroupFile, *, file: str | None = None) -> SeriesGroup:
    """Read one query group's long Parquet into a SeriesGroup (values float32 [variates, steps]).

    Raises SeriesError naming the file and field for: unreadable/truncated Parquet, missing columns,
    no rows, null timestamps/groups, timestamps off the interval grid, duplicate (timestamp, group)
    rows, values beyond float32 range or infinite, and variates with no finite value at all.
    """
    label = file or group_file.path
    parquet = _open(source, label)
    names, first, last, rows = _scan_names_and_range(parquet, label)
    interval_ns = group_file.interval_s * _NS_PER_S
    n_steps = (last - first) // interval_ns + 1
    n_variates = len(names)
    values = np.full((n_variates, n_steps), np.nan, dtype=np.float32)
    occupied = np.zeros((n_variates, n_steps), dtype=np.bool_)
    name_index = {name: position for position, name in enumerate(names)}

    for table in _iter_row_groups(parquet, ["timestamp", "group", "value"], label):
        if table.num_rows == 0:
            continue
        offset_ns = _timestamps_ns(table.column("timestamp"), label) - first
        steps, remainder = np.divmod(offset_ns, interval_ns)
        if remainder.any():
            bad = int(np.flatnonzero(remainder)[0])
            raise SeriesError(
                label,
                "timestamp",
                f"{int(np.count_nonzero(remainder))} timestamps are not on the {group_file.interval_s}s grid "
                f"starting at {np.datetime64(first, 'ns')} (e.g. {np.datetime64(first + int(offset_ns[bad]), 'ns')})",
            )
        value_column = table.column("value")
        if not (pa.types.is_floating(value_column.type) or pa.types.is_integer(value_column.type)):
            raise SeriesError(label, "value", f"type {value_column.type} is not numeric")
        raw = value_column.cast(pa.float64()).to_numpy(zero_copy_only=False)  # nulls -> NaN
        out_of_range = np.abs(raw) > _FLOAT32_MAX  # also catches +-inf; NaN compares False
        if out_of_range.any():
            bad = int(np.flatnonzero(out_of_range)[0])
            raise SeriesError(
                label, "value", f"{int(out_of_range.sum())} values are infinite or beyond float32 range (e.g. {float(raw[bad])!r})"
            )
        codes, dictionaries = _group_codes(table.column("group"), label)
        start = 0
        for chunk_codes, dictionary in zip(codes, dictionaries):
            stop = start + len(chunk_codes)
            # Map this chunk's dictionary to global (sorted) variate rows, then gather per row.
            lookup = np.fromiter((name_index[name] for name in dictionary.to_pylist()), dtype=np.int64)
            variate_rows = lookup[chunk_codes]
            step_slice = steps[start:stop]
            values[variate_rows, step_slice] = raw[start:stop]
            occupied[variate_rows, step_slice] = True
            start = stop

    filled = int(np.count_nonzero(occupied))
    if filled != rows:
        del occupied
        raise SeriesError(label, "timestamp,group", _describe_duplicates(parquet, names, first, interval_ns, rows - filled, label))
    del occupied
    empty = ~np.isfinite(values).any(axis=1)
    if empty.any():
        listed = [names[i] for i in np.flatnonzero(empty)[:5]]
        raise SeriesError(label, "value", f"{int(empty.sum())} variate(s) have no finite value (all NaN): {listed}")
    return SeriesGroup(
        group_id=group_file.group_id,
        values=values,
        variate_names=tuple(names),
        start_ns=first,
        interval_s=group_file.interval_s,
    )


def _describe_duplicates(
    parquet: pq.ParquetFile, names: list[str], first: int, interval_ns: int, count: int, label: str
) -> str:
    """Slow path, only on bad files: find one duplicated (timestamp, group) pair for the message."""
    seen: set[tuple[int, str]] = set()
    for table in _iter_row_groups(parquet, ["timestamp", "group"], label):
        stamps = _timestamps_ns(table.column("timestamp"), label)
        groups = table.column("group").cast(pa.string()).to_pylist() if table.num_rows else []
        for stamp, group in zip(stamps.tolist(), groups):
            key = (stamp, group)
            if key in seen:
                return f"{count} duplicate (timestamp, group) rows, e.g. ({np.datetime64(stamp, 'ns')}, {group!r})"
            seen.add(key)
    return f"{count} duplicate (timestamp, group) rows"


def describe(group: SeriesGroup) -> dict[str, Any]:
    """Small summary of a dense group for logs and reports."""
    return {
        "group_id": group.group_id,
        "n_variates": group.n_variates,
        "n_steps": group.n_steps,
        "interval_s": group.interval_s,
        "start": str(np.datetime64(group.start_ns, "ns")),
        "missing_fraction": float(np.isnan(group.values).mean()) if group.values.size else 0.0,
    }
