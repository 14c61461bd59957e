"""The mini-world: seeded offline stand-ins for InstructPix2Pix triplets and PB pairs (section 3.1).

InstructPix2Pix's edit triplets (x_o, i, y_o) and the <simplified, high-quality> prompt pairs
that train the PB model need the network and a large LLM. The mini-world writes both from small
word lists under `data/miniworld/` so that every stage of the course runs offline, with enough
variety that a tiny model has to learn the edits rather than memorise the data.

Captions have one grammar, which is what makes the edits parseable by a rule:

    [a [MOOD] (MEDIUM | FRAME) of] a [COLOR] SUBJECT [ACTION] [with OBJECT (and OBJECT)]
    [SCENE] [TIME] [in WEATHER weather] [in STYLE style]

A high-quality prompt is such a caption followed by comma-separated tags (style, medium,
lighting, quality), as in the paper's Fig. 8. `apply_instruction` and `invert_instruction` parse
the instruction text with the same templates the generator writes from: they play the teacher
LLM's role (appendix A.3, Fig. 10) in the tiny profile.

Edit kinds and whether `invert_instruction` (T_B: write x from y and i) can undo them:

- add, replace: always (the instruction names what was added, or both nouns of the swap);
- color, style, medium, time, weather, mood: only when the instruction names the old value
  ("change the time from night to dawn", "make it sunny instead of rainy");
- remove: never (the removed object's colour and place are in neither y nor i).
"""

from __future__ import annotations

import hashlib
import random
import re
import string
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path

from diffchat.data.loaders import write_jsonl

WORDLIST_DIR = Path(__file__).resolve().parents[2] / "data" / "miniworld"

EDIT_KINDS = ("add", "remove", "replace", "color", "style", "medium", "time", "weather", "mood")
ALWAYS_INVERTIBLE = ("add", "replace")
INVERTIBLE_WITH_OLD_VALUE = ("color", "style", "medium", "time", "weather", "mood")
SPLITS = ("train", "test_seen", "test_unseen")
SUBJECT_GROUPS = ("people", "animals", "things", "buildings", "vehicles")
LIVING_GROUPS = ("people", "animals")

HELD_OUT_FRACTION = 0.15
# One (subject, scene) pair in TEST_SEEN_BUCKETS is kept for test_seen and never used in train.
TEST_SEEN_BUCKETS = 10
# How often an edit of a value the caption has names the old value ("from night to dawn").
OLD_VALUE_TEMPLATE_RATE = 0.4
# Frame nouns a high-quality prompt may lead with ("a portrait of ..."), as in Fig. 8;
# portraits only of people and animals.
LEAD_FRAMES = ("portrait", "close-up")
# Words of the caption grammar itself, besides the word lists.
GLUE_WORDS = ("a", "an", "of", "with", "and", "in", "weather", "style", ",")


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


@cache
def word_lists(directory: Path = WORDLIST_DIR) -> WordLists:
    """Read the word lists once; the files are the single source of the vocabulary."""

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


def _stable_hash(text: str) -> int:
    """A hash that is the same in every process (Python's hash() is salted)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


@cache
def held_out_subjects() -> frozenset[str]:
    """Subjects never used in train or test_seen: ~15% of each group, by a fixed hash."""
    words = word_lists()
    held = set()
    for group_words in words.subjects.values():
        count = max(1, round(len(group_words) * HELD_OUT_FRACTION))
        held.update(sorted(group_words, key=_stable_hash)[:count])
    return frozenset(held)


def quality_tags() -> tuple[str, ...]:
    """The quality tags a high-quality prompt carries and a simplified one never does."""
    return word_lists().quality_tags


def has_quality_tag(prompt: str) -> bool:
    """Whether a prompt carries one of the mini-world's quality tags as a comma-separated tag."""
    tags = {part.strip().lower() for part in prompt.split(",")[1:]}
    return not tags.isdisjoint(quality_tags())


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
    texts.extend(" ".join(re.sub(r"\{\w+\}", " ", t).split()) for t in _all_templates())
    texts.extend(GLUE_WORDS)
    return texts


# ---------------------------------------------------------------------------------------------
# Captions


def article(phrase: str) -> str:
    """'a' or 'an' by the sound of the phrase's first word: "an owl", "a unicorn", "an hour"."""
    word = phrase.split()[0].lower()
    if word.startswith(("uni", "use", "eu", "one", "ubi")):
        return "a"
    if word.startswith(("hour", "honest", "honor", "heir")):
        return "an"
    return "an" if word[0] in "aeiou" else "a"


def _with_article(phrase: str) -> str:
    return f"{article(phrase)} {phrase}"


@dataclass(frozen=True)
class Caption:
    """A simplified caption, slot by slot (see the module docstring for the grammar)."""

    subject: str
    color: str | None = None
    action: str | None = None
    objects: tuple[tuple[str | None, str], ...] = ()  # (colour, noun)
    scene: str | None = None
    time: str | None = None
    weather: str | None = None
    style: str | None = None
    medium: str | None = None
    frame: str | None = None  # frame noun when there is no medium
    mood: str | None = None

    def render(self) -> str:
        parts = []
        if self.medium or self.frame or self.mood:
            head = " ".join(w for w in (self.mood, self.medium or self.frame or "picture") if w)
            parts += [_with_article(head), "of"]
        parts.append(_with_article(" ".join(w for w in (self.color, self.subject) if w)))
        if self.action:
            parts.append(self.action)
        if self.objects:
            things = [_with_article(" ".join(w for w in obj if w)) for obj in self.objects]
            parts.append("with " + " and ".join(things))
        parts.extend(w for w in (self.scene, self.time) if w)
        if self.weather:
            parts.append(f"in {self.weather} weather")
        if self.style:
            parts.append(f"in {self.style} style")
        return " ".join(parts)

    def keywords(self) -> set[str]:
        """Words an edit can add or remove (all already lemmas: singular nouns, adjectives)."""
        words = {self.subject}
        for value in (self.color, self.weather, self.mood):
            if value:
                words.add(value)
        for colour, noun in self.objects:
            words.update(w for w in (colour, noun) if w)
        if self.time:
            words.add(self.time.split()[-1])
        for value in (self.style, self.medium):
            if value:
                words.update(value.split())
        return words


@dataclass(frozen=True)
class _Lexicon:
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
def _lexicon() -> _Lexicon:
    words = word_lists()
    return _Lexicon(
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


def _match_phrase(
    tokens: list[str], i: int, table: dict[tuple[str, ...], str]
) -> tuple[str, int] | None:
    """The longest entry of `table` starting at tokens[i], and the index after it."""
    for length in range(min(6, len(tokens) - i), 0, -1):
        entry = table.get(tuple(tokens[i : i + length]))
        if entry:
            return entry, i + length
    return None


def parse_caption(text: str) -> Caption | None:
    """The caption's slots, or None when the text is not a mini-world caption."""
    lex = _lexicon()
    tokens = text.lower().split()
    slots: dict = {}
    i = 0

    def at(k: int) -> str:
        return tokens[k] if k < len(tokens) else ""

    # [a [MOOD] (MEDIUM | FRAME) of]
    if at(0) in ("a", "an") and "of" in tokens:
        j = 1
        mood = at(j) if at(j) in lex.moods else None
        j += bool(mood)
        medium = _match_phrase(tokens, j, lex.phrases["mediums"])
        frame = at(j) if at(j) in lex.frames else None
        if medium and at(medium[1]) == "of":
            slots.update(mood=mood, medium=medium[0])
            i = medium[1] + 1
        elif frame and at(j + 1) == "of":
            slots.update(mood=mood, frame=frame)
            i = j + 2
    # a [COLOR] SUBJECT
    if at(i) not in ("a", "an"):
        return None
    i += 1
    if at(i) in lex.colors and at(i + 1) in lex.subjects:
        slots["color"] = at(i)
        i += 1
    if at(i) not in lex.subjects:
        return None
    slots["subject"] = at(i)
    i += 1
    if at(i) in lex.actions:
        slots["action"] = at(i)
        i += 1
    # with OBJECT (and OBJECT)*
    if at(i) == "with":
        objects = []
        while True:
            if at(i + 1) not in ("a", "an"):
                return None
            i += 2
            colour = at(i) if at(i) in lex.colors and at(i + 1) in lex.objects else None
            i += bool(colour)
            if at(i) not in lex.objects:
                return None
            objects.append((colour, at(i)))
            i += 1
            if at(i) != "and":
                break
        slots["objects"] = tuple(objects)
    for name, table in (("scene", "scenes"), ("time", "times")):
        found = _match_phrase(tokens, i, lex.phrases[table])
        if found:
            slots[name], i = found
    if at(i) == "in" and at(i + 1) in lex.weather and at(i + 2) == "weather":
        slots["weather"] = at(i + 1)
        i += 3
    if at(i) == "in":
        found = _match_phrase(tokens, i + 1, lex.phrases["styles"])
        if found and at(found[1]) == "style":
            slots["style"] = found[0]
            i = found[1] + 1
    caption = Caption(**slots)
    # Whatever is left over, or a wrong article, means the text is not in the grammar.
    if i != len(tokens) or caption.render() != " ".join(tokens):
        return None
    return caption


@dataclass(frozen=True)
class _Prompt:
    """A prompt split into its caption and its comma-separated tags."""

    caption: Caption
    tags: tuple[str, ...] = ()
    capitalized: bool = False

    def render(self) -> str:
        text = ", ".join((self.caption.render(), *self.tags))
        return text[0].upper() + text[1:] if self.capitalized else text


def _parse_prompt(prompt: str) -> _Prompt | None:
    content, *tags = (part.strip() for part in prompt.strip().split(","))
    caption = parse_caption(content)
    if caption is None:
        return None
    return _Prompt(caption, tuple(tags), content[:1].isupper())


# ---------------------------------------------------------------------------------------------
# Edits and instructions


@dataclass(frozen=True)
class Edit:
    """What an instruction asks for, read from its text.

    `new` is the value set (object added, new noun, colour, style, medium, time phrase, weather,
    mood); `old` the value removed or replaced when the instruction names it; `target` the noun
    whose colour changes, or the subject an `add` names ("give the cat a hat"); `color` the
    colour of an added object.
    """

    kind: str
    new: str | None = None
    old: str | None = None
    target: str | None = None
    color: str | None = None


# Instruction templates by kind. Slots: a_X is "a/an X"; old_X the value the edit replaces.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "add": (
        "add {a_obj}",
        "give {ref} {a_obj}",
        "put {a_obj} on {ref}",
        "let the {subject} have {a_obj}",
        "the {subject} should have {a_obj}",
        "include {a_obj}",
    ),
    "remove": (
        "remove the {obj}",
        "take away the {obj}",
        "get rid of the {obj}",
        "delete the {obj}",
        "lose the {obj}",
        "make it without the {obj}",
        "take the {obj} out",
    ),
    "replace": (
        "turn the {old} into {a_new}",
        "replace the {old} with {a_new}",
        "change the {old} to {a_new}",
        "swap the {old} for {a_new}",
        "make the {old} {a_new}",
        "what if the {old} were {a_new}",
    ),
    "color": (
        "make the {target} {color}",
        "turn the {target} {color}",
        "paint the {target} {color}",
        "change the color of the {target} to {color}",
        "color the {target} {color}",
        "give the {target} {a_color} color",
        "change the {target} from {old_color} to {color}",
        "make the {old_color} {target} {color}",
    ),
    "style": (
        "make it {style}",
        "make it in {style} style",
        "switch to {style} style",
        "give it {a_style} look",
        "change the style to {style}",
        "redo it in {style} style",
        "change the style from {old_style} to {style}",
        "make it {style} instead of {old_style}",
    ),
    "medium": (
        "make it {a_medium}",
        "turn it into {a_medium}",
        "as {a_medium}",
        "change it to {a_medium}",
        "render it as {a_medium}",
        "i want it as {a_medium}",
        "change the medium from {old_medium} to {medium}",
        "make it {a_medium} instead of {a_old_medium}",
    ),
    "time": (
        "make it {time}",
        "change the time to {time}",
        "set it {time_phrase}",
        "show it {time_phrase}",
        "what would it look like {time_phrase}",
        "make it happen {time_phrase}",
        "change the time from {old_time} to {time}",
        "make it {time} instead of {old_time}",
    ),
    "weather": (
        "make it {weather}",
        "make the weather {weather}",
        "change the weather to {weather}",
        "let it be {weather}",
        "make it {a_weather} day",
        "change the weather from {old_weather} to {weather}",
        "make it {weather} instead of {old_weather}",
    ),
    "mood": (
        "make it look {mood}",
        "make it {mood}",
        "give it {a_mood} mood",
        "change the mood to {mood}",
        "make the mood {mood}",
        "make it feel {mood}",
        "change the mood from {old_mood} to {mood}",
        "make it {mood} instead of {old_mood}",
    ),
}


def _all_templates() -> Iterable[str]:
    return (template for templates in TEMPLATES.values() for template in templates)


@cache
def _template_fields(template: str) -> frozenset[str]:
    return frozenset(name for _, name, _, _ in string.Formatter().parse(template) if name)


def _alternation(entries: Iterable[str]) -> str:
    return "(?:" + "|".join(re.escape(e) for e in sorted(entries, key=len, reverse=True)) + ")"


@cache
def _slot_patterns() -> dict[str, str]:
    """A regex for every template slot, from the word lists (exact entries, no guessing)."""
    words = word_lists()
    lex = _lexicon()
    a = "(?:a|an) "
    values = {
        "subject": _alternation(lex.subjects),
        "obj": _alternation(lex.objects),
        "old": _alternation(lex.subjects | lex.objects),
        "target": _alternation(lex.subjects | lex.objects),
        "color": _alternation(lex.colors),
        "style": _alternation(words.styles),
        "medium": _alternation(words.mediums),
        "time": _alternation(words.time_keywords),
        "time_phrase": _alternation(words.times),
        "weather": _alternation(lex.weather),
        "mood": _alternation(lex.moods),
    }
    patterns = dict(values)
    patterns["ref"] = f"(?:it|her|him|them|the {values['subject']})"
    patterns["a_obj"] = f"{a}(?:{values['color']} )?{values['obj']}"
    patterns["a_new"] = a + values["old"]
    for name in ("color", "style", "medium", "time", "weather", "mood"):
        patterns[f"old_{name}"] = values[name]
        patterns[f"a_{name}"] = a + values[name]
    patterns["a_old_medium"] = a + values["medium"]
    return patterns


@cache
def _compiled_templates() -> tuple[tuple[str, re.Pattern[str]], ...]:
    patterns = _slot_patterns()
    compiled = []
    for kind, templates in TEMPLATES.items():
        for template in templates:
            regex = ""
            for literal, name, _, _ in string.Formatter().parse(template):
                regex += re.escape(literal)
                if name:
                    regex += f"(?P<{name}>{patterns[name]})"
            compiled.append((kind, re.compile(regex)))
    return tuple(compiled)


def _bare(value: str | None) -> str | None:
    """'an oil painting' -> 'oil painting'."""
    return value.split(" ", 1)[1] if value else None


def _edit_from_slots(kind: str, slots: dict[str, str]) -> Edit:
    if kind == "add":
        *colour, noun = _bare(slots["a_obj"]).split()
        ref = f"the {slots['subject']}" if "subject" in slots else slots.get("ref", "")
        target = ref[4:] if ref.startswith("the ") else None  # pronouns name no one
        return Edit("add", new=noun, color=colour[0] if colour else None, target=target)
    if kind == "remove":
        return Edit("remove", old=slots["obj"])
    if kind == "replace":
        return Edit("replace", new=_bare(slots["a_new"]), old=slots["old"])
    new = slots.get(kind) or _bare(slots.get(f"a_{kind}"))
    old = slots.get(f"old_{kind}") or _bare(slots.get(f"a_old_{kind}"))
    if kind == "time":
        keywords = word_lists().time_keywords
        new = slots["time_phrase"] if "time_phrase" in slots else keywords[new]
        old = keywords[old] if old else None
    return Edit(kind, new=new, old=old, target=slots.get("target"))


def _normalize_instruction(instruction: str) -> str:
    return " ".join(instruction.lower().strip().rstrip(".!").split())


def parse_instruction(instruction: str) -> Edit | None:
    """The edit an instruction written from TEMPLATES asks for, or None if it is not one."""
    text = _normalize_instruction(instruction)
    for kind, regex in _compiled_templates():
        match = regex.fullmatch(text)
        if match:
            return _edit_from_slots(kind, {k: v for k, v in match.groupdict().items() if v})
    return None


def _set_value(current: str | None, edit: Edit) -> bool:
    """Whether an edit that sets a value applies: it changes it, and names the old one right."""
    return edit.new != current and (edit.old is None or edit.old == current)


def _apply_edit(prompt: _Prompt, edit: Edit) -> _Prompt | None:
    """The edited prompt, or None when the edit does not apply to it."""
    c, tags = prompt.caption, prompt.tags
    nouns = [noun for _, noun in c.objects]
    lex = _lexicon()
    if edit.kind == "add":
        if edit.new in nouns or (edit.target and edit.target != c.subject):
            return None
        c = replace(c, objects=(*c.objects, (edit.color, edit.new)))
    elif edit.kind == "remove":
        if edit.old not in nouns:
            return None
        c = replace(c, objects=tuple(obj for obj in c.objects if obj[1] != edit.old))
    elif edit.kind == "replace":
        if edit.old == c.subject and edit.new in lex.subjects and edit.new != c.subject:
            c = replace(c, subject=edit.new)
        elif edit.old in nouns and edit.new in lex.objects and edit.new not in nouns:
            swapped = tuple((col, edit.new if n == edit.old else n) for col, n in c.objects)
            c = replace(c, objects=swapped)
        else:
            return None
    elif edit.kind == "color":
        if edit.target == c.subject and _set_value(c.color, edit):
            c = replace(c, color=edit.new)
        elif edit.target in nouns:
            colour = c.objects[nouns.index(edit.target)][0]
            if not _set_value(colour, edit):
                return None
            c = replace(
                c, objects=tuple((edit.new if n == edit.target else col, n) for col, n in c.objects)
            )
        else:
            return None
    elif edit.kind in ("style", "medium"):
        # The value lives in the caption, else in a tag of a high-quality prompt, else it is
        # added to the caption.
        entries = lex.phrases[f"{edit.kind}s"].values()
        tag_index = next((k for k, tag in enumerate(tags) if tag.lower() in entries), None)
        in_caption = getattr(c, edit.kind)
        if in_caption or tag_index is None:
            if not _set_value(in_caption, edit):
                return None
            c = replace(c, **{edit.kind: edit.new})
            if edit.kind == "medium":
                c = replace(c, frame=None)
        else:
            if not _set_value(tags[tag_index].lower(), edit):
                return None
            tags = (*tags[:tag_index], edit.new, *tags[tag_index + 1 :])
    else:  # time, weather, mood
        if not _set_value(getattr(c, edit.kind), edit):
            return None
        c = replace(c, **{edit.kind: edit.new})
        if edit.kind == "mood" and not (c.medium or c.frame):
            c = replace(c, frame="picture")
    return replace(prompt, caption=c, tags=tags)


def apply_instruction(prompt: str, instruction: str) -> str | None:
    """y from x and i, by rule: the caption part is edited, tags are kept.

    Works on simplified captions and on high-quality prompts (caption, then tags). A medium or
    style edit replaces a medium or style tag when the caption has none. None when the
    instruction is not one of the templates or does not apply to the prompt.
    """
    edit = parse_instruction(instruction)
    parsed = _parse_prompt(prompt)
    if edit is None or parsed is None:
        return None
    edited = _apply_edit(parsed, edit)
    return edited.render() if edited else None


def simplify_prompt(prompt: str) -> str | None:
    """The simplified caption of a high-quality prompt (Fig. 9's summary, by rule).

    Drops the tags and a lead frame ("a portrait of"), which is what `beautify` adds, so
    simplify_prompt(beautify(s)) == s. None when the prompt is not a mini-world prompt.
    """
    parsed = _parse_prompt(prompt)
    if parsed is None:
        return None
    caption = parsed.caption
    if caption.frame in LEAD_FRAMES:
        caption = replace(caption, frame="picture" if caption.mood else None)
    return caption.render()


def _inverse(edit: Edit) -> Edit | None:
    if edit.kind == "add":
        return Edit("remove", old=edit.new)
    if edit.kind == "replace":
        return Edit("replace", new=edit.old, old=edit.new)
    if edit.kind in INVERTIBLE_WITH_OLD_VALUE and edit.old is not None:
        return Edit(edit.kind, new=edit.old, old=edit.new, target=edit.target)
    return None


def invert_instruction(target: str, instruction: str) -> str | None:
    """x from y and i (template T_B of Fig. 10), where the text determines it, else None.

    Invertible: add and replace always; color, style, medium, time, weather and mood when the
    instruction names the old value; remove never. The answer is checked by applying the
    instruction to it again.
    """
    edit = parse_instruction(instruction)
    parsed = _parse_prompt(target)
    inverse = _inverse(edit) if edit else None
    if inverse is None or parsed is None:
        return None
    undone = _apply_edit(parsed, inverse)
    if undone is None:
        return None
    source = undone.render()
    return source if apply_instruction(source, instruction) == parsed.render() else None


# ---------------------------------------------------------------------------------------------
# Generation


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
    return _stable_hash(f"{subject}|{scene or ''}") % TEST_SEEN_BUCKETS == 0


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


def _instruction_text(rng: random.Random, caption: Caption, edit: Edit) -> str:
    """The edit written with one of its kind's templates, chosen at random among those that fit."""
    words = word_lists()
    subject = caption.subject
    if words.group_of[subject] != "people":
        pronoun = "it"
    else:
        pronoun = {"she": "her", "he": "him"}.get(words.pronouns.get(subject, ""))
    ref = rng.choice([f"the {subject}", pronoun or f"the {subject}"])
    values = {"subject": subject, "ref": ref}
    if edit.kind == "add":
        values["a_obj"] = _with_article(" ".join(w for w in (edit.color, edit.new) if w))
    elif edit.kind == "remove":
        values["obj"] = edit.old
    elif edit.kind == "replace":
        values.update(old=edit.old, a_new=_with_article(edit.new))
    else:
        new, old = edit.new, edit.old
        if edit.kind == "time":
            values["time_phrase"] = new
            new, old = new.split()[-1], old.split()[-1] if old else None
        values.update({edit.kind: new, f"a_{edit.kind}": _with_article(new)})
        if old:
            values.update({f"old_{edit.kind}": old, f"a_old_{edit.kind}": _with_article(old)})
        if edit.target:
            values["target"] = edit.target
    usable = [t for t in TEMPLATES[edit.kind] if _template_fields(t) <= values.keys()]
    naming_old = [t for t in usable if any("old_" in name for name in _template_fields(t))]
    # Templates that name the old value make an edit invertible (T_B), so use them often.
    if naming_old and rng.random() < OLD_VALUE_TEMPLATE_RATE:
        return rng.choice(naming_old).format(**values)
    return rng.choice([t for t in usable if t not in naming_old]).format(**values)


def _keyword_diff(before: Caption, after: Caption) -> tuple[list[str], list[str]]:
    old, new = before.keywords(), after.keywords()
    return sorted(new - old), sorted(old - new)


def _rng(seed: int, split: str, what: str) -> random.Random:
    # String seeds are hashed with SHA-512 by `random`, so streams are stable across processes.
    return random.Random(f"miniworld:{seed}:{split}:{what}")


def generate_triplets(n: int, seed: int, split: str = "train") -> list[dict]:
    """n distinct edit triplets {input, edit, output, kind, added, removed, subject}.

    test_seen uses seen subjects in (subject, scene) pairs that train never uses; test_unseen
    uses only held-out subjects. Captions are simplified (no tags), like InstructPix2Pix's.
    """
    subjects = _subject_pool(split)
    rng = _rng(seed, split, "triplets")
    rows, seen = [], set()
    for _ in range(50 * n + 1000):
        if len(rows) == n:
            break
        caption = _sample_caption(rng, subjects, split)
        caption, edit = _sample_edit(rng, caption, rng.choice(EDIT_KINDS), split)
        instruction = _instruction_text(rng, caption, edit)
        source = caption.render()
        if (source, instruction) in seen:
            continue
        seen.add((source, instruction))
        edited = _apply_edit(_Prompt(caption), edit)
        added, removed = _keyword_diff(caption, edited.caption)
        rows.append({
            "input": source,
            "edit": instruction,
            "output": edited.render(),
            "kind": edit.kind,
            "added": added,
            "removed": removed,
            "subject": caption.subject,
        })
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
