"""Captions and prompts: the one grammar every mini-world caption follows.

    [a [MOOD] (MEDIUM | FRAME) of] a [COLOR] SUBJECT [ACTION] [with OBJECT (and OBJECT)]
    [SCENE] [TIME] [in WEATHER weather] [in STYLE style]

A high-quality prompt is such a caption followed by comma-separated tags (style, medium,
lighting, quality), as in the paper's Fig. 8. One grammar is what lets a rule parse, edit and
re-render any caption the generator writes.
"""

from __future__ import annotations

from dataclasses import dataclass

from diffchat.data.miniworld.vocabulary import lexicon

# Frame nouns a high-quality prompt may lead with ("a portrait of ..."), as in Fig. 8;
# portraits only of people and animals.
LEAD_FRAMES = ("portrait", "close-up")
# Words of the caption grammar itself, besides the word lists.
GLUE_WORDS = ("a", "an", "of", "with", "and", "in", "weather", "style", ",")


def article(phrase: str) -> str:
    """'a' or 'an' by the sound of the phrase's first word: "an owl", "a unicorn", "an hour"."""
    word = phrase.split()[0].lower()
    if word.startswith(("uni", "use", "eu", "one", "ubi")):
        return "a"
    if word.startswith(("hour", "honest", "honor", "heir")):
        return "an"
    return "an" if word[0] in "aeiou" else "a"


def with_article(phrase: str) -> str:
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
            parts += [with_article(head), "of"]
        parts.append(with_article(" ".join(w for w in (self.color, self.subject) if w)))
        if self.action:
            parts.append(self.action)
        if self.objects:
            things = [with_article(" ".join(w for w in obj if w)) for obj in self.objects]
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
    lex = lexicon()
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
class Prompt:
    """A prompt split into its caption and its comma-separated tags."""

    caption: Caption
    tags: tuple[str, ...] = ()
    capitalized: bool = False

    def render(self) -> str:
        text = ", ".join((self.caption.render(), *self.tags))
        return text[0].upper() + text[1:] if self.capitalized else text


def parse_prompt(prompt: str) -> Prompt | None:
    content, *tags = (part.strip() for part in prompt.strip().split(","))
    caption = parse_caption(content)
    if caption is None:
        return None
    return Prompt(caption, tuple(tags), content[:1].isupper())
