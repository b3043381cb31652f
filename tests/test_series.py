"""Long Parquet -> dense arrays, checked against hand-built examples."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.series import GroupFile, SeriesError, parse_group_file_name, read_dense

T0 = np.datetime64("2025-03-07T18:00:00", "ns")
MINUTE = np.timedelta64(60, "s")


def write_long(path, stamps, groups, values, *, row_group_size=None, timestamp_type=pa.timestamp("ns")):
    table = pa.table(
        {
            "timestamp": pa.array(np.array(stamps, dtype="datetime64[ns]"), timestamp_type)
            if pa.types.is_timestamp(timestamp_type)
            else pa.array(stamps, timestamp_type),
            "group": pa.array(groups, pa.string()),
            "value": pa.array(values, pa.float64()),
            "num_groups": pa.array([99] * len(groups), pa.int64()),  # unreliable on purpose
        }
    )
    pq.write_table(table, path, row_group_size=row_group_size)
    return GroupFile(path.name.rsplit("_", 1)[0], str(path), 60)


def test_dense_matches_hand_built_example_with_gaps_nulls_and_unsorted_groups(tmp_path):
    # Variate "b" comes first in the file and "a" has a gap at minute 2 and a null at minute 3.
    stamps = [T0, T0 + MINUTE, T0 + 3 * MINUTE, T0 + 3 * MINUTE, T0, T0 + MINUTE, T0 + 2 * MINUTE]
    groups = ["b", "b", "b", "a", "a", "a", "b"]
    values = [10.0, 11.0, 13.0, None, 1.0, 2.0, 12.0]
    group_file = write_long(tmp_path / "123_0_60.parquet", stamps, groups, values, row_group_size=3)

    dense = read_dense(group_file.path, group_file)

    nan = np.nan
    expected = np.array([[1.0, 2.0, nan, nan], [10.0, 11.0, 12.0, 13.0]], dtype=np.float32)
    assert dense.variate_names == ("a", "b")
    assert dense.values.dtype == np.float32
    np.testing.assert_array_equal(dense.values, expected)
    assert dense.start_ns == int(T0.astype(np.int64))
    assert dense.interval_s == 60
    assert dense.group_id == "123_0"


@pytest.mark.parametrize("unit_scale", [1, 1_000, 1_000_000, 1_000_000_000])
def test_integer_epoch_timestamps_in_any_unit(tmp_path, unit_scale):
    seconds = [1_700_000_000, 1_700_000_060, 1_700_000_120]
    epochs = [second * unit_scale for second in seconds]  # s, ms, us or ns since the epoch
    group_file = write_long(tmp_path / "9_0_60.parquet", epochs, ["x", "x", "x"], [1.0, 2.0, 3.0], timestamp_type=pa.int64())
    dense = read_dense(group_file.path, group_file)
    assert dense.start_ns == 1_700_000_000 * 1_000_000_000
    np.testing.assert_array_equal(dense.values, [[1.0, 2.0, 3.0]])


def test_group_file_names():
    assert parse_group_file_name("35928_0_300.parquet", "p") == GroupFile("35928_0", "p", 300)
    assert parse_group_file_name("35928_0.parquet", "p") is None
    assert parse_group_file_name("35928_0_0.parquet", "p") is None


@pytest.mark.parametrize(
    "case,field,fragment",
    [
        ("duplicate", "timestamp,group", "duplicate (timestamp, group)"),
        ("off_grid", "timestamp", "not on the 60s grid"),
        ("all_nan", "value", "no finite value"),
        ("huge", "value", "beyond float32 range"),
        ("inf", "value", "infinite"),
        ("no_rows", "timestamp", "no rows"),
    ],
)
def test_bad_series_give_clear_errors(tmp_path, case, field, fragment):
    stamps = [T0, T0 + MINUTE, T0 + 2 * MINUTE]
    groups, values = ["a", "a", "a"], [1.0, 2.0, 3.0]
    if case == "duplicate":
        stamps, groups, values = stamps + [T0 + MINUTE], groups + ["a"], values + [5.0]
    elif case == "off_grid":
        stamps[1] = T0 + np.timedelta64(61, "s")
    elif case == "all_nan":
        stamps, groups, values = stamps + [T0], groups + ["b"], values + [None]
    elif case == "huge":
        values[1] = 1e308
    elif case == "inf":
        values[2] = float("inf")
    elif case == "no_rows":
        stamps, groups, values = [], [], []
    group_file = write_long(tmp_path / "5_0_60.parquet", stamps, groups, values)
    with pytest.raises(SeriesError) as caught:
        read_dense(group_file.path, group_file, file="arfbench-ts-data/5_0_60.parquet")
    assert caught.value.field == field
    assert fragment in str(caught.value)
    assert "arfbench-ts-data/5_0_60.parquet" in str(caught.value)


def test_missing_columns_and_corrupt_files(tmp_path):
    path = tmp_path / "5_0_60.parquet"
    pq.write_table(pa.table({"timestamp": pa.array([T0], pa.timestamp("ns")), "value": [1.0]}), path)
    with pytest.raises(SeriesError, match="missing column"):
        read_dense(str(path), GroupFile("5_0", str(path), 60))
    good = write_long(tmp_path / "6_0_60.parquet", [T0, T0 + MINUTE], ["a", "a"], [1.0, 2.0])
    payload = (tmp_path / "6_0_60.parquet").read_bytes()
    (tmp_path / "6_0_60.parquet").write_bytes(payload[: len(payload) // 2])
    with pytest.raises(SeriesError) as caught:
        read_dense(good.path, good)
    assert caught.value.field == "file"


# ----------------------------------------------------------------------------------------------- any layout


def _grid(n_variates: int = 7, n_steps: int = 300, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n_variates, n_steps)).astype(np.float32)
    values[rng.random(values.shape) < 0.1] = np.nan  # missing points: absent rows or nulls
    return values


def _write_layout(path, grid: np.ndarray, *, order: str, tz: str | None, row_group_size: int, unit: str = "ns",
                  statistics: bool = True, nulls_as_rows: bool = True) -> GroupFile:
    n_variates, n_steps = grid.shape
    names = np.array([f"service:s{i},host:h{i % 3}" for i in range(n_variates)])
    variate = np.repeat(np.arange(n_variates), n_steps)
    step = np.tile(np.arange(n_steps), n_variates)
    if order == "timestamp-major":
        order_index = np.lexsort((variate, step))
    elif order == "shuffled":
        order_index = np.random.default_rng(1).permutation(variate.size)
    else:
        order_index = np.arange(variate.size)
    variate, step = variate[order_index], step[order_index]
    value = grid[variate, step].astype(np.float64)
    keep = np.isfinite(value) | nulls_as_rows  # missing points either absent or written as nulls
    variate, step, value = variate[keep], step[keep], value[keep]
    stamps = (T0 + step * MINUTE).astype(f"datetime64[{unit}]")
    table = pa.table({
        "timestamp": pa.array(stamps, pa.timestamp(unit, tz=tz)),
        "group": pa.array(names[variate]),
        "value": pa.array(value, mask=~np.isfinite(value)),
    })
    pq.write_table(table, path, row_group_size=row_group_size, write_statistics=statistics)
    return GroupFile(path.name.rsplit("_", 1)[0], str(path), 60)


@pytest.mark.parametrize(
    "layout",
    [
        {"order": "variate-major", "tz": None, "row_group_size": 2100},
        {"order": "timestamp-major", "tz": "UTC", "row_group_size": 700},
        {"order": "timestamp-major", "tz": "America/New_York", "row_group_size": 100_000, "unit": "ms"},
        {"order": "shuffled", "tz": None, "row_group_size": 100, "statistics": False},
        {"order": "shuffled", "tz": "UTC", "row_group_size": 5000, "unit": "us", "nulls_as_rows": False},
    ],
)
def test_every_layout_gives_the_same_dense_array_in_small_batches(tmp_path, monkeypatch, layout):
    import tasks.series as series

    monkeypatch.setattr(series, "BATCH_ROWS", 256)  # batches much smaller than most row groups
    grid = _grid()
    group_file = _write_layout(tmp_path / "5_0_60.parquet", grid, **layout)
    dense = read_dense(group_file.path, group_file)
    assert dense.values.shape == grid.shape and dense.start_ns == int(T0.astype(np.int64))
    np.testing.assert_array_equal(dense.values, grid)  # NaN where missing, equal elsewhere
    # Missing cells hold the one canonical NaN, never the reader's "unwritten" marker.
    bits = dense.values.view(np.uint32)[np.isnan(dense.values)]
    assert bits.size and (bits == np.uint32(0x7FC00000)).all()


def test_duplicates_are_found_in_any_order_and_batch_size(tmp_path, monkeypatch):
    import tasks.series as series

    monkeypatch.setattr(series, "BATCH_ROWS", 128)
    grid = _grid(4, 100)
    path = tmp_path / "6_0_60.parquet"
    group_file = _write_layout(path, grid, order="timestamp-major", tz="UTC", row_group_size=50)
    table = pq.read_table(path)
    pq.write_table(pa.concat_tables([table, table.slice(237, 3)]), path, row_group_size=50)
    with pytest.raises(SeriesError, match=r"timestamp,group: 3 duplicate \(timestamp, group\) rows, e.g."):
        read_dense(group_file.path, group_file)


def test_variates_rank_by_deviation_a_one_step_spike_counts_and_empty_rows_come_last():
    from model.records import DEVIATION_SAMPLE, SeriesGroup

    steps = 3 * DEVIATION_SAMPLE + 7  # strided median and MAD, every step for the largest deviation
    values = np.random.default_rng(1).normal(size=(300, steps)).astype(np.float32)  # more rows than one block
    values[257, steps - 1] = 40.0  # one step off the sample's stride, in the second block
    values[3, 1000:2000] += 12.0
    values[5] = np.nan
    order = SeriesGroup("g", values, tuple(f"v{i}" for i in range(300)), 0, 60).deviation_order()
    assert list(order[:2]) == [257, 3] and order[-1] == 5 and sorted(order) == list(range(300))
