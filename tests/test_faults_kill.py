"""Kill and resume, exactly once: the real `arfscore score` CLI in its own session, SIGKILLed twice, then resumed.

Each CLI run starts its own temporary Prefect server and its own local Ray inside its session; the test kills the
whole session (process group + Ray workers) and checks by PID that no raylet / gcs_server of that run survives.
The mid-write kill is deterministic: ARFSCORE_TEST_PAUSE_BEFORE_COMMIT (tests/hooks/sitecustomize.py) holds each
complete shard temp file before its rename.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from tasks.store import open_views, read_answers, read_metrics, written_shards
from tests.conftest import ARFSCORE, PAUSE_BEFORE_COMMIT_ENV, cli_env, session_processes, wait_until

pytestmark = pytest.mark.slow

SHARD_SIZE = 3  # the 24-question corpus -> 8 shards
N_SHARDS = 8


def _score_args(corpus: Path, out: Path, run_id: str) -> list[str]:
    return [*ARFSCORE, "score", str(corpus), "--run-id", run_id, "--out", str(out), "--shard-size", str(SHARD_SIZE), "--actors", "2"]


def _temp_files(out: Path, run_id: str) -> list[Path]:
    return sorted((out / "answers" / f"run_id={run_id}").glob(".*.tmp"))


def _shard_files(out: Path, run_id: str) -> dict[str, int]:
    """Final shard files -> mtime (ns)."""
    return {path.name: path.stat().st_mtime_ns for path in (out / "answers" / f"run_id={run_id}").glob("shard=*.parquet")}


def _kill_and_check(sessions, process) -> list[tuple[int, str]]:
    """SIGKILL the run's session; its Ray (raylet, gcs_server) and Prefect server must have been in it and be gone."""
    members = {p.pid: p.name() for p in session_processes(process.pid)}
    killed = sessions.kill(process)
    names = {name for _, name in killed} | set(members.values())
    assert "raylet" in names and "gcs_server" in names, f"the run's own Ray was not in its session: {sorted(names)}"
    assert not session_processes(process.pid), "processes of the killed run survived"
    import psutil

    for pid in members:  # by PID as well: nothing of the run may be left (zombies awaiting reaping count as dead)
        try:
            assert psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, f"pid {pid} ({members[pid]}) survived"
        except psutil.NoSuchProcess:
            pass
    return killed


def test_kill_twice_then_resume_answers_every_question_exactly_once(small_corpus, tmp_path, sessions, record_property):
    corpus = Path(shutil.copytree(small_corpus, tmp_path / "corpus"))
    env = cli_env(tmp_path / "prefect-home")

    # An uninterrupted run: the reference for answers and metrics, and for the resume timing.
    clean_out = tmp_path / "clean"
    code, output, clean_s = sessions.run(_score_args(corpus, clean_out, "clean"), env, "clean", timeout_s=300)
    assert code == 0, output[-4000:]

    out = tmp_path / "out"
    run_id = "killed"

    # 1. Kill once some shards are written (each shard write takes >= 1 s, so the run is still going).
    first = sessions.start(_score_args(corpus, out, run_id), {**env, PAUSE_BEFORE_COMMIT_ENV: "1.0"}, "run1")
    wait_until(lambda: len(_shard_files(out, run_id)) >= 2, 300, "two shards written", first, poll_s=0.05)
    _kill_and_check(sessions, first)
    after_first = _shard_files(out, run_id)
    assert 2 <= len(after_first) < N_SHARDS, after_first
    partial = read_answers(str(out), run_id)
    assert partial["question_id"].is_unique and len(partial) == SHARD_SIZE * len(after_first)

    # 2. Kill while shards are mid-write: the temp files are complete Parquet files, but no shard is renamed yet.
    # (The first kill may have left temp files too: run 2 removes them when it starts, then writes its own.)
    before = set(_temp_files(out, run_id))
    second = sessions.start(_score_args(corpus, out, run_id), {**env, PAUSE_BEFORE_COMMIT_ENV: "600"}, "run2")
    wait_until(lambda: set(_temp_files(out, run_id)) - before, 300, "a shard paused mid-write", second, poll_s=0.05)
    _kill_and_check(sessions, second)
    leftovers = _temp_files(out, run_id)
    assert leftovers and _shard_files(out, run_id) == after_first
    assert not before & set(leftovers), "the resumed run did not remove the first run's temp files"
    # No reader sees a temp file: not the resume planner, not read_answers, not the DuckDB views.
    assert written_shards(str(out), run_id) == {int(name[len("shard="):-len(".parquet")]) for name in after_first}
    assert len(read_answers(str(out), run_id)) == len(partial)
    con = open_views(str(out))
    assert con.execute("select count(*) from stg_answers where run_id = ?", [run_id]).fetchone()[0] == len(partial)
    con.close()

    # 3. Resume with the same run id: completes, answers only what is missing, cleans up the temp files.
    code, output, resume_s = sessions.run(_score_args(corpus, out, run_id), env, "resume", timeout_s=300)
    assert code == 0, output[-4000:]
    assert re.search(r"[1-9]\d* temp file\(s\) removed", " ".join(output.split())), output[-3000:]
    assert not _temp_files(out, run_id)
    final = _shard_files(out, run_id)
    assert len(final) == N_SHARDS
    assert all(final[name] == mtime for name, mtime in after_first.items()), "written shards were redone"

    answers = read_answers(str(out), run_id).set_index("question_id")
    clean = read_answers(str(clean_out), "clean").set_index("question_id")
    assert answers.index.is_unique and sorted(answers.index) == list(range(24))
    assert (answers["status"] == "ok").all()
    for column in ("parsed_answer", "is_correct", "is_valid", "status"):
        pd.testing.assert_series_equal(answers[column].sort_index(), clean[column].sort_index())

    metrics = read_metrics(str(out), run_id).drop(columns="run_id").sort_values(["scope", "key"]).reset_index(drop=True)
    reference = read_metrics(str(clean_out), "clean").drop(columns="run_id").sort_values(["scope", "key"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(metrics, reference)

    con = open_views(str(out))
    assert con.execute("select n, n_error from leaderboard where run_id = ?", [run_id]).fetchone() == (24, 0)
    con.close()

    # 4. Rerunning the complete run answers nothing again (and starts no Ray).
    code, output, noop_s = sessions.run(_score_args(corpus, out, run_id), env, "rerun", timeout_s=300)
    assert code == 0, output[-4000:]
    assert "every shard is already written" in output
    assert _shard_files(out, run_id) == final and len(read_answers(str(out), run_id)) == 24

    record_property("clean_run_s", round(clean_s, 1))
    record_property("resume_run_s", round(resume_s, 1))
    print(f"\nFIGURE kill/resume: clean run {clean_s:.1f} s, resume of {N_SHARDS - len(after_first)}/{N_SHARDS} shards "
          f"{resume_s:.1f} s, rerun of the complete run {noop_s:.1f} s")
