"""The mini-world generator and its rule-based edits (section 3.1, Fig. 2, appendix A.1-A.3)."""

from __future__ import annotations

import random
import time
from collections import Counter

import pytest

from diffchat.data import miniworld as mw
from diffchat.data.loaders import load_instructpix2pix_jsonl, load_pb_pairs

TAGS = ("highly detailed", "soft light", "8k", "trending on artstation")


@pytest.fixture(scope="module")
def train():
    return mw.generate_triplets(3000, seed=0)


@pytest.fixture(scope="module")
def test_seen():
    return mw.generate_triplets(600, seed=0, split="test_seen")


@pytest.fixture(scope="module")
def test_unseen():
    return mw.generate_triplets(600, seed=0, split="test_unseen")


def _words(text: str) -> set[str]:
    return set(text.replace(",", " ").split())


# ---- word lists -------------------------------------------------------------------------


def test_word_list_sizes():
    words = mw.word_lists()
    assert sum(len(group) for group in words.subjects.values()) >= 150
    assert set(words.subjects) == set(mw.SUBJECT_GROUPS)
    minimum = {"objects": 40, "colors": 40, "scenes": 60, "styles": 30, "mediums": 20,
               "quality_tags": 40, "lighting": 15, "times": 10, "weather": 10, "moods": 15}
    for name, size in minimum.items():
        assert len(getattr(words, name)) >= size, name


def test_entries_are_unique_and_subjects_are_single_words():
    words = mw.word_lists()
    entries = [entry for group in words.categories().values() for entry in group]
    duplicates = [entry for entry, count in Counter(entries).items() if count > 1]
    assert duplicates == []
    for subject in words.group_of:
        assert subject.isalpha() and subject.islower(), subject
    assert words.pronouns["queen"] == "she" and words.pronouns["king"] == "he"


def test_edited_words_appear_in_no_other_list():
    """Subjects, objects and edit values own their words: parsing and keyword checks are exact."""
    words = mw.word_lists()
    categories = words.categories()
    owners: dict[str, set[str]] = {}
    for name, entries in categories.items():
        for entry in entries:
            for word in entry.split():
                owner = "subjects" if name.startswith("subjects") else name
                owners.setdefault(word, set()).add(owner)
    exclusive = ["subjects", "objects", "colors", "moods", "weather", "actions"]
    for word, names in owners.items():
        if names & set(exclusive):
            assert len(names) == 1, (word, names)
    for keyword in words.time_keywords:
        assert owners[keyword] == {"times"}, keyword


def test_held_out_subjects_are_fixed_and_about_15_percent_per_group():
    held = mw.held_out_subjects()
    words = mw.word_lists()
    for group, members in words.subjects.items():
        share = len(held & set(members)) / len(members)
        assert 0.1 <= share <= 0.2, group
    assert held == mw.held_out_subjects.__wrapped__()  # recomputed: no seed, no process salt


def test_vocabulary_texts_leave_out_held_out_subjects_by_default():
    held = mw.held_out_subjects()
    default = set(mw.vocabulary_texts())
    full = set(mw.vocabulary_texts(include_held_out=True))
    assert held.isdisjoint(default) and held <= full
    assert {"cat", "watercolor painting", "trending on artstation", "turn the into"} <= default


def test_quality_tags():
    assert "trending on artstation" in mw.quality_tags()
    assert mw.has_quality_tag("a cat, oil painting, 8k")
    assert not mw.has_quality_tag("a cat, oil painting")
    assert not mw.has_quality_tag("a highly detailed cat")  # only tags after commas count


@pytest.mark.parametrize(
    ("phrase", "expected"),
    [("owl", "an"), ("unicorn", "a"), ("hourglass", "an"), ("oil painting", "an"),
     ("3d render", "a"), ("cat", "a"), ("eerie picture", "an")],
)
def test_article(phrase, expected):
    assert mw.article(phrase) == expected


# ---- generation ---------------------------------------------------------------------------


def test_generation_is_deterministic_for_a_seed(train):
    assert mw.generate_triplets(3000, seed=0) == train
    assert mw.generate_triplets(50, seed=1) != train[:50]
    assert mw.generate_pb_pairs(100, seed=3) == mw.generate_pb_pairs(100, seed=3)
    assert mw.generate_triplets(40, seed=0)[:40] == train[:40]  # sizes do not reshuffle


def test_20k_triplets_are_fast():
    start = time.perf_counter()
    rows = mw.generate_triplets(20_000, seed=7)
    assert len(rows) == 20_000
    assert time.perf_counter() - start < 10


def test_triplet_rows(train):
    assert set(train[0]) == {"input", "edit", "output", "kind", "added", "removed", "subject"}
    assert Counter(row["kind"] for row in train).keys() == set(mw.EDIT_KINDS)
    assert len({(row["input"], row["edit"]) for row in train}) == len(train)
    for row in train:
        assert "," not in row["input"] + row["output"]
        assert not mw.has_quality_tag(row["output"])
        assert mw.parse_caption(row["input"]).subject == row["subject"]
        assert row["added"] or row["removed"]
        assert set(row["added"]) <= _words(row["output"]) - _words(row["input"])
        assert set(row["removed"]) <= _words(row["input"]) - _words(row["output"])


def test_a_trace_is_how_the_first_row_was_made(train):
    trace = mw.sample_triplet(mw.triplet_rng(0, "train"), "train")
    assert trace.row() == train[0]
    assert trace.caption.subject == train[0]["subject"] and trace.edit.kind == train[0]["kind"]
    assert trace.caption.keywords() - trace.edited.keywords() == set(trace.removed)


def test_split_of_names_the_split_of_every_rows_subject_and_scene(train, test_seen, test_unseen):
    for split, rows in (("train", train), ("test_seen", test_seen), ("test_unseen", test_unseen)):
        captions = [mw.parse_caption(row["input"]) for row in rows]
        assert {mw.split_of(c.subject, c.scene) for c in captions} == {split}


def test_templates_vary_within_each_kind(train):
    for kind in mw.EDIT_KINDS:
        openings = {" ".join(row["edit"].split()[:2]) for row in train if row["kind"] == kind}
        assert len(openings) >= 4, (kind, openings)


@pytest.mark.parametrize("split", mw.SPLITS)
def test_apply_instruction_reproduces_every_output(split, train, test_seen, test_unseen):
    rows = {"train": train, "test_seen": test_seen, "test_unseen": test_unseen}[split]
    for row in rows:
        assert mw.apply_instruction(row["input"], row["edit"]) == row["output"], row
        assert mw.parse_instruction(row["edit"]).kind == row["kind"]


def test_apply_instruction_on_prompts_with_tags_keeps_the_tags(train):
    for row in train:
        beautified = ", ".join((row["input"], *TAGS))
        assert mw.apply_instruction(beautified, row["edit"]) == ", ".join((row["output"], *TAGS))


def test_medium_and_style_edits_replace_a_tag_when_the_caption_has_none(train):
    checked = Counter()
    for row in train:
        if row["kind"] not in ("medium", "style"):
            continue
        caption = mw.parse_caption(row["input"])
        if getattr(caption, row["kind"]) is not None:
            continue
        edit = mw.parse_instruction(row["edit"])
        old = "oil painting" if row["kind"] == "medium" else "baroque"
        if edit.new == old:
            continue
        prompt = f"{row['input']}, {old}, soft light, 8k"
        expected = f"{row['input']}, {edit.new}, soft light, 8k"
        assert mw.apply_instruction(prompt, row["edit"]) == expected
        checked[row["kind"]] += 1
    assert checked["medium"] > 20 and checked["style"] > 20


def test_apply_instruction_on_beautified_prompts(train):
    rng = random.Random(0)
    for row in train:
        prompt = mw.beautify(row["input"], rng)
        edited = mw.apply_instruction(prompt, row["edit"])
        tags = prompt.split(", ")[1:]
        if edited is None:  # the tag already has the medium or style asked for: no edit to make
            assert mw.parse_instruction(row["edit"]).new in tags, (prompt, row["edit"])
            continue
        edited_tags = edited.split(", ")[1:]
        if tags == edited_tags:
            assert mw.simplify_prompt(edited) == row["output"]
        else:  # a medium or style tag was replaced, the caption kept
            assert row["kind"] in ("medium", "style")
            assert mw.simplify_prompt(edited) == row["input"]
            assert [a != b for a, b in zip(tags, edited_tags, strict=True)].count(True) == 1


def test_invert_instruction(train):
    outcomes = Counter()
    for row in train:
        edit = mw.parse_instruction(row["edit"])
        source = mw.invert_instruction(row["output"], row["edit"])
        invertible = row["kind"] in mw.ALWAYS_INVERTIBLE or (
            row["kind"] in mw.INVERTIBLE_WITH_OLD_VALUE and edit.old is not None
        )
        if invertible:
            assert source == row["input"], row
            tagged = mw.invert_instruction(", ".join((row["output"], *TAGS)), row["edit"])
            assert tagged == ", ".join((row["input"], *TAGS))
        else:
            assert source is None, row
        outcomes[row["kind"], invertible] += 1
    for kind in mw.INVERTIBLE_WITH_OLD_VALUE:
        assert outcomes[kind, True] > 0, kind
    assert outcomes["remove", True] == 0


def test_examples_from_the_brief():
    apply = mw.apply_instruction
    assert apply("a queen in a garden", "give her a crown") == "a queen with a crown in a garden"
    assert apply("a cat in a garden", "make it night") == "a cat in a garden at night"
    assert apply("a black cat", "turn the cat into a dog") == "a black dog"
    assert apply("a knight with a blue scarf", "make the scarf red") == "a knight with a red scarf"
    assert apply("a knight with a hat on a hill", "remove the hat") == "a knight on a hill"
    assert apply("an owl in a forest", "make it a watercolor painting") == (
        "a watercolor painting of an owl in a forest"
    )
    assert apply("a cat on a beach", "make it rainy") == "a cat on a beach in rainy weather"
    assert apply("a cat on a hill", "make it look gloomy") == "a gloomy picture of a cat on a hill"
    assert apply("a cat", "make it cyberpunk") == "a cat in cyberpunk style"
    hq = ("A portrait of a black cat sitting in a garden, watercolor painting, soft light, "
          "highly detailed, sharp focus, trending on artstation")
    assert apply(hq, "make it an oil painting") == hq.replace("watercolor", "oil")
    assert apply(hq, "make it eerie") == hq.replace("A portrait", "An eerie portrait")
    assert apply(hq, "make the cat white.") == hq.replace("black", "white")


def test_simplify_prompt():
    hq = "A portrait of a black cat in a garden, watercolor painting, soft light, 8k"
    assert mw.simplify_prompt(hq) == "a black cat in a garden"
    assert mw.simplify_prompt("an eerie close-up of an owl, 8k") == "an eerie picture of an owl"
    assert mw.simplify_prompt("a picture of an owl, 8k") == "a picture of an owl"
    assert mw.simplify_prompt("A portrait of an adorable cute boy, fantasy, 8k") is None


def test_inverse_examples():
    invert = mw.invert_instruction
    assert invert("a cat with a hat", "add a hat") == "a cat"
    assert invert("a cat with a red hat", "add a hat") is None  # the add writes no colour
    assert invert("a black dog", "turn the cat into a dog") == "a black cat"
    assert invert("a cat at dawn", "change the time from night to dawn") == "a cat at night"
    assert invert("a cat at dawn", "make it dawn") is None
    assert invert("a cat", "remove the hat") is None


@pytest.mark.parametrize(
    ("prompt", "instruction"),
    [
        ("a cat", "remove the hat"),  # nothing to remove
        ("a cat with a hat", "add a hat"),  # already there
        ("a cat", "give the dog a hat"),  # names another subject
        ("a cat at night", "make it night"),  # no change
        ("a cat at dawn", "change the time from night to noon"),  # wrong old value
        ("a cat", "make the scarf red"),
        ("a cat", "sing a song"),  # not a template
        ("a cat", "turn the cat into a hat"),  # a subject becomes a subject, not an object
        ("the best cat ever", "add a hat"),  # not a mini-world caption
        ("an cat", "add a hat"),  # wrong article
    ],
)
def test_apply_instruction_returns_none_when_it_does_not_apply(prompt, instruction):
    assert mw.apply_instruction(prompt, instruction) is None


def test_parse_caption_round_trips(train):
    for row in train[:500]:
        for text in (row["input"], row["output"]):
            assert mw.parse_caption(text).render() == text
    longest = ("a gloomy watercolor painting of a red fox running with a golden crown and a scarf "
               "in a zen garden at dusk in foggy weather in art deco style")
    assert mw.parse_caption(longest).render() == longest


# ---- splits ---------------------------------------------------------------------------------


def test_held_out_subjects_never_reach_train_or_test_seen(train, test_seen):
    held = mw.held_out_subjects()
    for row in train + test_seen:
        assert held.isdisjoint(_words(row["input"]) | _words(row["output"]) | _words(row["edit"]))
    for row in mw.generate_pb_pairs(1000, seed=0):
        assert held.isdisjoint(_words(row["prompt"]))


def test_test_unseen_uses_held_out_subjects(test_unseen):
    held = mw.held_out_subjects()
    assert {row["subject"] for row in test_unseen} <= held
    assert len({row["subject"] for row in test_unseen}) > len(held) // 2


def test_test_seen_is_new_combinations_of_seen_subjects(train, test_seen):
    held = mw.held_out_subjects()
    assert not {row["subject"] for row in test_seen} & held

    def pairs(rows):
        return {(c.subject, c.scene) for c in (mw.parse_caption(r["input"]) for r in rows)}

    assert pairs(train).isdisjoint(pairs(test_seen))
    train_keys = {(row["input"], row["edit"]) for row in train}
    assert not train_keys & {(row["input"], row["edit"]) for row in test_seen}
    assert {row["subject"] for row in test_seen} <= {row["subject"] for row in train} | held


def test_unknown_split():
    with pytest.raises(ValueError, match="split"):
        mw.generate_triplets(1, seed=0, split="dev")


# ---- PB pairs and files --------------------------------------------------------------------


def test_pb_pairs():
    rows = mw.generate_pb_pairs(1000, seed=0)
    assert len({row["simplified"] for row in rows}) == len(rows)
    with_lead = 0
    for row in rows:
        simplified, prompt = row["simplified"], row["prompt"]
        assert "," not in simplified and not mw.has_quality_tag(simplified)
        assert mw.has_quality_tag(prompt)
        tags = prompt.split(", ")[1:]
        assert 3 <= sum(tag in mw.quality_tags() for tag in tags) <= 6
        assert _words(simplified) - {"a", "an"} <= _words(prompt)
        assert mw.simplify_prompt(prompt) == simplified
        with_lead += prompt.startswith(("a portrait of", "a close-up of"))
    assert 100 < with_lead < 600


def test_generate_all_writes_loadable_files(tmp_path):
    paths = mw.generate_all(tmp_path / "data", n_triplets=200, n_pb_pairs=100, n_test=31, seed=5)
    assert set(paths) == {"triplets_train", "triplets_test_seen", "triplets_test_unseen",
                          "pb_train", "pb_test"}
    assert len(load_instructpix2pix_jsonl(paths["triplets_train"])) == 200
    assert len(load_instructpix2pix_jsonl(paths["triplets_test_unseen"])) == 31
    assert len(load_pb_pairs(paths["pb_train"])) == 100
    pb_test = load_pb_pairs(paths["pb_test"])
    assert Counter(row["split"] for row in pb_test) == {"test_seen": 15, "test_unseen": 16}
    assert load_instructpix2pix_jsonl(paths["triplets_test_seen"]) == mw.generate_triplets(
        31, seed=5, split="test_seen"
    )
