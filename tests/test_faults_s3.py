"""S3: an outage mid-run (retries with backoff, then a clean failure naming the S3 path; resume after the server
is back), a storage error in the middle of a Parquet read (retried as I/O, never an error row), and results
written to S3 then read back through DuckDB."""

from __future__ import annotations

import io
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tasks import corpus as corpus_module
from tasks.corpus import load_corpus
from tasks.storage import IO_BACKOFF_ENV, IO_RETRIES_ENV, StorageError
from tasks.store import open_views, read_answers, read_metrics
from tests.conftest import ARFSCORE, PAUSE_BEFORE_COMMIT_ENV, MotoServer, cli_env, wait_until

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def _upload(endpoint: str, local: Path, url: str) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(key="testing", secret="testing", client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True)
    bucket = url[len("s3://") :].split("/", 1)[0]
    if not fs.exists(bucket):
        fs.mkdir(bucket)
    fs.put(str(local), url[len("s3://") :], recursive=True)


@pytest.fixture
def outage_server(monkeypatch):
    """A moto server of this test's own (the session one stays up for other tests); stopped and restarted here."""
    server = MotoServer()
    server.start()
    for key, value in S3_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", server.endpoint)
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.slow
def test_s3_outage_mid_run_fails_cleanly_then_the_same_run_id_resumes(small_corpus, outage_server, tmp_path, sessions, record_property):
    corpus = "s3://arf-outage/corpus"
    _upload(outage_server.endpoint, small_corpus, corpus)
    out = tmp_path / "out"
    run_id = "s3-outage"
    env = cli_env(tmp_path / "prefect-home", **S3_ENV, AWS_ENDPOINT_URL_S3=outage_server.endpoint, **{IO_RETRIES_ENV: "3", IO_BACKOFF_ENV: "0.2"})
    args = [*ARFSCORE, "score", corpus, "--run-id", run_id, "--out", str(out), "--shard-size", "3"]
    shards = lambda: sorted((out / "answers" / f"run_id={run_id}").glob("shard=*.parquet"))  # noqa: E731

    # Each shard write takes >= 1 s, so the run is still reading series when the server goes away.
    first = sessions.start(args, {**env, PAUSE_BEFORE_COMMIT_ENV: "1.0"}, "outage")
    wait_until(lambda: len(shards()) >= 1, 300, "a shard written", first, poll_s=0.05)
    outage_server.stop()
    stopped = time.perf_counter()
    code = first.wait(timeout=180)  # not a hang: retries are bounded (3 attempts, 0.2 s then 0.4 s backoff)
    fail_s = time.perf_counter() - stopped
    output = sessions.output(first)
    sessions.kill(first)
    assert code == 1, output[-4000:]
    tail = " ".join(output[-3000:].split())
    assert f"run {run_id} failed" in tail and f"{corpus}/arfbench-ts-data/" in tail, tail
    assert "storage unreachable after 3 attempt(s)" in tail and "rerun with the same --run-id to resume" in tail
    written = {path.name: path.stat().st_mtime_ns for path in shards()}
    assert 1 <= len(written) < 8

    # moto keeps its state in memory: a restarted server is empty, so the corpus is uploaded again (as a real
    # bucket would still hold it).
    outage_server.start()
    _upload(outage_server.endpoint, small_corpus, corpus)
    code, output, resume_s = sessions.run(args, env, "resume", timeout_s=300)
    assert code == 0, output[-4000:]
    answers = read_answers(str(out), run_id)
    assert answers["question_id"].is_unique and sorted(answers["question_id"]) == list(range(24))
    assert (answers["status"] == "ok").all()
    assert all(path.stat().st_mtime_ns == written[path.name] for path in shards() if path.name in written)
    assert not list((out / "answers" / f"run_id={run_id}").glob(".*.tmp"))
    record_property("s3_outage_failure_after_stop_s", round(fail_s, 1))
    print(f"\nFIGURE S3 outage: run failed {fail_s:.1f} s after the server stopped; resume took {resume_s:.1f} s")


class _FlakyFile:
    """A file whose reads fail with a connection reset after `good_reads` reads (like a dropped S3 stream)."""

    def __init__(self, payload: bytes, good_reads: int) -> None:
        self._buffer = io.BytesIO(payload)
        self._left = good_reads
        self.closed = False

    def read(self, size: int = -1) -> bytes:
        if self._left <= 0:
            raise ConnectionResetError("connection reset by peer")
        self._left -= 1
        return self._buffer.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._buffer.seek(offset, whence)

    def tell(self) -> int:
        return self._buffer.tell()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _FlakyFilesystem:
    """Opens files whose reads break mid-file for the first `failures` opens, then behave."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.opens = 0

    def open(self, path: str, mode: str = "rb"):
        self.opens += 1
        payload = Path(path).read_bytes()
        return _FlakyFile(payload, good_reads=1 if self.opens <= self.failures else 10**9)


@pytest.mark.parametrize("failures", [1, 10])
def test_a_storage_error_in_the_middle_of_a_parquet_read_is_retried_not_reported_as_a_bad_file(small_corpus, monkeypatch, failures):
    corpus = load_corpus(str(small_corpus))
    group_id = sorted(corpus.group_files)[0]
    expected = corpus.open_group(group_id)
    flaky = _FlakyFilesystem(failures)
    real = corpus_module.filesystem_for
    monkeypatch.setattr(corpus_module, "filesystem_for", lambda location: (flaky, real(location)[1]))
    monkeypatch.setenv(IO_RETRIES_ENV, "3")
    monkeypatch.setenv(IO_BACKOFF_ENV, "0")
    if failures < 3:  # the outage ends within the attempts: the group reads whole
        group = corpus.open_group(group_id)
        np.testing.assert_array_equal(group.values, expected.values)
        assert flaky.opens == failures + 1
    else:  # it does not: a storage error naming the file, never a SeriesError (which would become an error row)
        with pytest.raises(StorageError, match=rf"{group_id}_\d+\.parquet: storage unreachable after 3 attempt\(s\) \(ConnectionResetError"):
            corpus.open_group(group_id)
        assert flaky.opens == 3


@pytest.mark.usefixtures("ray_cluster", "prefect_harness")
def test_score_to_s3_and_report_from_s3_through_duckdb(small_corpus, s3_server, tmp_path):
    from flows.cli import app
    from flows.score import score_corpus

    corpus, out, run_id = "s3://arf-results/corpus", "s3://arf-results/out", "to-s3"
    _upload(s3_server.endpoint, small_corpus, corpus)
    # A temp file left by a killed writer: never read, removed when the run starts.
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server.endpoint}, skip_instance_cache=True)
    leftover = f"arf-results/out/answers/run_id={run_id}/.shard=00000.parquet.{uuid.uuid4().hex}.tmp"
    fs.pipe(leftover, b"PAR1 not really")

    board = score_corpus(corpus=corpus, run_id=run_id, out=out, shard_size=5)
    assert board[0]["n"] == 24 and board[0]["n_error"] == 0
    fs.invalidate_cache()
    assert not fs.exists(leftover)
    assert len(fs.glob(f"arf-results/out/answers/run_id={run_id}/shard=*.parquet")) == 5
    assert fs.exists(f"arf-results/out/metrics/run_id={run_id}/metrics.parquet")
    assert fs.exists(f"arf-results/out/runs/run_id={run_id}/run.parquet")

    answers = read_answers(out, run_id)
    assert answers["question_id"].is_unique and len(answers) == 24
    overall = read_metrics(out, run_id).query("scope == 'overall'").iloc[0]
    con = open_views(out)  # DuckDB reads the Parquet on S3 through the registered s3fs filesystem
    n, accuracy = con.execute("select n, accuracy from leaderboard where run_id = ?", [run_id]).fetchone()
    assert n == 24 and accuracy == pytest.approx(overall["accuracy"])
    con.close()

    result = CliRunner().invoke(app, ["report", "--out", out, "--run-id", run_id, "--by-category"])
    assert result.exit_code == 0, result.output
    assert run_id in result.output and "Anomaly Correlation" in result.output


def test_io_retries_are_configurable_and_only_for_transient_errors(monkeypatch):
    from tasks.series import SeriesError
    from tasks.storage import with_io_retries

    monkeypatch.setenv(IO_RETRIES_ENV, "3")
    monkeypatch.setenv(IO_BACKOFF_ENV, "0.01")
    calls = []

    def refused():
        calls.append(time.perf_counter())
        raise ConnectionRefusedError("connection refused")

    with pytest.raises(StorageError, match=r"s3://b/k: storage unreachable after 3 attempt\(s\) \(ConnectionRefusedError"):
        with_io_retries(refused, "s3://b/k")
    assert len(calls) == 3 and calls[2] - calls[1] >= 0.02 > 0  # backoff doubles: 0.01 s, then 0.02 s

    for permanent in (FileNotFoundError("gone"), PermissionError("denied"), SeriesError("f", "value", "bad"), ValueError("bug")):
        calls.clear()

        def fail(error=permanent):
            calls.append(1)
            raise error

        with pytest.raises(type(permanent)):
            with_io_retries(fail, "s3://b/k")
        assert len(calls) == 1, permanent  # data and permanent errors are never retried

    flaky = iter([TimeoutError("slow"), "ok"])

    def recovers():
        value = next(flaky)
        if isinstance(value, BaseException):
            raise value
        return value

    assert with_io_retries(recovers, "s3://b/k") == "ok"
