"""The stage runner: skip, rebuild on a changed config, ensure inputs, atomic writes."""

import json

import pytest

from diffchat import runner
from diffchat.profiles import get_profile

CALLS: list[str] = []
KNOB = {"value": 1, "fail": False}


@pytest.fixture(autouse=True)
def toy_stages():
    @runner.register("toy_a", outputs=("a.txt",), config=lambda p: {"value": KNOB["value"]})
    def toy_a(ctx):
        CALLS.append("a")
        (ctx.out / "a.txt").write_text(str(ctx.config["value"]))
        return {"value": ctx.config["value"]}

    @runner.register("toy_b", inputs=("toy_a",), outputs=("b.txt",))
    def toy_b(ctx):
        CALLS.append("b")
        (ctx.out / "b.txt").write_text("half")
        if KNOB["fail"]:
            raise RuntimeError("boom midway")
        a = (ctx.input("toy_a") / "a.txt").read_text()
        (ctx.out / "b.txt").write_text("b from " + a)

    CALLS.clear()
    KNOB.update(value=1, fail=False)
    yield
    runner.STAGES.pop("toy_a")
    runner.STAGES.pop("toy_b")


def test_ensure_builds_inputs_then_skips(tmp_path):
    out = runner.ensure("toy_b", "tiny", tmp_path)
    assert (out / "b.txt").read_text() == "b from 1"
    assert CALLS == ["a", "b"]
    runner.ensure("toy_b", "tiny", tmp_path)
    assert CALLS == ["a", "b"], "a finished stage with the same config must be skipped"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["profile"] == "tiny" and manifest["stage"] == "toy_b"


def test_changed_config_rebuilds_stage_and_dependents(tmp_path):
    runner.ensure("toy_b", "tiny", tmp_path)
    KNOB["value"] = 2
    assert not runner.is_done("toy_a", "tiny", tmp_path)
    assert not runner.is_done("toy_b", "tiny", tmp_path), "an upstream change makes b stale"
    out = runner.ensure("toy_b", "tiny", tmp_path)
    assert CALLS == ["a", "b", "a", "b"]
    assert (out / "b.txt").read_text() == "b from 2"


def test_failure_midway_leaves_nothing_marked_done(tmp_path):
    runner.ensure("toy_a", "tiny", tmp_path)
    KNOB["fail"] = True
    with pytest.raises(RuntimeError, match="boom midway"):
        runner.ensure("toy_b", "tiny", tmp_path)
    assert not runner.is_done("toy_b", "tiny", tmp_path)
    assert not runner.stage_dir("toy_b", "tiny", tmp_path).exists()
    leftovers = [p.name for p in (tmp_path / "tiny").iterdir() if p.name.startswith(".tmp")]
    assert leftovers == []
    KNOB["fail"] = False
    out = runner.ensure("toy_b", "tiny", tmp_path)
    assert (out / "b.txt").read_text() == "b from 1"


def test_failed_rebuild_keeps_previous_finished_artifact(tmp_path):
    runner.ensure("toy_b", "tiny", tmp_path)
    KNOB["fail"] = True
    with pytest.raises(RuntimeError):
        runner.run("toy_b", "tiny", tmp_path, force=True)
    out = runner.stage_dir("toy_b", "tiny", tmp_path)
    assert (out / "b.txt").read_text() == "b from 1"
    assert runner.is_done("toy_b", "tiny", tmp_path)


def test_missing_output_is_an_error(tmp_path):
    @runner.register("toy_lazy", outputs=("never.txt",))
    def toy_lazy(ctx):
        return None

    try:
        with pytest.raises(RuntimeError, match="without writing never.txt"):
            runner.run("toy_lazy", "tiny", tmp_path)
        assert not runner.is_done("toy_lazy", "tiny", tmp_path)
    finally:
        runner.STAGES.pop("toy_lazy")


def test_profiles_are_kept_apart_and_inputs_can_be_required(tmp_path):
    with pytest.raises(RuntimeError, match="needs stage 'toy_a'"):
        runner.run("toy_b", get_profile("small"), tmp_path, ensure_inputs=False)
    runner.ensure("toy_a", "tiny", tmp_path)
    assert not runner.is_done("toy_a", "small", tmp_path)


def test_runs_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFCHAT_RUNS", str(tmp_path / "drive"))
    assert runner.stage_dir("x", "paper") == tmp_path / "drive" / "paper" / "x"


def test_train_once_keeps_a_trained_model_across_a_later_crash(tmp_path):
    from diffchat.stages import train_once

    trained = []

    def train(folder):
        trained.append(1)
        folder.mkdir(parents=True)
        (folder / "weights.bin").write_text("w")
        (folder / "train_log.json").write_text('{"steps": 3}')
        return {"steps": 3}

    @runner.register("toy_train", outputs=("weights.bin",))
    def toy_train(ctx):
        log = train_once(ctx, train)
        if KNOB["fail"]:
            raise RuntimeError("evaluation crashed")
        return log

    try:
        KNOB["fail"] = True
        with pytest.raises(RuntimeError, match="evaluation crashed"):
            runner.run("toy_train", "tiny", tmp_path)
        KNOB["fail"] = False
        out = runner.run("toy_train", "tiny", tmp_path)
        assert trained == [1], "the rerun reuses the model trained before the crash"
        assert (out / "weights.bin").read_text() == "w"
        assert runner.read_manifest("toy_train", "tiny", tmp_path)["summary"] == {"steps": 3}
    finally:
        runner.STAGES.pop("toy_train")
