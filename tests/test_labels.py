"""Reward labels (section 3.3): scores of each prompt's image, resumable after a crash."""

from __future__ import annotations

import pytest

from diffchat.images import load_tis
from diffchat.labels import label_prompts, read_labels
from diffchat.profiles import ImageConfig
from diffchat.scorers import make_scorer

WORDS = ["cat", "dog", "castle", "tree", "river", "sunset", "portrait", "city", "forest", "painting"]


class Counting:
    """Wraps a scorer: counts the images it scores, fails after `fail_after` calls."""

    def __init__(self, scorer, fail_after=None):
        self.scorer, self.fail_after = scorer, fail_after
        self.calls, self.prompts = 0, []

    def score(self, images, texts=None):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("simulated crash")
        self.calls += 1
        self.prompts.extend(texts)
        return self.scorer.score(images, texts)


@pytest.fixture(scope="module")
def tiny_world():
    return load_tis("tiny"), make_scorer("aesthetic", "tiny"), make_scorer("pickscore", "tiny")


def test_labelling_resumes_after_a_crash(tmp_path, tiny_world):
    tis, aes, pick = tiny_world
    prompts = [f"a {w} at dawn" for w in WORDS[:10]] + ["a cat at dawn"]  # one repeat
    out = tmp_path / "labels" / "rewards.jsonl"
    cfg = ImageConfig(height=32, width=32, steps=1, guidance=5.0)

    crashing = Counting(pick, fail_after=2)  # the 3rd batch crashes
    with pytest.raises(RuntimeError, match="simulated crash"):
        label_prompts(prompts, tis, aes, crashing, out, batch_size=3, images=cfg, progress=False)
    first = read_labels(out)
    assert [r["prompt"] for r in first] == prompts[:6]  # two finished batches kept
    # A crash in the middle of a write leaves half a line: it is dropped, not fatal.
    with out.open("a") as f:
        f.write('{"prompt": "a half')

    aes2, pick2 = Counting(aes), Counting(pick)
    label_prompts(prompts, tis, aes2, pick2, out, batch_size=3, images=cfg, progress=False)
    assert pick2.prompts == prompts[6:10]  # nothing finished was recomputed
    assert aes2.prompts == prompts[6:10]
    rows = read_labels(out)
    assert [r["prompt"] for r in rows] == prompts[:10]
    assert rows[:6] == first
    assert all(set(r) == {"prompt", "aesthetic", "pickscore"} for r in rows)
    assert all(isinstance(r["aesthetic"], float) for r in rows)

    # Labels are the scores of the image made with the fixed seed.
    direct = Counting(pick)
    label_prompts(prompts[:2], tis, aes, direct, tmp_path / "again.jsonl", batch_size=2,
                  images=cfg, progress=False)
    again = read_labels(tmp_path / "again.jsonl")
    assert [r["pickscore"] for r in again] == pytest.approx([r["pickscore"] for r in rows[:2]],
                                                            abs=1e-5)
    # Nothing left to do: no images, no scores.
    idle = Counting(pick)
    label_prompts(prompts, tis, aes, idle, out, batch_size=3, images=cfg, progress=False)
    assert idle.calls == 0
    assert len(out.read_text().splitlines()) == 10


def test_read_labels_names_the_bad_row(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a", "aesthetic": 1.0, "pickscore": 2.0}\n{"prompt": "b"}\n')
    with pytest.raises(ValueError, match=r"line 2: missing field 'aesthetic'"):
        read_labels(path)
    path.write_text('nonsense\n{"prompt": "a", "aesthetic": 1.0, "pickscore": 2.0}\n')
    with pytest.raises(ValueError, match="line 1: not JSON"):
        read_labels(path)

