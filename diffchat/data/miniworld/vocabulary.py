"""The mini-world's vocabulary: the word lists under `data/miniworld/` and what follows from them.

The files are the single source of the words; everything else (held-out subjects, quality tags,
the parser's lookups) is derived from them once and cached.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from diffchat.profiles import data_dir

SUBJECT_GROUPS = ("people", "animals", "things", "buildings", "vehicles")
LIVING_GROUPS = ("people", "animals")

HELD_OUT_FRACTION = 0.15


_LIST_NAMES = (
    "objects", "colors", "actions", "scenes", "times", "weather", "moods",
    "styles", "mediums", "frames", "lighting", "quality_tags",
)


@dataclass(frozen=True)
class WordLists:
    """The mini-world's vocabulary, one tuple per file of `data/miniworld/`."""

    subjects: dict[str, tuple[str, ...]]  # group -> words
    pronouns: dict[str, str]  # person -> 'she' | 'he'
    objects: tuple[str, ...]
    colors: tuple[str, ...]
    actions: tuple[str, ...]
    scenes: tuple[str, ...]
    times: tuple[str, ...]  # phrases: "at night"
    weather: tuple[str, ...]
    moods: tuple[str, ...]
    styles: tuple[str, ...]
    mediums: tuple[str, ...]
    frames: tuple[str, ...]
    lighting: tuple[str, ...]
    quality_tags: tuple[str, ...]
    group_of: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        groups = {word: group for group, words in self.subjects.items() for word in words}
        object.__setattr__(self, "group_of", groups)

    @property
    def time_keywords(self) -> dict[str, str]:
        """Keyword used in instructions ("night") -> phrase in captions ("at night")."""
        return {phrase.split()[-1]: phrase for phrase in self.times}

    def categories(self) -> dict[str, tuple[str, ...]]:
        """Every list by name, subjects split by group."""
        lists = {f"subjects_{group}": words for group, words in self.subjects.items()}
        for name in _LIST_NAMES:
            lists[name] = getattr(self, name)
        return lists


def _read_list(path: Path) -> list[list[str]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rows.append([column.strip() for column in line.split("\t")])
    return rows


def wordlist_dir() -> Path:
    """The word lists' folder: ``miniworld/`` under the course's data folder ($DIFFCHAT_DATA)."""
    return data_dir() / "miniworld"


def word_lists(directory: Path | None = None) -> WordLists:
    """The vocabulary from ``directory`` (default: ``wordlist_dir()``), read once per folder."""
    return _read_word_lists(directory or wordlist_dir())


@cache
def _read_word_lists(directory: Path) -> WordLists:

    def entries(name: str) -> tuple[str, ...]:
        return tuple(row[0].lower() for row in _read_list(directory / f"{name}.txt"))

    subjects, pronouns = {}, {}
    for group in SUBJECT_GROUPS:
        rows = _read_list(directory / f"subjects_{group}.txt")
        subjects[group] = tuple(row[0].lower() for row in rows)
        pronouns.update((row[0].lower(), row[1]) for row in rows if len(row) > 1)
    return WordLists(
        subjects=subjects,
        pronouns=pronouns,
        **{name: entries(name) for name in _LIST_NAMES},
    )


def stable_hash(text: str) -> int:
    """A hash that is the same in every process (Python's hash() is salted)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


@cache
def held_out_subjects() -> frozenset[str]:
    """Subjects never used in train or test_seen: ~15% of each group, by a fixed hash."""
    words = word_lists()
    held = set()
    for group_words in words.subjects.values():
        count = max(1, round(len(group_words) * HELD_OUT_FRACTION))
        held.update(sorted(group_words, key=stable_hash)[:count])
    return frozenset(held)


def quality_tags() -> tuple[str, ...]:
    """The quality tags a high-quality prompt carries and a simplified one never does."""
    return word_lists().quality_tags


def has_quality_tag(prompt: str) -> bool:
    """Whether a prompt carries one of the mini-world's quality tags as a comma-separated tag."""
    tags = {part.strip().lower() for part in prompt.split(",")[1:]}
    return not tags.isdisjoint(quality_tags())



@dataclass(frozen=True)
class Lexicon:
    """Token-tuple lookups for parsing, built once from the word lists."""

    subjects: frozenset[str]
    objects: frozenset[str]
    colors: frozenset[str]
    actions: frozenset[str]
    moods: frozenset[str]
    weather: frozenset[str]
    frames: frozenset[str]
    phrases: dict[str, dict[tuple[str, ...], str]]  # 'scenes' | 'times' | 'styles' | 'mediums'


@cache
def lexicon() -> Lexicon:
    words = word_lists()
    return Lexicon(
        subjects=frozenset(words.group_of),
        objects=frozenset(words.objects),
        colors=frozenset(words.colors),
        actions=frozenset(words.actions),
        moods=frozenset(words.moods),
        weather=frozenset(words.weather),
        frames=frozenset(words.frames),
        phrases={
            name: {tuple(entry.split()): entry for entry in getattr(words, name)}
            for name in ("scenes", "times", "styles", "mediums")
        },
    )
