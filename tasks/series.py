"""Long ARFBench Parquet (timestamp, group, value) -> dense float32 [variates, steps] on the regular grid.

Read in bounded memory whatever the file's layout (row order, row group size, timestamp type): fixed-size
record batches with column projection, the `group` column kept dictionary-encoded (a plain read of the string
column costs ~17x the dense array at full scale), column chunks streamed, never pre-buffered whole. Pass 1
collects the variate names (and the time range, from the row group statistics when present); pass 2
scatters values into one preallocated array. Peak memory ~ dense array + one batch.
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


# Rows per record batch: bounded memory whatever the file's row groups (a 64M-row group is never read whole).
BATCH_ROWS = 1 << 20
# Column chunks are streamed through a buffer of this size instead of being read (pre-buffered) whole.
READ_BUFFER_BYTES = 1 << 22
# A float32 NaN with a payload no data value carries (values are canonicalised): "no row wrote this cell yet".
_UNWRITTEN = np.uint32(0x7FC0_0001)
_CANONICAL_NAN = np.uint32(0x7FC0_0000)
_ROWS_PER_CHECK = 64  # variate rows per chunk of the final checks (bounded temporaries)


def _open(source: str | BinaryIO, file: str) -> pq.ParquetFile:
    try:
        options = {"buffer_size": READ_BUFFER_BYTES, "pre_buffer": False}
        try:
            parquet = pq.ParquetFile(source, read_dictionary=["group"], **options)
        except KeyError:  # no `group` column: open plainly so the check below names what is missing
            parquet = pq.ParquetFile(source, **options)
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as error:
        raise SeriesError(file, "file", f"not a readable Parquet file ({error})") from error
    names = set(parquet.schema_arrow.names)
    missing = [column for column in REQUIRED_COLUMNS if column not in names]
    if missing:
        raise SeriesError(file, ",".join(missing), f"missing column(s) {missing}; found {sorted(names)}")
    return parquet


def _iter_batches(parquet: pq.ParquetFile, columns: list[str], file: str):
    """Fixed-size record batches of the projected columns, whatever the row groups' size."""
    try:
        yield from parquet.iter_batches(batch_size=BATCH_ROWS, columns=columns, use_threads=True)
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as error:
        raise SeriesError(file, "file", f"corrupt or truncated ({error})") from error


class _VariateRows:
    """Dictionary indices of the `group` column -> sorted variate rows; one lookup per distinct dictionary."""

    def __init__(self, name_index: dict[str, int] | None, file: str) -> None:
        self.name_index = name_index
        self.file = file
        self.names: set[str] = set()
        self._dictionary: pa.Array | None = None
        self._lookup: np.ndarray | None = None

    def codes(self, column: pa.Array) -> tuple[np.ndarray, pa.Array]:
        if not pa.types.is_dictionary(column.type):
            column = column.dictionary_encode()
        if column.null_count:
            raise SeriesError(self.file, "group", f"{column.null_count} rows with a null group")
        return column.indices.to_numpy(zero_copy_only=False), column.dictionary

    def collect(self, column: pa.Array) -> None:
        _, dictionary = self.codes(column)
        if self._dictionary is None or not dictionary.equals(self._dictionary):
            self._dictionary = dictionary
            self.names.update(dictionary.cast(pa.string()).to_pylist())

    def rows(self, column: pa.Array) -> np.ndarray:
        codes, dictionary = self.codes(column)
        if self._dictionary is None or not dictionary.equals(self._dictionary):
            self._dictionary = dictionary
            names = dictionary.cast(pa.string()).to_pylist()
            self._lookup = np.fromiter((self.name_index[name] for name in names), dtype=np.int64, count=len(names))
        return self._lookup[codes]


_UNIT_NS = {"milliseconds": 1_000_000, "microseconds": 1_000, "nanoseconds": 1}


def _time_range_from_statistics(parquet: pq.ParquetFile) -> tuple[int, int] | None:
    """First and last timestamp (ns) from the row groups' statistics (raw INT64 values in the unit the Parquet
    logical type states), when every row group has them; None otherwise (pass 1 then decodes the column)."""
    metadata = parquet.metadata
    index = parquet.schema_arrow.get_field_index("timestamp")
    column = parquet.schema.column(index)
    unit = re.search(r"timeUnit=(\w+)", str(column.logical_type))
    if column.physical_type != "INT64" or unit is None or unit.group(1) not in _UNIT_NS or metadata.num_row_groups == 0:
        return None  # epoch numbers need their unit inferred from the data; INT96 has no usable raw statistics
    scale = _UNIT_NS[unit.group(1)]
    low = high = None
    for group in range(metadata.num_row_groups):
        stats = metadata.row_group(group).column(index).statistics
        if stats is None or not stats.has_min_max or stats.null_count:
            return None
        lo, hi = int(stats.min_raw) * scale, int(stats.max_raw) * scale
        low = lo if low is None else min(low, lo)
        high = hi if high is None else max(high, hi)
    return low, high


def _scan_names_and_range(parquet: pq.ParquetFile, file: str) -> tuple[list[str], int, int, int]:
    """Pass 1: sorted variate names, first and last timestamp (ns), row count. Reads only the dictionary-encoded
    `group` column when the row groups' statistics give the time range (pyarrow and most writers store them)."""
    rows = parquet.metadata.num_rows
    if rows == 0:
        raise SeriesError(file, "timestamp", "the file has no rows")
    time_range = _time_range_from_statistics(parquet)
    columns = ["group"] if time_range is not None else ["timestamp", "group"]
    variates = _VariateRows(None, file)
    first, last = time_range if time_range is not None else (None, None)
    for batch in _iter_batches(parquet, columns, file):
        if batch.num_rows == 0:
            continue
        variates.collect(batch.column("group"))
        if time_range is None:
            stamps = _timestamps_ns(batch.column("timestamp"), file)
            low, high = int(stamps.min()), int(stamps.max())
            first = low if first is None else min(first, low)
            last = high if last is None else max(last, high)
    if first is None or last is None:
        raise SeriesError(file, "timestamp", "the file has no rows")
    return sorted(variates.names), first, last, rows


def _check_grid(label: str, offset_ns: np.ndarray, interval_ns: int, interval_s: int, first: int) -> np.ndarray:
    steps, remainder = np.divmod(offset_ns, interval_ns)
    if remainder.any():
        bad = int(np.flatnonzero(remainder)[0])
        raise SeriesError(
            label,
            "timestamp",
            f"{int(np.count_nonzero(remainder))} timestamps are not on the {interval_s}s grid "
            f"starting at {np.datetime64(first, 'ns')} (e.g. {np.datetime64(first + int(offset_ns[bad]), 'ns')})",
        )
    return steps


def _values_f32(label: str, column: pa.Array) -> np.ndarray:
    """The value column as float32, nulls as the canonical NaN; out-of-range values are an error, never inf."""
    if not (pa.types.is_floating(column.type) or pa.types.is_integer(column.type)):
        raise SeriesError(label, "value", f"type {column.type} is not numeric")
    raw = column.cast(pa.float64()).to_numpy(zero_copy_only=False)  # nulls -> NaN
    out_of_range = np.abs(raw) > _FLOAT32_MAX  # also catches +-inf; NaN compares False
    if out_of_range.any():
        bad = int(np.flatnonzero(out_of_range)[0])
        raise SeriesError(label, "value", f"{int(out_of_range.sum())} values are infinite or beyond float32 range (e.g. {float(raw[bad])!r})")
    values = raw.astype(np.float32)
    nan = np.isnan(values)
    if nan.any():
        values[nan] = np.nan  # one bit pattern for missing values: never the "unwritten" marker
    return values


def read_dense(source: str | BinaryIO, group_file: GroupFile, *, file: str | None = None) -> SeriesGroup:
    """Read one query group's long Parquet into a SeriesGroup (values float32 [variates, steps]).

    Streams fixed-size record batches (never a whole row group) in any row order: each batch's values go straight
    to their cells through one flat index. Cells start as a NaN with a marker payload, so duplicates are found by
    counting the cells written, without an occupancy map: peak memory ~ the dense array + one batch.

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
    bits = np.empty((n_variates, n_steps), dtype=np.uint32)
    bits.fill(_UNWRITTEN)
    values = bits.view(np.float32)
    flat = values.reshape(-1)
    variates = _VariateRows({name: position for position, name in enumerate(names)}, label)

    for batch in _iter_batches(parquet, ["timestamp", "group", "value"], label):
        if batch.num_rows == 0:
            continue
        steps = _check_grid(label, _timestamps_ns(batch.column("timestamp"), label) - first, interval_ns, group_file.interval_s, first)
        if steps.min() < 0 or steps.max() >= n_steps:
            raise SeriesError(label, "timestamp", "timestamps outside the range the row group statistics give")
        cells = variates.rows(batch.column("group")) * n_steps + steps
        flat[cells] = _values_f32(label, batch.column("value"))

    written = 0
    empty: list[int] = []
    for start in range(0, n_variates, _ROWS_PER_CHECK):
        block = bits[start : start + _ROWS_PER_CHECK]
        unwritten = block == _UNWRITTEN
        written += block.size - int(np.count_nonzero(unwritten))
        block[unwritten] = _CANONICAL_NAN
        empty.extend(start + int(i) for i in np.flatnonzero(~np.isfinite(values[start : start + _ROWS_PER_CHECK]).any(axis=1)))
    if written != rows:
        raise SeriesError(label, "timestamp,group", _describe_duplicates(parquet, names, first, interval_ns, rows - written, label))
    if empty:
        listed = [names[i] for i in empty[:5]]
        raise SeriesError(label, "value", f"{len(empty)} variate(s) have no finite value (all NaN): {listed}")
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
    for batch in _iter_batches(parquet, ["timestamp", "group"], label):
        stamps = _timestamps_ns(batch.column("timestamp"), label)
        groups = batch.column("group").cast(pa.string()).to_pylist() if batch.num_rows else []
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
