"""Where corpora and results live: local paths or ``s3://`` URLs, with retries on transient I/O and atomic writes.

Shared by the corpus reader (tasks/corpus.py), the result store (tasks/store.py) and the run manifest
(tasks/manifest.py), so every storage action gets the same S3 settings, the same retry policy and the same
"a file exists only when complete" rule.

S3 settings come from the standard environment: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_DEFAULT_REGION and
AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL for S3-compatible servers. Retries (DESIGN.md section 10: only on I/O,
never on data errors) use tenacity with exponential backoff, read from ARFSCORE_IO_RETRIES (attempts, default 4)
and ARFSCORE_IO_BACKOFF_S (first delay, default 0.5 s, doubled each time) on each call, so an operator or a test
can make an outage fail fast.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import fsspec
from fsspec.implementations.local import LocalFileSystem
from tenacity import RetryError, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from model.errors import ArfscoreError

__all__ = [
    "IO_BACKOFF_ENV",
    "IO_RETRIES_ENV",
    "StorageError",
    "absolute_location",
    "commit_temp_file",
    "display_path",
    "filesystem_for",
    "io_retry_settings",
    "is_remote",
    "is_transient_io_error",
    "read_if_exists",
    "result_filesystem",
    "s3_filesystem",
    "temp_name",
    "with_io_retries",
    "write_atomic",
]

T = TypeVar("T")

IO_RETRIES_ENV = "ARFSCORE_IO_RETRIES"
IO_BACKOFF_ENV = "ARFSCORE_IO_BACKOFF_S"
DEFAULT_IO_RETRIES = 4
DEFAULT_IO_BACKOFF_S = 0.5
# botocore settings for S3: a dead or black-holed endpoint must fail within seconds, not botocore's default
# 60 s connect timeout x 5 legacy attempts; the outer retries provide the backoff across an outage.
S3_CONNECT_TIMEOUT_S = 5.0
S3_READ_TIMEOUT_S = 60.0
S3_MAX_ATTEMPTS = 2  # botocore attempts per request ("standard" mode), inside each with_io_retries attempt


class StorageError(ArfscoreError):
    """Storage stayed unreachable after the retries (the message names the full location)."""


# ------------------------------------------------------------------------------------------------ locations


def is_remote(location: str | os.PathLike[str]) -> bool:
    """True for ``scheme://`` locations other than ``file://`` (s3://, gs://, memory://, ...)."""
    text = os.fspath(location)
    return "://" in text and not text.startswith("file://")


def absolute_location(location: str | os.PathLike[str]) -> str:
    """A local path made absolute against this process's working directory; remote URLs unchanged.

    The driver calls this before anything travels to Ray workers, which run in other working directories
    (and on other machines): a relative path there would name another place.
    """
    text = os.fspath(location)
    if is_remote(text):
        return text.rstrip("/") or text
    if text.startswith("file://"):
        text = text[len("file://") :]
    return os.path.abspath(os.path.expanduser(text))


def s3_filesystem() -> fsspec.AbstractFileSystem:
    """The s3fs filesystem used for corpora and results: endpoint from the environment, short timeouts."""
    import s3fs  # imported here: local runs never need boto

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    client_kwargs = {"endpoint_url": endpoint} if endpoint else {}
    # Region comes from AWS_DEFAULT_REGION: passing region_name here breaks S3-compatible servers.
    config_kwargs = {
        "connect_timeout": S3_CONNECT_TIMEOUT_S,
        "read_timeout": S3_READ_TIMEOUT_S,
        "retries": {"max_attempts": S3_MAX_ATTEMPTS, "mode": "standard"},
    }
    return s3fs.S3FileSystem(client_kwargs=client_kwargs, config_kwargs=config_kwargs)


def filesystem_for(location: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """fsspec filesystem and root path (no scheme) for a local directory or an s3:// URL."""
    if location.startswith("s3://"):
        return s3_filesystem(), location[len("s3://") :].rstrip("/")
    fs = fsspec.filesystem("file")
    return fs, os.path.abspath(location).rstrip("/") or "/"


def result_filesystem(
    location: str | os.PathLike[str], filesystem: fsspec.AbstractFileSystem | None = None
) -> fsspec.AbstractFileSystem | None:
    """The fsspec filesystem for a results location, or None for a local path (handled with pathlib / os)."""
    if filesystem is not None:
        return None if isinstance(filesystem, LocalFileSystem) else filesystem
    text = os.fspath(location)
    if text.startswith("s3://"):
        return s3_filesystem()
    if is_remote(text):
        fs, _ = fsspec.core.url_to_fs(text)
        return fs
    return None


def local_path(path: str) -> Path:
    return Path(path[len("file://") :] if path.startswith("file://") else path)


def display_path(path: str, fs: fsspec.AbstractFileSystem | None) -> str:
    """``path`` with its scheme (s3fs paths have none), for messages."""
    if fs is None or "://" in path:
        return path
    protocol = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
    return f"{protocol}://{path}"


# -------------------------------------------------------------------------------------------------- retries


def _transient_error_types() -> tuple[type[BaseException], ...]:
    """Exception types of a storage outage: connection refused/reset, timeouts, truncated responses."""
    kinds: list[type[BaseException]] = [OSError, TimeoutError]
    try:  # botocore's connection errors are not OSError (EndpointConnectionError, ReadTimeoutError, ...)
        import botocore.exceptions as boto_errors

        names = ("ConnectionError", "HTTPClientError", "IncompleteReadError", "ResponseStreamingError")
        kinds += [getattr(boto_errors, name) for name in names if hasattr(boto_errors, name)]
    except ImportError:
        pass
    try:
        from aiohttp import ClientError

        kinds.append(ClientError)
    except ImportError:
        pass
    return tuple(kinds)


# Deterministic answers from storage: retrying them cannot help.
_PERMANENT_IO_ERRORS: tuple[type[BaseException], ...] = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def is_transient_io_error(error: BaseException) -> bool:
    """True for errors worth retrying (the storage may come back); False for data and permanent errors."""
    from tasks.series import SeriesError  # a bad file is data, not an outage

    if isinstance(error, (SeriesError, ArfscoreError, *_PERMANENT_IO_ERRORS)):
        return False
    return isinstance(error, _transient_error_types())


def io_retry_settings() -> tuple[int, float]:
    """(attempts, first backoff in seconds) from ARFSCORE_IO_RETRIES / ARFSCORE_IO_BACKOFF_S."""
    try:
        attempts = max(1, int(os.environ.get(IO_RETRIES_ENV, DEFAULT_IO_RETRIES)))
        backoff = max(0.0, float(os.environ.get(IO_BACKOFF_ENV, DEFAULT_IO_BACKOFF_S)))
    except ValueError as error:
        raise StorageError(f"{IO_RETRIES_ENV} must be an integer and {IO_BACKOFF_ENV} a number ({error})") from error
    return attempts, backoff


def with_io_retries(action: Callable[[], T], what: str, *, attempts: int | None = None, first_delay_s: float | None = None) -> T:
    """Run an I/O action, retrying transient storage errors with exponential backoff (never data errors).

    After the last attempt the error becomes a StorageError naming ``what`` (the full location, e.g. an s3://
    URL). Defaults come from ARFSCORE_IO_RETRIES and ARFSCORE_IO_BACKOFF_S.
    """
    default_attempts, default_delay = io_retry_settings()
    attempts = default_attempts if attempts is None else max(1, attempts)
    delay = default_delay if first_delay_s is None else first_delay_s
    retrying = Retrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=delay, exp_base=2, min=0, max=3600),
        retry=retry_if_exception(is_transient_io_error),
        reraise=False,
    )
    try:
        return retrying(action)
    except RetryError as exhausted:
        error = exhausted.last_attempt.exception()
        detail = " ".join(str(error).split()) or type(error).__name__
        raise StorageError(f"{what}: storage unreachable after {attempts} attempt(s) ({type(error).__name__}: {detail})") from error


def read_if_exists(path: str, fs: fsspec.AbstractFileSystem | None, what: str | None = None) -> bytes | None:
    """The whole file, or None when it does not exist (``fs`` None: a local path); transient storage errors are
    retried (:func:`with_io_retries`, naming ``what``, default the path). Another process may have just written
    it, so no cached listing is trusted."""

    def read() -> bytes | None:
        try:
            if fs is None:
                return local_path(path).read_bytes()
            fs.invalidate_cache()
            with fs.open(path, "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            return None

    return with_io_retries(read, what or display_path(path, fs))


# ----------------------------------------------------------------------------------------------- atomic writes


def temp_name(final_name: str) -> str:
    """The temp name a file is written under before its rename: ".<final name>.<32 hex>.tmp"."""
    return f".{final_name}.{uuid.uuid4().hex}.tmp"


def commit_temp_file(temp: str, final: str, fs: fsspec.AbstractFileSystem | None) -> None:
    """Rename a complete temp file onto its final name: the commit of every atomic write (os.replace locally;
    one server-side copy on object stores, which creates the final key whole)."""
    if fs is None:
        os.replace(local_path(temp), local_path(final))
    else:
        fs.mv(temp, final)


def write_atomic(path: str, write: Callable[[Any], None], fs: fsspec.AbstractFileSystem | None) -> str:
    """Write a file whole: ``write(handle)`` fills a temp file next to ``path``, which is then renamed onto it.

    Local files are fsynced before the rename. Remote writes are retried on transient storage errors (each
    attempt writes a new temp file; the rename is the commit, so a retry never leaves a partial file under the
    final name). A failed attempt removes its temp file where it can; readers never read temp files.
    """
    directory, _, name = path.rpartition("/")
    if fs is None:
        local_dir = local_path(directory)
        local_dir.mkdir(parents=True, exist_ok=True)
        local_tmp = str(local_dir / temp_name(name))
        try:
            with open(local_tmp, "wb") as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            commit_temp_file(local_tmp, path, None)
        except BaseException:
            Path(local_tmp).unlink(missing_ok=True)
            raise
        return path

    def attempt() -> str:
        tmp = f"{directory}/{temp_name(name)}"
        fs.makedirs(directory, exist_ok=True)
        try:
            with fs.open(tmp, "wb") as handle:
                write(handle)
            commit_temp_file(tmp, path, fs)
        except BaseException:
            try:
                fs.rm(tmp)
            except Exception:  # best effort: a leftover temp file is ignored by readers and removed on resume
                pass
            raise
        return path

    return with_io_retries(attempt, display_path(path, fs))
