"""The course's closing report: timings and the summary of what each stage built."""

import json

import pytest

from diffchat import pipeline
from diffchat.course import build_in_background, course_summary, spare_cores, timing_report


def _manifest(root, stage, summary, seconds=1.5):
    folder = root / "tiny" / stage
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"stage": stage, "summary": summary, "seconds": seconds}))


def test_summary_gives_each_finished_stage_its_headline(tmp_path):
    _manifest(tmp_path, "pb", {"keep_ci": 0.8363, "tagged": 1.0})
    _manifest(tmp_path, "sft", {"steps": 600, "test_seen": {"n": 98, "edit": 0.8776, "strict": 0.7857,
                                                            "exact": 0.7653, "append_edit": 0.6531}})
    _manifest(tmp_path, "rewards", {"aesthetic": {"spearman": 0.6263}, "pickscore": {"spearman": 0.5086}})
    held = {"sft": {"reward": 0.959, "ci_raw": 0.972, "edit": 0.878}, "ppo": {"reward": 0.97, "ci_raw": 0.98, "edit": 0.88}}
    _manifest(tmp_path, "ppo", {"max_kl": 0.53, "test_seen": held,
                                "held_out": {k: {**v, "n": 200} for k, v in held.items()}})
    text = course_summary("tiny", tmp_path)
    assert "keeps 0.84 of the input's keywords" in text
    assert "test_seen: edit 0.878, strict 0.786, exact 0.765 (append baseline edit 0.653)" in text
    assert "Spearman aesthetic 0.63, pickscore 0.51" in text
    assert "held-out reward 0.959 -> 0.970" in text and "n=200" in text and "max KL 0.53" in text
    assert "seen-subject edit 0.878 -> 0.880" in text
    assert "diffchat chat --profile tiny" in text
    assert "evaluation (06)" not in text  # no eval run: no line pointing at a missing table


def test_timing_report_writes_timings_json(tmp_path):
    _manifest(tmp_path, "data", {}, seconds=2.0)
    text = timing_report("tiny", tmp_path, {"01_dataset_collection": 12.0})
    written = json.loads((tmp_path / "tiny" / "timings.json").read_text())
    assert written["stages"] == {"data": 2.0} and written["notebooks"] == {"01_dataset_collection": 12.0}
    assert "01_dataset_collection" in text and "data" in text


def test_a_headless_notebook_shows_no_progress_bars_and_no_kernel_warning(tmp_path, capfd):
    """In an executed notebook a progress bar stays frozen at 0% (its widget never renders), and a
    kernel over TCP warns once per notebook: `run_notebook` runs kernels without either."""
    import nbformat

    from diffchat.course import run_notebook

    code = ["from tqdm.auto import tqdm\nprint(sum(tqdm(range(3))))",
            "import datasets\nprint(len(datasets.Dataset.from_dict({'a': [1, 2]}).map(lambda r: r)))"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in code])
    path = tmp_path / "09_bars.ipynb"
    nbformat.write(nb, path)
    out = nbformat.read(run_notebook(path, "tiny", tmp_path / "out"), as_version=4)
    outputs = [o for c in out.cells for o in c.outputs]
    assert [o.get("text", "").strip() for o in outputs] == ["3", "2"], outputs  # stdout only: no bar, no widget
    assert "WARNING" not in capfd.readouterr().err


def test_a_stage_without_inputs_builds_in_a_child_process(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFCHAT_QUICK", "1")
    log = tmp_path / "data.log"
    child = build_in_background("data", "tiny", tmp_path, log)
    assert child.wait(timeout=300) == 0, log.read_text()
    assert pipeline.is_done("data", "tiny", tmp_path)
    assert pipeline.read_manifest("data", "tiny", tmp_path)["summary"]
    assert sorted(d.name for d in (tmp_path / "tiny").iterdir() if not d.name.startswith(".")) == ["data"]


def test_only_a_stage_without_inputs_is_built_in_the_background(tmp_path):
    with pytest.raises(ValueError, match="stage 'rewards' needs instructpe, base, clip"):
        build_in_background("rewards", "tiny", tmp_path, tmp_path / "log")
    assert not (tmp_path / "log").exists()


def test_spare_cores_counts_what_the_kernels_leave(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert spare_cores() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert spare_cores() == 0
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert spare_cores() == 0  # torch then takes every core
