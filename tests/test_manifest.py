"""Run manifests (a resume that differs is refused, nothing written), answerer settings from the CLI, and the
completeness check (metrics never over a partial set)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import flows.score  # noqa: F401  (Prefect sets up its log handlers on the real streams, not CliRunner's)
from flows.cli import app
from model.answerers import AnswererSpec, resolved_settings, validate_answerer_params
from model.settings import SettingsError
from tasks.corpus import load_corpus
from tasks.manifest import ManifestMismatchError, build_manifest, corpus_fingerprint, ensure_manifest, model_fingerprint
from tasks.shards import IncompleteRunError, check_complete, plan_shards
from tasks.store import read_answers, read_manifest, shard_path, write_shard

# ------------------------------------------------------------------------------------------------- settings


def test_settings_are_typed_validated_and_name_the_bad_key():
    assert validate_answerer_params("stat", {"threads": 2, "reject_sigma": "3.5"}) == (("reject_sigma", "3.5"), ("threads", "2"))
    assert validate_answerer_params("hybrid", {"model": "/m", "shuffle_options": True}) == (("model", "/m"), ("shuffle_options", "true"))
    cases = {
        "unknown setting(s) ['bogus']": ("stat", {"bogus": "1"}),
        "setting reject_sigma='high': expected a number": ("stat", {"reject_sigma": "high"}),
        "reject_sigma must be > 1": ("stat", {"reject_sigma": "0.5"}),
        "setting dtype='int8': expected one of auto, float32, bfloat16, float16": ("hybrid", {"model": "/m", "dtype": "int8"}),
        "setting shuffle_options='maybe': expected true or false": ("hybrid", {"model": "/m", "shuffle_options": "maybe"}),
        "required setting(s) ['model'] missing": ("hybrid", {}),
        "batch_size must be >= 1": ("hybrid", {"model": "/m", "batch_size": "0"}),
    }
    for message, (name, params) in cases.items():
        with pytest.raises(SettingsError) as raised:
            validate_answerer_params(name, params)
        assert message in str(raised.value) and f"answerer {name}" in str(raised.value)
    # Every setting, defaults included, is what the manifest records.
    settings = resolved_settings(AnswererSpec("hybrid", params={"model": "/m", "batch_size": "4"}))
    assert settings["batch_size"] == 4 and settings["max_new_tokens"] == 256 and settings["dtype"] == "auto"


def test_cli_rejects_a_bad_setting_before_starting_anything(small_corpus, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["score", str(small_corpus), "--run-id", "x", "--out", str(tmp_path / "out"), "--answerer-opt", "reject_sigma=high"])
    assert result.exit_code == 1 and "invalid answerer settings" in result.output and "reject_sigma='high'" in result.output
    config = tmp_path / "hybrid.yaml"
    config.write_text("model: /nowhere\nbatch_size: 4\nmax_tokens: 12\n")
    args = ["score", str(small_corpus), "--run-id", "x", "--out", str(tmp_path / "out"), "--answerer", "hybrid", "--answerer-config", str(config)]
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "unknown setting(s) ['max_tokens']" in result.output
    result = runner.invoke(app, ["score", str(small_corpus), "--run-id", "x", "--answerer-opt", "no-equals-sign"])
    assert result.exit_code == 2 and "KEY=VALUE" in result.output
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------- manifest


def _manifest(corpus: Path, run_id: str = "m", **changes):
    index = load_corpus(str(corpus))
    fields = dict(
        run_id=run_id, answerer="stat", settings={"threads": 1}, seed=0, shard_size=4, corpus_location=str(corpus),
        corpus=corpus_fingerprint(index), models={},
    )
    fields.update(changes)
    return build_manifest(**fields)


def test_manifest_is_written_at_first_start_and_a_differing_resume_lists_every_difference(small_corpus, tmp_path):
    corpus = Path(shutil.copytree(small_corpus, tmp_path / "corpus"))
    out = str(tmp_path / "out")
    first = _manifest(corpus)
    assert ensure_manifest(out, "m", first) == "written"
    assert read_manifest(out, "m")["shard_size"] == 4
    assert ensure_manifest(out, "m", _manifest(corpus)) == "matched"  # same definition: resume allowed
    # The same corpus at another path is the same run (location is informational).
    moved = Path(shutil.copytree(corpus, tmp_path / "moved"))
    assert ensure_manifest(out, "m", _manifest(moved)) == "matched"

    victim = sorted((corpus / "arfbench-ts-data").glob("*.parquet"))[0]
    import pyarrow.parquet as pq

    table = pq.read_table(victim)
    pq.write_table(table.slice(0, table.num_rows - 1), victim)  # one row fewer: another file
    changed = _manifest(corpus, shard_size=5, settings={"threads": 2})
    before = sorted(p.name for p in (tmp_path / "out").rglob("*"))
    with pytest.raises(ManifestMismatchError) as raised:
        ensure_manifest(out, "m", changed)
    message = str(raised.value)
    assert "resume refused, nothing written" in message
    assert "shard_size: recorded 4, now 5" in message and "settings.threads: recorded 1, now 2" in message
    assert f"corpus.files.{victim.name}" in message
    assert sorted(p.name for p in (tmp_path / "out").rglob("*")) == before


def test_answers_without_a_manifest_are_not_resumed(small_corpus, tmp_path):
    out = str(tmp_path / "out")
    write_shard([{"question_id": 0, "answerer": "stat", "is_valid": False, "is_correct": False, "status": "error"}], out, "old", 0)
    with pytest.raises(ManifestMismatchError, match="has answers under .* but no manifest"):
        ensure_manifest(out, "old", _manifest(small_corpus, run_id="old"))


def test_model_fingerprint_sees_config_and_weights_changes(tmp_path):
    model = tmp_path / "model"
    (model / "vlm").mkdir(parents=True)
    (model / "config.json").write_text('{"a": 1}')
    weights = model / "vlm" / "model.safetensors"
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    weights.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 8)
    first = model_fingerprint(str(model))
    assert set(first["files"]) == {"config.json", "vlm/model.safetensors"}
    (model / "config.json").write_text('{"a": 2}')
    assert model_fingerprint(str(model))["sha256"] != first["sha256"]


def test_flow_resume_with_another_shard_size_is_refused_and_writes_nothing(small_corpus, tmp_path, ray_cluster, prefect_harness):
    from flows.score import score_corpus

    out = tmp_path / "out"
    score_corpus(corpus=str(small_corpus), run_id="r", out=str(out), shard_size=6)
    shards_before = sorted((out / "answers" / "run_id=r").glob("shard=*.parquet"))
    mtimes = [p.stat().st_mtime_ns for p in shards_before]
    shards_before[0].unlink()  # a lost shard: the resume would answer it again, with 5 questions per shard
    with pytest.raises(ManifestMismatchError, match="shard_size: recorded 6, now 5"):
        score_corpus(corpus=str(small_corpus), run_id="r", out=str(out), shard_size=5)
    assert sorted((out / "answers" / "run_id=r").glob("shard=*.parquet")) == shards_before[1:]
    assert [p.stat().st_mtime_ns for p in shards_before[1:]] == mtimes[1:]
    # The original settings resume it: the lost shard is answered again, every question once.
    score_corpus(corpus=str(small_corpus), run_id="r", out=str(out), shard_size=6)
    answers = read_answers(str(out), "r")
    assert answers["question_id"].is_unique and len(answers) == 24
    # The run record carries the manifest; settings include the defaults of the stat answerer.
    record = json.loads(__import__("pandas").read_parquet(out / "runs" / "run_id=r" / "run.parquet")["manifest_json"][0])
    assert record["shard_size"] == 6 and record["settings"]["reject_sigma"] == 4.0


# ----------------------------------------------------------------------------------------------- completeness


def test_check_complete_names_missing_duplicated_and_unplanned_questions(small_corpus, tmp_path):
    questions = load_corpus(str(small_corpus)).questions
    shards = plan_shards(questions, 10)
    out = str(tmp_path)

    def rows(ids):
        return [{"question_id": i, "answerer": "stat", "is_valid": True, "is_correct": False, "status": "ok"} for i in ids]

    write_shard(rows(shards[0].question_ids), out, "c", 0)
    write_shard(rows(shards[1].question_ids), out, "c", 1)
    with pytest.raises(IncompleteRunError, match=r"4 of 24 planned questions have no answer row: \[") as raised:
        check_complete(shards, out, "c")
    assert all(str(i) in str(raised.value) for i in shards[2].question_ids)
    write_shard(rows(shards[2].question_ids), out, "c", 2)
    assert check_complete(shards, out, "c") == 24
    write_shard(rows([shards[0].question_ids[0], 999]), out, "c", 7)  # a stray shard of another plan
    with pytest.raises(IncompleteRunError, match=r"1 answered more than once: \[\d+\]; 1 answered but not planned: \[999\]"):
        check_complete(shards, out, "c")
    assert Path(shard_path(out, "c", 7)).exists()
