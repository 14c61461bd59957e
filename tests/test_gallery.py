"""The notebooks' pictures of the mini-world: each cell of a grid shows what its label says."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from diffchat.data.miniworld.grammar import Caption  # noqa: E402
from diffchat.images.gallery import (  # noqa: E402
    CATEGORY_WORDS,
    category_grid,
    category_prompts,
    image_row,
    plot_clip_eval,
)
from diffchat.images.render import parse, render  # noqa: E402

BASE = Caption(subject="cat", scene="in a park")


@pytest.mark.parametrize("category", list(CATEGORY_WORDS))
def test_each_row_changes_one_slot_and_the_picture(category):
    prompts = category_prompts(BASE, category, "vivid colors")
    assert [label for label, _ in prompts] == [w or "(none)" for w in CATEGORY_WORDS[category]]
    slot = {"colour": "color", "scene": "scene", "time": "time", "weather": "weather", "style": "styles",
            "frame": "frame"}[category]
    images = []
    for word, prompt in zip(CATEGORY_WORDS[category], (p for _, p in prompts)):
        assert prompt.endswith(", vivid colors") and parse(prompt).subject == "cat"
        found = getattr(parse(prompt), slot)
        if word is not None:  # the renderer reads the word the row put in
            assert found == word or found == (word,), (prompt, found)
        images.append(render(prompt))
    for a, b in zip(images, images[1:]):  # every word draws something different
        changed = float((np.abs(a.astype(int) - b.astype(int)).sum(axis=2) > 30).mean())
        assert changed > 0.03, (category, changed)  # a colour word repaints the subject alone


def test_category_grid_draws_every_word_with_its_label():
    fig = category_grid(BASE, "vivid colors", categories=("colour", "frame"))
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == len(CATEGORY_WORDS["colour"]) + len(CATEGORY_WORDS["frame"])
    assert [ax.get_xlabel() for ax in shown[:3]] == ["(none)", "red", "blue"]
    red = shown[1].images[0].get_array()
    assert np.array_equal(red, render("a red cat in a park, vivid colors"))
    with pytest.raises(ValueError, match="unknown category"):
        category_prompts(BASE, "smell")


def test_image_row_captions_every_image_and_checks_lengths():
    images = [render("a cat"), render("a dog")]
    fig = image_row(images, ["a cat", "a dog\nplanted taste 5.00"], title="two", wrap=8)
    assert [ax.get_xlabel() for ax in fig.axes] == ["a cat", "a dog\nplanted\ntaste\n5.00"]
    with pytest.raises(ValueError, match="2 images but 1 captions"):
        image_row(images, ["a cat"])


def test_plot_clip_eval_draws_each_check_against_chance():
    result = {"chance": {"recall_at_1": 1 / 32, "auc": 0.5, "dclip": 0.0},
              "retrieval_seen": {"image_to_text": 0.9, "text_to_image": 0.8},
              "retrieval_unseen": {"image_to_text": 0.7, "text_to_image": 0.6},
              "auc_seen": {"colour": {"auc": 0.9}, "scene": {"auc": 0.95}, "all": {"auc": 0.85}},
              "dclip": {"real": {"mean": 0.4}, "shuffled": {"mean": 0.01}}}
    fig = plot_clip_eval(result)
    heights = [[round(p.get_height(), 3) for p in ax.patches] for ax in fig.axes]
    assert heights == [[0.9, 0.8, 0.7, 0.6], [0.9, 0.95, 0.85], [0.4, 0.01]]
    assert [ax.lines[0].get_ydata()[0] for ax in fig.axes] == [1 / 32, 0.5, 0.0]
