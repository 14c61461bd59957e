"""The chat (Fig. 1): ChatSession, the widget app, `diffchat chat`, and the demo in a real browser.

The model is a tiny BLOOM given a few SFT steps on mini-world rows and saved as the runs folder's
SFT stage, so these tests need no course run; the TIS model is the tiny profile's first, a
mini-world renderer (64x64).
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from diffchat.chat import ChatError, ChatSession, Refusal, find_model
from diffchat.data import miniworld
from diffchat.loading import tiny_base
from diffchat.profiles import TinyLMConfig, TrainConfig
from diffchat.runner import MANIFEST, stage_dir, write_json
from diffchat.sft import sft_rows, train_completion_model

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
STEPS = TrainConfig(epochs=1, batch_size=8, max_length=96, lr=3e-3, unfreeze_layers=None,
                    weight_decay=0.0, max_steps=30)


def _rows(n: int) -> list[dict]:
    return [{"beautified_source_prompt": t["input"], "instruction": t["edit"],
             "beautified_target_prompt": t["output"]} for t in miniworld.generate_triplets(n, seed=1)]


def _finish(folder: Path, stage: str) -> None:
    """Mark a model folder as the stage's finished artifact (what the runner writes last)."""
    write_json(folder / MANIFEST, {"stage": stage, "profile": "tiny", "summary": {}})


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """A runs folder whose tiny SFT stage holds a briefly trained tiny model."""
    root = tmp_path_factory.mktemp("runs")
    texts = miniworld.vocabulary_texts() + [r["beautified_target_prompt"] for r in _rows(200)]
    base = tiny_base(texts, root / "base", TinyLMConfig(vocab_size=600, hidden_size=32, n_layer=2, n_head=2))
    sft = stage_dir("sft", "tiny", root)
    train_completion_model(sft_rows(_rows(240)), base, sft, STEPS, log=lambda s: None)
    _finish(sft, "sft")
    return root


@pytest.fixture(scope="module")
def models(runs):
    loaded = ChatSession.from_runs("tiny", runs)
    return loaded.model, loaded.tis


@pytest.fixture
def session(models, runs):
    model, tis = models
    return ChatSession(model, tis, seed=0, model_choice=find_model("tiny", runs), profile="tiny", root=runs)


def _same(a, b) -> bool:
    return np.array_equal(np.asarray(a), np.asarray(b))


def test_start_send_undo_branch_and_edit_prompt(session):
    first = session.start("a picture of a parrot in a vineyard")
    assert (first.index, first.instruction, first.seed) == (0, None, 0) and first.image.size == (64, 64)
    one = session.send("make it night")
    two = session.send("add a hat")
    assert [t.index for t in session.turns] == [0, 1, 2] and session.current == two
    assert one.instruction == "make it night" and one.prompt and one.seconds > 0
    assert session.undo() == one and len(session.turns) == 2
    assert session.branch(0) == first and session.turns == [first]
    edited = session.edit_prompt("a picture of a fox in a vineyard")
    assert edited.index == 0 and edited.prompt == "a picture of a fox in a vineyard"
    assert not _same(edited.image, first.image)
    with pytest.raises(ValueError, match="nothing to undo"):
        session.undo()
    with pytest.raises(ValueError, match="no turn 3"):
        session.branch(3)


def test_the_same_prompt_and_seed_give_the_same_image(session):
    a = session.start("a red fox in a forest")
    session.send("make it night")
    b = session.start("a red fox in a forest")
    assert _same(a.image, b.image)
    c = session.set_seed(7)
    assert c.seed == 7 and not _same(a.image, c.image)
    assert session.send("add a hat").seed == 7  # the seed stays fixed across turns


def test_export_then_load_round_trips(session, tmp_path):
    session.start("a picture of a parrot in a vineyard")
    session.send("make it night")
    session.send("add a hat")
    path = session.export(tmp_path / "chat")
    meta = json.loads(path.read_text())
    assert [r["image"] for r in meta["turns"]] == ["turn_00.png", "turn_01.png", "turn_02.png"]
    again = ChatSession.load(tmp_path / "chat")
    assert again.describe() == session.describe()
    for old, new in zip(session.turns, again.turns, strict=True):
        assert (old.index, old.instruction, old.prompt, old.seed) == (new.index, new.instruction, new.prompt, new.seed)
        assert _same(old.image.convert("RGB"), new.image.convert("RGB"))
    assert again.send("make it sunny").index == 3  # the reopened chat goes on


def test_empty_instruction_nsfw_and_over_budget_are_refused(session):
    session.start("a picture of a parrot in a vineyard")
    with pytest.raises(ValueError, match="instruction is empty"):
        session.send("   ")
    with pytest.raises(Refusal, match="NSFW"):
        session.send("make her naked")
    with pytest.raises(Refusal, match="NSFW"):
        session.start("a nude parrot")
    with pytest.raises(Refusal, match="instruction refused: the template and instruction alone"):
        session.send("make it " + "very " * 200 + "red")
    assert len(session.turns) == 1 and session.current.prompt == "a picture of a parrot in a vineyard"


def test_the_renderer_draws_each_turns_edit(session, monkeypatch):
    """Two turns drawn by the tiny profile's renderer: night darkens the sky, then the cat turns blue
    (a cat's own colour, from a hash of the word, is reddish). The rule teacher writes the rewrites,
    so this checks the drawing rather than the tiny model."""
    monkeypatch.setattr(session.model, "rewrite", miniworld.apply_instruction)
    first = session.start("a cat in a park")
    night = session.send("make it night")
    blue = session.send("make the cat blue")
    assert (night.prompt, blue.prompt) == ("a cat in a park at night", "a blue cat in a park at night")
    day_px, night_px, blue_px = (np.asarray(t.image, dtype=float) for t in (first, night, blue))
    assert night_px[:12].mean() < day_px[:12].mean() - 40  # the sky's top rows
    cat = np.abs(blue_px - night_px).sum(axis=2) > 60  # the pixels the colour word changed
    assert cat.sum() > 20
    blueness = [px[cat][:, 2].mean() - px[cat][:, :2].mean() for px in (night_px, blue_px)]
    assert blueness[1] > blueness[0] + 40


def test_a_failing_pipeline_or_model_leaves_the_last_good_turn(session, monkeypatch):
    session.start("a picture of a parrot in a vineyard")
    good = session.send("make it night")
    pipe, calls = session.tis.pipe, []

    def fails_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("CUDA out of memory (injected)")
        return pipe(*args, **kwargs)

    monkeypatch.setattr(session.tis, "pipe", fails_once)
    with pytest.raises(ChatError, match="mini-sd15 pipeline failed .*injected.*stays at turn 1"):
        session.send("add a hat")
    assert session.turns[-1] == good and len(session.turns) == 2
    assert session.send("add a hat").index == 2  # usable again

    def broken(*args, **kwargs):
        raise ValueError("bad logits (injected)")

    monkeypatch.setattr(session.model, "rewrite", broken)
    with pytest.raises(ChatError, match="DiffChat model failed .*stays at turn 2"):
        session.send("make it sunny")
    assert len(session.turns) == 3


def test_from_runs_prefers_ppo_and_says_which(runs, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(stage_dir("sft", "tiny", runs), stage_dir("sft", "tiny", root))
    assert find_model("tiny", root).name == "sft"
    shutil.copytree(stage_dir("sft", "tiny", runs), stage_dir("ppo", "tiny", root))
    _finish(stage_dir("ppo", "tiny", root), "ppo")
    chat = ChatSession.from_runs("tiny", root)
    assert chat.describe().startswith(f"DiffChat model: ppo ({stage_dir('ppo', 'tiny', root)})")
    assert find_model("tiny", root, "sft").name == "sft"


def test_from_runs_without_a_model_names_the_command(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        ChatSession.from_runs("tiny", tmp_path)
    assert "run `diffchat sft --profile tiny`" in str(err.value) and "\n" not in str(err.value)


def test_app_drives_two_turns_and_branches_from_a_thumbnail(session, tmp_path):
    from diffchat.chat_app import ChatApp

    app = ChatApp(session, export_dir=tmp_path / "export")
    assert "DiffChat model: sft" in app.header.value and "mini-world" in app.note.value
    app.prompt_box.value = "a picture of a parrot in a vineyard"
    app.start_button.click()
    for said in ("make it night", "add a hat"):
        app.instruction_box.value = said
        app.send_button.click()
        assert app.instruction_box.value == ""
    assert len(app.history.children) == 3 and "turn 2" in app.current_prompt.value
    app.instruction_box.value = "make it nude"
    app.send_button.click()
    assert "NSFW" in app.message.value and len(session.turns) == 3
    app.history.children[1].children[1].click()  # the thumbnail of turn 1: continue from there
    assert len(session.turns) == 2 and len(app.history.children) == 2
    app.undo_button.click()
    assert session.current.index == 0
    app.export_button.click()
    assert (tmp_path / "export" / "session.json").is_file() and "exported 1 turns" in app.message.value


def _chat(args: list[str], stdin: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "diffchat.cli", "chat", *args], input=stdin,
                          capture_output=True, text=True, timeout=300, cwd=REPO)


def test_cli_chat_through_a_pipe(runs, tmp_path):
    out = tmp_path / "chat"
    said = "a picture of a parrot in a vineyard\nmake it night\n\nmake her naked\nadd a hat\n/undo\n/branch 0\nmake it sunny\n"
    done = _chat(["--root", str(runs), "--out", str(out), "--seed", "3"], said)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("DiffChat model: sft") and "seed: 3" in done.stdout
    assert "NSFW" in done.stderr
    assert f"image: {out / 'turn_01.png'}" in done.stdout
    meta = json.loads((out / "session.json").read_text())
    assert [t["instruction"] for t in meta["turns"]] == [None, "make it sunny"]
    assert sorted(p.name for p in out.glob("*.png")) == ["turn_00.png", "turn_01.png"]


def test_cli_chat_without_a_trained_model_is_a_one_line_hint(tmp_path):
    done = _chat(["--root", str(tmp_path)], "a cat\n")
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and "run `diffchat sft --profile tiny`" in done.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.notebook
@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed "
                    "(apt-get install chromium chromium-driver; .ci/run does this in CI)")
def test_demo_in_a_browser(runs, tmp_path):
    """Voila serves notebook 07; headless Chromium types a prompt and two instructions.
    It chats with the course's model when $DIFFCHAT_TEST_RUNS holds one (else the fixture's);
    $DIFFCHAT_SCREENSHOT_DIR=runs keeps a copy of the screenshot there."""
    from playwright.sync_api import sync_playwright

    course = os.environ.get("DIFFCHAT_TEST_RUNS")
    if course:
        try:
            find_model("tiny", course)
            runs = Path(course)
        except FileNotFoundError:
            pass
    port = _free_port()
    env = {**os.environ, "DIFFCHAT_RUNS": str(runs), "DIFFCHAT_PROFILE": "tiny",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    log = (tmp_path / "voila.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "voila", str(REPO / "notebooks" / "07_chat_demo.ipynb"),
                               "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1"],
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    shots = [tmp_path / "chat_demo.png"]
    if os.environ.get("DIFFCHAT_SCREENSHOT_DIR"):
        shots.append(Path(os.environ["DIFFCHAT_SCREENSHOT_DIR"]) / "chat_demo.png")
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            deadline = time.time() + 180  # a loaded 2-core machine starts Voila slowly
            while True:  # the server takes a few seconds to listen
                try:
                    page.goto(f"http://127.0.0.1:{port}/", timeout=180_000)
                    break
                except Exception:
                    if time.time() > deadline or server.poll() is not None:
                        raise
                    time.sleep(1)
            page.wait_for_selector(".diffchat-app .diffchat-image", timeout=180_000)
            page.fill(".diffchat-prompt-box textarea", "a picture of a parrot in a vineyard")
            page.click("button:has-text('New chat')")
            page.wait_for_selector(".diffchat-prompt:has-text('turn 0'):has-text('a picture of a parrot in a vineyard')",
                                   timeout=180_000)
            for n, said in enumerate(("make it night", "add a hat"), start=1):
                before = page.get_attribute(".diffchat-app .diffchat-image", "src")
                old_prompt = page.input_value(".diffchat-prompt-box textarea")
                page.fill(".diffchat-instruction input", said)
                if n == 1:
                    page.click("button:has-text('Send')")
                else:
                    page.press(".diffchat-instruction input", "Enter")  # Enter sends too
                page.wait_for_selector(f".diffchat-prompt:has-text('turn {n}')", timeout=180_000)
                if page.input_value(".diffchat-prompt-box textarea") != old_prompt:  # else the same image
                    page.wait_for_function("src => document.querySelector('.diffchat-app .diffchat-image')"
                                           ".getAttribute('src') != src", arg=before, timeout=180_000)
            # The prompt, image and thumbnail widgets reach the browser one after another: wait for the row.
            page.wait_for_function("n => document.querySelectorAll('.diffchat-thumb').length >= n", arg=3,
                                   timeout=180_000)
            assert page.locator(".diffchat-thumb").count() == 3
            assert "after: add a hat" in page.inner_text(".diffchat-prompt")
            assert page.eval_on_selector(".diffchat-app .diffchat-image", "e => e.naturalWidth") == 64
            for shot in shots:
                shot.parent.mkdir(parents=True, exist_ok=True)
                page.locator(".diffchat-app").screenshot(path=str(shot))
            browser.close()
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    assert shots[0].stat().st_size > 10_000
