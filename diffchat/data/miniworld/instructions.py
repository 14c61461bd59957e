"""Instructions: the templates edits are written with, and parsing them back into edits.

The generator writes every instruction from TEMPLATES, and `parse_instruction` reads one with
the same templates, so the rule teacher understands exactly what the generator says.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

from diffchat.data.miniworld.grammar import Caption, with_article
from diffchat.data.miniworld.vocabulary import lexicon, word_lists

EDIT_KINDS = ("add", "remove", "replace", "color", "style", "medium", "time", "weather", "mood")
ALWAYS_INVERTIBLE = ("add", "replace")
INVERTIBLE_WITH_OLD_VALUE = ("color", "style", "medium", "time", "weather", "mood")
# How often an edit of a value the caption has names the old value ("from night to dawn").
OLD_VALUE_TEMPLATE_RATE = 0.4


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


def all_templates() -> Iterable[str]:
    return (template for templates in TEMPLATES.values() for template in templates)


@cache
def template_fields(template: str) -> frozenset[str]:
    return frozenset(name for _, name, _, _ in string.Formatter().parse(template) if name)


def _alternation(entries: Iterable[str]) -> str:
    return "(?:" + "|".join(re.escape(e) for e in sorted(entries, key=len, reverse=True)) + ")"


@cache
def _slot_patterns() -> dict[str, str]:
    """A regex for every template slot, from the word lists (exact entries, no guessing)."""
    words = word_lists()
    lex = lexicon()
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


def write_instruction(rng: random.Random, caption: Caption, edit: Edit) -> str:
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
        values["a_obj"] = with_article(" ".join(w for w in (edit.color, edit.new) if w))
    elif edit.kind == "remove":
        values["obj"] = edit.old
    elif edit.kind == "replace":
        values.update(old=edit.old, a_new=with_article(edit.new))
    else:
        new, old = edit.new, edit.old
        if edit.kind == "time":
            values["time_phrase"] = new
            new, old = new.split()[-1], old.split()[-1] if old else None
        values.update({edit.kind: new, f"a_{edit.kind}": with_article(new)})
        if old:
            values.update({f"old_{edit.kind}": old, f"a_old_{edit.kind}": with_article(old)})
        if edit.target:
            values["target"] = edit.target
    usable = [t for t in TEMPLATES[edit.kind] if template_fields(t) <= values.keys()]
    naming_old = [t for t in usable if any("old_" in name for name in template_fields(t))]
    # Templates that name the old value make an edit invertible (T_B), so use them often.
    if naming_old and rng.random() < OLD_VALUE_TEMPLATE_RATE:
        return rng.choice(naming_old).format(**values)
    return rng.choice([t for t in usable if t not in naming_old]).format(**values)
