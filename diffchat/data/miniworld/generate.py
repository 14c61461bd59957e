"""Generation: seeded edit triplets, PB pairs, the files of the data stage, the tokenizer's texts.

Every stream is a `random.Random` seeded by a string, so the same seed writes the same data in
every process and on every machine.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from diffchat.data.loaders import write_jsonl
from diffchat.data.miniworld.edits import apply_edit
from diffchat.data.miniworld.grammar import GLUE_WORDS, LEAD_FRAMES, Caption, Prompt, parse_caption
from diffchat.data.miniworld.instructions import EDIT_KINDS, Edit, all_templates, write_instruction
from diffchat.data.miniworld.vocabulary import (
    LIVING_GROUPS,
    held_out_subjects,
    stable_hash,
    word_lists,
)

SPLITS = ("train", "test_seen", "test_unseen")
# One (subject, scene) pair in TEST_SEEN_BUCKETS is kept for test_seen and never used in train.
TEST_SEEN_BUCKETS = 10


def vocabulary_texts(include_held_out: bool = False) -> list[str]:
    """Every word-list entry and the instruction templates, to train the tiny tokenizer on.

    Held-out subjects are left out by default: a tokenizer that had them as whole tokens would
    give them embeddings that training never touches, which is not what "unseen" should test.
    """
    words = word_lists()
    held = set() if include_held_out else held_out_subjects()
    texts = []
    for name, entries in words.categories().items():
        is_subject = name.startswith("subjects")
        texts.extend(entry for entry in entries if not (is_subject and entry in held))
    texts.extend(" ".join(re.sub(r"\{\w+\}", " ", t).split()) for t in all_templates())
    texts.extend(GLUE_WORDS)
    return texts


def _subject_pool(split: str) -> list[str]:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    held = held_out_subjects()
    words = sorted(word_lists().group_of)
    if split == "test_unseen":
        return [w for w in words if w in held]
    return [w for w in words if w not in held]


def _reserved_for_test(subject: str, scene: str | None) -> bool:
    """Whether a (subject, scene) pair belongs to test_seen (and so never to train)."""
    return stable_hash(f"{subject}|{scene or ''}") % TEST_SEEN_BUCKETS == 0


def split_of(subject: str, scene: str | None) -> str:
    """The split a caption's (subject, scene) pair belongs to: test_unseen for a held-out
    subject; test_seen for a seen subject in a pair reserved for testing; train otherwise."""
    if subject in held_out_subjects():
        return "test_unseen"
    return "test_seen" if _reserved_for_test(subject, scene) else "train"


def _sample_caption(rng: random.Random, subjects: list[str], split: str) -> Caption:
    """A random caption whose (subject, scene) pair belongs to the split."""
    words = word_lists()
    while True:
        subject = rng.choice(subjects)
        scene = rng.choice(words.scenes) if rng.random() < 0.85 else None
        if split == "test_unseen" or _reserved_for_test(subject, scene) == (split == "test_seen"):
            break
    group = words.group_of[subject]
    living = group in LIVING_GROUPS
    objects = ()
    if rng.random() < 0.35:
        colour = rng.choice(words.colors) if rng.random() < 0.4 else None
        objects = ((colour, rng.choice(words.objects)),)
    head = rng.random()
    mood = rng.choice(words.moods) if rng.random() < 0.1 else None
    medium = rng.choice(words.mediums) if head < 0.15 else None
    return Caption(
        subject=subject,
        color=rng.choice(words.colors) if group != "people" and rng.random() < 0.45 else None,
        action=rng.choice(words.actions) if living and rng.random() < 0.5 else None,
        objects=objects,
        scene=scene,
        time=rng.choice(words.times) if rng.random() < 0.25 else None,
        weather=rng.choice(words.weather) if rng.random() < 0.15 else None,
        style=rng.choice(words.styles) if rng.random() < 0.12 else None,
        medium=medium,
        frame="picture" if not medium and (mood or head < 0.22) else None,
        mood=mood,
    )


def _other(rng: random.Random, entries: Iterable[str], *exclude: str | None) -> str:
    return rng.choice([e for e in entries if e not in exclude])


def _sample_edit(
    rng: random.Random, caption: Caption, kind: str, split: str
) -> tuple[Caption, Edit]:
    """An edit of `kind` that applies to the caption (which may gain an object to allow it)."""
    words = word_lists()
    group = words.group_of[caption.subject]
    nouns = [noun for _, noun in caption.objects]
    needs_object = kind == "remove" or (kind == "color" and group == "people")
    if needs_object and not nouns:
        caption = replace(caption, objects=((None, rng.choice(words.objects)),))
        nouns = [caption.objects[0][1]]
    if kind == "add":
        colour = rng.choice(words.colors) if rng.random() < 0.3 else None
        return caption, Edit("add", new=_other(rng, words.objects, *nouns), color=colour)
    if kind == "remove":
        return caption, Edit("remove", old=rng.choice(nouns))
    if kind == "replace":
        if nouns and rng.random() < 0.3:
            old = rng.choice(nouns)
            return caption, Edit("replace", old=old, new=_other(rng, words.objects, *nouns))
        # Replacements stay in the subject's group and, outside test_unseen, among seen subjects.
        pool = words.subjects[group]
        if split != "test_unseen":
            pool = [w for w in pool if w not in held_out_subjects()]
        return caption, Edit("replace", old=caption.subject, new=_other(rng, pool, caption.subject))
    if kind == "color":
        targets = ([caption.subject] if group != "people" else []) + nouns
        target = rng.choice(targets)
        if target == caption.subject:
            old = caption.color
        else:
            old = caption.objects[nouns.index(target)][0]
        return caption, Edit("color", new=_other(rng, words.colors, old), old=old, target=target)
    entries = {
        "style": words.styles,
        "medium": words.mediums,
        "time": words.times,
        "weather": words.weather,
        "mood": words.moods,
    }[kind]
    old = getattr(caption, kind)
    return caption, Edit(kind, new=_other(rng, entries, old), old=old)



def _keyword_diff(before: Caption, after: Caption) -> tuple[list[str], list[str]]:
    old, new = before.keywords(), after.keywords()
    return sorted(new - old), sorted(old - new)


def _rng(seed: int, split: str, what: str) -> random.Random:
    # String seeds are hashed with SHA-512 by `random`, so streams are stable across processes.
    return random.Random(f"miniworld:{seed}:{split}:{what}")


@dataclass(frozen=True)
class TripletTrace:
    """One triplet with the steps that made it: the sampled caption (subject and attribute
    slots), the edit (kind and values), the instruction written for it, the edited caption,
    and the keywords the edit added and removed."""

    caption: Caption
    edit: Edit
    instruction: str
    edited: Caption
    added: list[str]
    removed: list[str]

    def row(self) -> dict:
        """The triplet as the data stage writes it."""
        return {
            "input": self.caption.render(),
            "edit": self.instruction,
            "output": Prompt(self.edited).render(),
            "kind": self.edit.kind,
            "added": self.added,
            "removed": self.removed,
            "subject": self.caption.subject,
        }


def sample_triplet(rng: random.Random, split: str = "train",
                   subjects: list[str] | None = None) -> TripletTrace:
    """Draw one triplet of `split` from `rng`: caption, edit kind, edit, instruction, result.

    ``generate_triplets`` draws its rows with this function, so a trace shows exactly how a
    row of the data stage was made.
    """
    subjects = _subject_pool(split) if subjects is None else subjects
    caption = _sample_caption(rng, subjects, split)
    caption, edit = _sample_edit(rng, caption, rng.choice(EDIT_KINDS), split)
    instruction = write_instruction(rng, caption, edit)
    edited = apply_edit(Prompt(caption), edit).caption
    added, removed = _keyword_diff(caption, edited)
    return TripletTrace(caption, edit, instruction, edited, added, removed)


def triplet_rng(seed: int, split: str) -> random.Random:
    """The random stream ``generate_triplets(n, seed, split)`` draws from."""
    return _rng(seed, split, "triplets")


def generate_triplets(n: int, seed: int, split: str = "train") -> list[dict]:
    """n distinct edit triplets {input, edit, output, kind, added, removed, subject}.

    test_seen uses seen subjects in (subject, scene) pairs that train never uses; test_unseen
    uses only held-out subjects. Captions are simplified (no tags), like InstructPix2Pix's.
    """
    subjects = _subject_pool(split)
    rng = triplet_rng(seed, split)
    rows, seen = [], set()
    for _ in range(50 * n + 1000):
        if len(rows) == n:
            break
        trace = sample_triplet(rng, split, subjects)
        row = trace.row()
        if (row["input"], row["edit"]) in seen:
            continue
        seen.add((row["input"], row["edit"]))
        rows.append(row)
    if len(rows) < n:
        raise RuntimeError(f"could only generate {len(rows)} distinct {split} triplets of {n}")
    return rows


def beautify(simplified: str, rng: random.Random) -> str | None:
    """A high-quality prompt for a simplified caption: the same content, a lead, then tags.

    The rule the PB pairs are written with (Fig. 8's shape): maybe "a portrait of ...", then a
    style tag, a medium tag (when the caption names none), lighting, and 3 quality tags.
    The fixed count gives the end of a prompt a learnable place: with a varying count a
    greedy decoder never finds end-of-sequence the likeliest token and loops on tags.
    None when the caption is not a mini-world caption.
    """
    caption = parse_caption(simplified)
    if caption is None:
        return None
    words = word_lists()
    if not (caption.medium or caption.frame or caption.mood) and rng.random() < 0.4:
        living = words.group_of[caption.subject] in LIVING_GROUPS
        caption = replace(caption, frame=rng.choice(LEAD_FRAMES if living else LEAD_FRAMES[1:]))
    tags = []
    if not caption.style and rng.random() < 0.3:
        tags.append(rng.choice(words.styles))
    if not caption.medium and rng.random() < 0.85:
        tags.append(rng.choice(words.mediums))
    tags += rng.sample(words.lighting, 1 if rng.random() < 0.8 else 2)
    tags += rng.sample(words.quality_tags, 3)
    return ", ".join([caption.render(), *tags])


def generate_pb_pairs(n: int, seed: int, split: str = "train") -> list[dict]:
    """n distinct <simplified, high-quality> prompt pairs {simplified, prompt, subject}."""
    subjects = _subject_pool(split)
    rng = _rng(seed, split, "pb")
    rows, seen = [], set()
    for _ in range(50 * n + 1000):
        if len(rows) == n:
            break
        simplified = _sample_caption(rng, subjects, split).render()
        if simplified in seen:
            continue
        seen.add(simplified)
        rows.append({
            "simplified": simplified,
            "prompt": beautify(simplified, rng),
            "subject": parse_caption(simplified).subject,
        })
    if len(rows) < n:
        raise RuntimeError(f"could only generate {len(rows)} distinct {split} PB pairs of {n}")
    return rows


def generate_all(
    out_dir: str | Path, n_triplets: int, n_pb_pairs: int, n_test: int, seed: int
) -> dict[str, Path]:
    """Write the mini-world's files (the dataset-collection stage's raw data) and return them.

    pb_test holds n_test // 2 pairs of seen and the rest of unseen subjects, each with `split`.
    """
    out_dir = Path(out_dir)
    files = {
        "triplets_train": generate_triplets(n_triplets, seed, "train"),
        "triplets_test_seen": generate_triplets(n_test, seed, "test_seen"),
        "triplets_test_unseen": generate_triplets(n_test, seed, "test_unseen"),
        "pb_train": generate_pb_pairs(n_pb_pairs, seed, "train"),
        "pb_test": [
            {**row, "split": split}
            for split, count in (("test_seen", n_test // 2), ("test_unseen", n_test - n_test // 2))
            for row in generate_pb_pairs(count, seed, split)
        ],
    }
    return {name: write_jsonl(rows, out_dir / f"{name}.jsonl") for name, rows in files.items()}
