"""Applying and inverting edits by rule: the teacher LLM's role (appendix A.3, Fig. 10) offline.

Edit kinds and whether `invert_instruction` (T_B: write x from y and i) can undo them:

- add, replace: always (the instruction names what was added, or both nouns of the swap);
- color, style, medium, time, weather, mood: only when the instruction names the old value
  ("change the time from night to dawn", "make it sunny instead of rainy");
- remove: never (the removed object's colour and place are in neither y nor i).

Where the mini-world made the edit itself, it knows the raw pair (x_o, y_o): `transfer_edit`
repeats that word-level change on a beautified prompt, even one the grammar cannot parse.
"""

from __future__ import annotations

import random
from dataclasses import replace

from diffchat.data.miniworld.grammar import LEAD_FRAMES, Prompt, parse_prompt
from diffchat.data.miniworld.instructions import (
    INVERTIBLE_WITH_OLD_VALUE,
    Edit,
    parse_instruction,
)
from diffchat.data.miniworld.vocabulary import lexicon, quality_tags


def _set_value(current: str | None, edit: Edit) -> bool:
    """Whether an edit that sets a value applies: it changes it, and names the old one right."""
    return edit.new != current and (edit.old is None or edit.old == current)


def apply_edit(prompt: Prompt, edit: Edit) -> Prompt | None:
    """The edited prompt, or None when the edit does not apply to it."""
    c, tags = prompt.caption, prompt.tags
    nouns = [noun for _, noun in c.objects]
    lex = lexicon()
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
    parsed = parse_prompt(prompt)
    if edit is None or parsed is None:
        return None
    edited = apply_edit(parsed, edit)
    return edited.render() if edited else None


def touch_up(prompt: str, key: str, rate: float) -> str:
    """The rule teacher's touch-up of a target it wrote: with probability ``rate`` one quality
    tag the prompt lacks, appended. ``key`` (the request) seeds the draw, so that a request
    always gets the same answer, in any process.

    An LLM teacher does not copy a prompt's tags verbatim. A teacher that does trains an SFT
    policy with no choice left at the prompt's end, and PPO, which can only reinforce what the
    policy samples, then has no tag to learn (issue 23). The tag is drawn uniformly: which tags
    make better images is for the reward models to learn from the images.
    """
    rng = random.Random(key)
    if rng.random() >= rate:
        return prompt
    present = {part.strip().lower() for part in prompt.split(",")}
    candidates = [tag for tag in quality_tags() if tag not in present]
    return f"{prompt}, {rng.choice(candidates)}" if candidates else prompt


def simplify_prompt(prompt: str) -> str | None:
    """The simplified caption of a high-quality prompt (Fig. 9's summary, by rule).

    Drops the tags and a lead frame ("a portrait of"), which is what `beautify` adds, so
    simplify_prompt(beautify(s)) == s. None when the prompt is not a mini-world prompt.
    """
    parsed = parse_prompt(prompt)
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
    parsed = parse_prompt(target)
    inverse = _inverse(edit) if edit else None
    if inverse is None or parsed is None:
        return None
    undone = apply_edit(parsed, inverse)
    if undone is None:
        return None
    source = undone.render()
    return source if apply_instruction(source, instruction) == parsed.render() else None


def transfer_edit(text: str, before: str, after: str) -> str | None:
    """``text`` (a rewrite of ``before``) changed the way ``before`` changed into ``after``.

    The mini-world knows the raw edit it made (``before`` -> ``after``, simplified captions);
    a teacher given a beautified version of one side writes the other by making the same
    word-level change at the aligned place in its caption (the part before the first comma),
    keeping everything else: the tags, and any words the PB model got wrong. Words are aligned
    with difflib, ignoring case; a change that falls on words the rewrite altered replaces
    them. None when the raw edit changes nothing, or nothing in ``text`` (the words it
    removes are not there), or leaves an empty caption.
    """
    from difflib import SequenceMatcher

    caption, comma, tail = text.partition(",")
    src, dst, words = before.lower().split(), after.lower().split(), caption.split()
    align = SequenceMatcher(None, src, [w.lower() for w in words], autojunk=False).get_opcodes()

    def start(i: int) -> int:
        """Where the word src[i] (or what the rewrite made of it) starts in the caption."""
        for tag, i1, i2, j1, _ in align:
            if i1 <= i < i2:
                return j1 + (i - i1) if tag == "equal" else j1
        return len(words)

    def end(i: int) -> int:
        """Where the words before src[i] end in the caption: an insertion point."""
        for tag, i1, i2, _, j2 in align:
            if i1 < i <= i2:
                return j2 - (i2 - i) if tag == "equal" else j2
        return 0

    changes = [(end(i1), end(i1), dst[j1:j2]) if i1 == i2 else (start(i1), end(i2), dst[j1:j2])
               for tag, i1, i2, j1, j2 in SequenceMatcher(None, src, dst, autojunk=False).get_opcodes()
               if tag != "equal"]
    edited = list(words)
    for lo, hi, new in sorted(changes, key=lambda c: c[0], reverse=True):
        edited[lo:max(lo, hi)] = new
    result = " ".join(edited) + comma + tail
    return result if changes and edited and result != text else None
