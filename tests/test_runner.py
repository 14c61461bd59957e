"""The stage runner: skip, rebuild on a changed config, ensure inputs, atomic writes."""

import json

import pytest

from diffchat import runner
from diffchat.profiles import get_profile

CALLS: list[str] = []
KNOB = {"value": 1, "fail": False}


def toy_a(ctx):
    CALLS.append("a")
    (ctx.out / "a.txt").write_text(str(ctx.config["value"]))
    return {"value": ctx.config["value"]}


def toy_b(ctx):
    CALLS.append("b")
    (ctx.out / "b.txt").write_text("half")
    if KNOB["fail"]:
        raise RuntimeError("boom midway")
    a = (ctx.input("toy_a") / "a.txt").read_text()
    (ctx.out / "b.txt").write_text("b from " + a)


TOY = runner.Pipeline([
    runner.Stage("toy_a", toy_a, outputs=("a.txt",), config=lambda p: {"value": KNOB["value"]}),
    runner.Stage("toy_b", toy_b, inputs=("toy_a",), outputs=("b.txt",)),
])


@pytest.fixture(autouse=True)
def reset():
    CALLS.clear()
    KNOB.update(value=1, fail=False)


def test_ensure_builds_inputs_then_skips(tmp_path):
    out = TOY.ensure("toy_b", "tiny", tmp_path)
    assert (out / "b.txt").read_text() == "b from 1"
    assert CALLS == ["a", "b"]
    TOY.ensure("toy_b", "tiny", tmp_path)
    assert CALLS == ["a", "b"], "a finished stage with the same config must be skipped"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["profile"] == "tiny" and manifest["stage"] == "toy_b"


def test_changed_config_rebuilds_stage_and_dependents(tmp_path):
    TOY.ensure("toy_b", "tiny", tmp_path)
    KNOB["value"] = 2
    assert not TOY.is_done("toy_a", "tiny", tmp_path)
    assert not TOY.is_done("toy_b", "tiny", tmp_path), "an upstream change makes b stale"
    out = TOY.ensure("toy_b", "tiny", tmp_path)
    assert CALLS == ["a", "b", "a", "b"]
    assert (out / "b.txt").read_text() == "b from 2"


def test_failure_midway_leaves_nothing_marked_done(tmp_path):
    TOY.ensure("toy_a", "tiny", tmp_path)
    KNOB["fail"] = True
    with pytest.raises(RuntimeError, match="boom midway"):
        TOY.ensure("toy_b", "tiny", tmp_path)
    assert not TOY.is_done("toy_b", "tiny", tmp_path)
    assert not runner.stage_dir("toy_b", "tiny", tmp_path).exists()
    leftovers = [p.name for p in (tmp_path / "tiny").iterdir() if p.name.startswith(".tmp")]
    assert leftovers == []
    KNOB["fail"] = False
    out = TOY.ensure("toy_b", "tiny", tmp_path)
    assert (out / "b.txt").read_text() == "b from 1"


def test_failed_rebuild_keeps_previous_finished_artifact(tmp_path):
    TOY.ensure("toy_b", "tiny", tmp_path)
    KNOB["fail"] = True
    with pytest.raises(RuntimeError):
        TOY.run("toy_b", "tiny", tmp_path, force=True)
    out = runner.stage_dir("toy_b", "tiny", tmp_path)
    assert (out / "b.txt").read_text() == "b from 1"
    assert TOY.is_done("toy_b", "tiny", tmp_path)


def test_missing_output_is_an_error(tmp_path):
    def toy_lazy(ctx):
        return None

    lazy = runner.Pipeline([runner.Stage("toy_lazy", toy_lazy, outputs=("never.txt",))])
    with pytest.raises(RuntimeError, match="without writing never.txt"):
        lazy.run("toy_lazy", "tiny", tmp_path)
    assert not lazy.is_done("toy_lazy", "tiny", tmp_path)


def test_a_stage_must_come_after_its_inputs():
    with pytest.raises(ValueError, match="no earlier stage makes"):
        runner.Pipeline([runner.Stage("toy_b", toy_b, inputs=("toy_a",))])


def test_profiles_are_kept_apart_and_inputs_can_be_required(tmp_path):
    with pytest.raises(RuntimeError, match="needs stage 'toy_a'"):
        TOY.run("toy_b", get_profile("small"), tmp_path, ensure_inputs=False)
    TOY.ensure("toy_a", "tiny", tmp_path)
    assert not TOY.is_done("toy_a", "small", tmp_path)


def test_runs_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFCHAT_RUNS", str(tmp_path / "drive"))
    assert runner.stage_dir("x", "paper") == tmp_path / "drive" / "paper" / "x"


def test_train_once_keeps_a_trained_model_across_a_later_crash(tmp_path):
    trained = []

    def train(folder):
        trained.append(1)
        folder.mkdir(parents=True)
        (folder / "weights.bin").write_text("w")
        (folder / "train_log.json").write_text('{"steps": 3}')
        return {"steps": 3}

    def toy_train(ctx):
        log = runner.train_once(ctx, train)
        if KNOB["fail"]:
            raise RuntimeError("evaluation crashed")
        return log

    pipe = runner.Pipeline([runner.Stage("toy_train", toy_train, outputs=("weights.bin",))])
    KNOB["fail"] = True
    with pytest.raises(RuntimeError, match="evaluation crashed"):
        pipe.run("toy_train", "tiny", tmp_path)
    KNOB["fail"] = False
    out = pipe.run("toy_train", "tiny", tmp_path)
    assert trained == [1], "the rerun reuses the model trained before the crash"
    assert (out / "weights.bin").read_text() == "w"
    assert pipe.read_manifest("toy_train", "tiny", tmp_path)["summary"] == {"steps": 3}


def test_editing_a_word_list_rebuilds_the_data_stage(tmp_path, monkeypatch):
    """Stage keys hash the data files a stage reads: an edited word list makes the data stage
    (and everything after it) stale and is rebuilt."""
    import shutil

    from diffchat import pipeline
    from diffchat.profiles import data_dir

    copy = tmp_path / "data"
    shutil.copytree(data_dir(), copy)
    monkeypatch.setenv("DIFFCHAT_DATA", str(copy))
    small = get_profile("tiny").with_overrides(data={"n_triplets": 60, "n_pb_pairs": 20, "n_test": 10})
    root = tmp_path / "runs"
    first = pipeline.ensure("data", small, root)
    before = pipeline.read_manifest("data", small, root)["key_hash"]
    assert pipeline.is_done("data", small, root)
    colours = copy / "miniworld" / "colors.txt"
    colours.write_text(colours.read_text() + "\nzanzibar-teal\n")
    assert not pipeline.is_done("data", small, root)
    assert not pipeline.is_done("base", small, root)
    pipeline.ensure("data", small, root)
    manifest = pipeline.read_manifest("data", small, root)
    assert manifest["key_hash"] != before
    assert manifest["key"]["data_files"]["miniworld/colors.txt"]
    assert pipeline.is_done("data", small, root)
    assert first == pipeline.stage_dir("data", small, root)


def toy_c(ctx):
    CALLS.append("c")
    have = "a" if (ctx.input("toy_a") / "a.txt").is_file() else "-"
    (ctx.out / "c.txt").write_text(have)


def test_optional_input_is_never_built_and_its_arrival_reruns(tmp_path):
    toy = runner.Pipeline([
        runner.Stage("toy_a", toy_a, outputs=("a.txt",), config=lambda p: {"value": KNOB["value"]}),
        runner.Stage("toy_c", toy_c, optional=("toy_a",), outputs=("c.txt",)),
    ])
    out = toy.ensure("toy_c", "tiny", tmp_path)
    assert CALLS == ["c"] and (out / "c.txt").read_text() == "-"
    toy.ensure("toy_a", "tiny", tmp_path)
    assert not toy.is_done("toy_c", "tiny", tmp_path), "a finished optional input makes c stale"
    assert (toy.ensure("toy_c", "tiny", tmp_path) / "c.txt").read_text() == "a"
    KNOB["value"] = 2
    assert not toy.is_done("toy_c", "tiny", tmp_path), "so does a stale one going away"
