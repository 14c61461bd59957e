"""The visible mini-world: a program that draws a mini-world prompt (DESIGN.md 8).

With random-weight images every tiny-profile image number is noise, so the tiny profile's
text-to-image models are five variants of this renderer. What each word does to the picture
is known: the subject's group picks a glyph, colours fill it, an action poses it, the scene
draws a ground and a feature, the time sets the sky, weather and lighting overlay, mood tints,
styles and mediums filter. Words the world does not know draw nothing. Quality tags draw nothing either: they
remove planted defects (blur, pixel noise, washed-out colour, an off-centre small subject),
which is what gives prompt beautification something to learn (``QUALITY_WEIGHTS``).

The seed varies placement, pose and texture only. All randomness comes from
``np.random.default_rng([seed, variant_index, stream])``, so an image depends on
(prompt, seed, variant, size) alone, in every process and at every thread count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, lru_cache

import numpy as np
from PIL import Image

from diffchat.data.miniworld.vocabulary import stable_hash, word_lists
from diffchat.profiles import RENDERER_TIS

RENDERERS: tuple[str, ...] = RENDERER_TIS  # SD 1.5, Deliberate, Dreamlike, Realistic Vision, SDXL

FACTORS = ("sharp", "clean", "colour", "composition")

# The world's taste. Each quality tag (and a few styles and mediums) adds these weights to the
# planted factors; a factor's level is 1 - (1 - q0) * exp(-0.55 * k * sum of weights) for the
# variant's base quality q0 and tag sensitivity k, and its defect shrinks as the level rises:
# sharp -> blur, clean -> pixel noise, colour -> washed-out colour, composition -> a small
# off-centre subject. Students read this table to see what the reward models must discover;
# training code never reads it.
QUALITY_WEIGHTS: dict[str, dict[str, float]] = {
    "highly detailed": {"sharp": 1.0, "clean": 0.2},
    "trending on artstation": {"colour": 0.5, "composition": 0.4},
    "8k": {"sharp": 0.7, "clean": 0.6},
    "4k": {"sharp": 0.5, "clean": 0.4},
    "sharp focus": {"sharp": 1.3},
    "intricate": {"sharp": 0.6},
    "concept art": {"colour": 0.4, "composition": 0.5},
    "octane render": {"clean": 0.9, "colour": 0.3},
    "unreal engine": {"clean": 0.7, "sharp": 0.3},
    "masterpiece": {"sharp": 0.35, "clean": 0.35, "colour": 0.35, "composition": 0.35},
    "best quality": {"sharp": 0.35, "clean": 0.35, "colour": 0.35, "composition": 0.35},
    "elegant": {"composition": 0.6},
    "smooth": {"clean": 1.1},
    "hyperrealistic": {"sharp": 0.5, "clean": 0.5},
    "photorealistic": {"sharp": 0.4, "clean": 0.6},
    "award winning": {"colour": 0.3, "composition": 0.5},
    "ultra detailed": {"sharp": 0.9, "clean": 0.2},
    "high resolution": {"sharp": 0.5, "clean": 0.7},
    "artstation": {"colour": 0.4, "composition": 0.2},
    "cinematic": {"composition": 0.6, "colour": 0.2},
    "epic composition": {"composition": 1.1},
    "beautiful": {"colour": 0.3, "composition": 0.3},
    "detailed background": {"sharp": 0.5},
    "professional": {"clean": 0.5, "composition": 0.4},
    "vivid colors": {"colour": 1.3},
    "hdr": {"colour": 0.7, "clean": 0.2},
    "uhd": {"sharp": 0.4, "clean": 0.6},
    "depth of field": {"composition": 0.6},
    "bokeh": {"composition": 0.4, "clean": 0.3},
    "trending on pixiv": {"colour": 0.6},
    "featured on behance": {"colour": 0.3, "composition": 0.4},
    "insanely detailed": {"sharp": 1.0},
    "symmetrical": {"composition": 0.9},
    "centered": {"composition": 1.3},
    "rich colors": {"colour": 1.1},
    "crisp": {"sharp": 1.0, "clean": 0.3},
    "extremely detailed": {"sharp": 0.9},
    "stunning": {"colour": 0.4, "composition": 0.2},
    "ultra realistic": {"sharp": 0.4, "clean": 0.5},
    "fine details": {"sharp": 0.8},
    "trending on cgsociety": {"colour": 0.4, "clean": 0.3},
    "wide angle": {"composition": 0.2},
    "35mm lens": {"sharp": 0.4, "composition": 0.3},
    "matte finish": {"clean": 0.8},
    # Lighting tags, and mediums and styles, that also improve the picture (as the words
    # raise a real aesthetic predictor's score).
    "soft light": {"clean": 0.3, "colour": 0.2},
    "cinematic lighting": {"composition": 0.5, "colour": 0.2},
    "volumetric lighting": {"sharp": 0.2, "colour": 0.3},
    "dramatic lighting": {"composition": 0.3, "colour": 0.3},
    "studio lighting": {"clean": 0.5, "sharp": 0.3},
    "rim light": {"composition": 0.3, "sharp": 0.3},
    "natural light": {"colour": 0.3},
    "neon lighting": {"colour": 0.5},
    "moody lighting": {"composition": 0.3},
    "god rays": {"composition": 0.3},
    "backlit": {"composition": 0.4},
    "warm light": {"colour": 0.3},
    "cool light": {"colour": 0.2},
    "diffused light": {"clean": 0.4},
    "ambient light": {"clean": 0.3},
    "glowing light": {"colour": 0.3},
    "soft shadows": {"clean": 0.3, "sharp": 0.1},
    "global illumination": {"clean": 0.4, "colour": 0.2},
    "candlelight": {"colour": 0.2},
    "dappled light": {"composition": 0.2, "colour": 0.2},
    "oil painting": {"colour": 0.5, "composition": 0.2},
    "digital painting": {"colour": 0.4, "clean": 0.3},
    "3d render": {"clean": 0.6, "sharp": 0.3},
    "photograph": {"sharp": 0.4, "clean": 0.2},
    "watercolor painting": {"colour": 0.3, "clean": 0.3},
    "acrylic painting": {"colour": 0.4},
    "gouache painting": {"colour": 0.3},
    "pastel drawing": {"colour": 0.2, "clean": 0.3},
    "vector illustration": {"clean": 0.6, "sharp": 0.3},
    "comic illustration": {"sharp": 0.4, "colour": 0.3},
    "stained glass window": {"colour": 0.6},
    "polaroid photo": {"composition": 0.2},
    "fresco": {"composition": 0.3},
    "tapestry": {"composition": 0.2},
    "embroidery": {"sharp": 0.2},
    "mosaic": {"colour": 0.3},
    "marble sculpture": {"sharp": 0.3, "clean": 0.3},
    "clay sculpture": {"clean": 0.3},
    "pencil sketch": {"sharp": 0.3},
    "charcoal drawing": {"sharp": 0.2},
    "crayon drawing": {"colour": 0.2},
    "paper collage": {"colour": 0.2},
    "minimalist": {"clean": 0.6, "composition": 0.4},
    "art nouveau": {"composition": 0.3},
    "fantasy": {"colour": 0.3},
    "futuristic": {"clean": 0.3},
    "renaissance": {"composition": 0.3},
}


@dataclass(frozen=True)
class Variant:
    """One renderer variant: the amounts of its defects, its palette and its taste sensitivity."""

    noise: float  # pixel noise std at factor level 0
    blur: float  # blur passes at factor level 0
    wash: float  # saturation lost at factor level 0
    contrast: float
    offset: float  # brightness offset
    k: float  # tag sensitivity
    q0: float  # base quality: every factor's level without tags
    hue: float  # palette rotation, degrees
    pastel: float  # blend toward white


VARIANTS: dict[str, Variant] = {
    "mini-sd15": Variant(0.07, 2.0, 0.50, 0.90, 0.00, 1.60, 0.00, 0.0, 0.00),
    "mini-deliberate": Variant(0.06, 1.6, 0.40, 1.05, -0.03, 1.75, 0.10, 12.0, 0.00),
    "mini-dreamlike": Variant(0.05, 2.4, 0.35, 0.90, 0.04, 1.45, 0.05, -10.0, 0.15),
    "mini-realistic": Variant(0.08, 1.4, 0.45, 1.10, -0.04, 1.60, 0.05, 5.0, 0.00),
    "mini-sdxl": Variant(0.04, 1.0, 0.30, 1.00, 0.00, 1.30, 0.30, 0.0, 0.00),
}

COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.12, 0.12), "blue": (0.15, 0.3, 0.9), "green": (0.15, 0.7, 0.2),
    "yellow": (0.95, 0.85, 0.1), "orange": (0.95, 0.5, 0.08), "purple": (0.55, 0.2, 0.7),
    "pink": (0.95, 0.55, 0.7), "black": (0.06, 0.06, 0.06), "white": (0.96, 0.96, 0.96),
    "gray": (0.5, 0.5, 0.5), "brown": (0.5, 0.3, 0.12), "golden": (0.9, 0.7, 0.15),
    "silver": (0.75, 0.77, 0.8), "turquoise": (0.2, 0.85, 0.8), "violet": (0.6, 0.3, 0.9),
    "crimson": (0.75, 0.05, 0.2), "teal": (0.05, 0.5, 0.5), "beige": (0.9, 0.85, 0.7),
    "maroon": (0.45, 0.05, 0.1), "navy": (0.05, 0.1, 0.4), "ivory": (1.0, 0.97, 0.88),
    "lavender": (0.75, 0.65, 0.95), "magenta": (0.9, 0.1, 0.8), "cyan": (0.1, 0.9, 0.95),
    "scarlet": (0.95, 0.15, 0.05), "emerald": (0.1, 0.6, 0.35), "amber": (1.0, 0.7, 0.05),
    "bronze": (0.7, 0.45, 0.2), "copper": (0.75, 0.4, 0.25), "indigo": (0.3, 0.1, 0.55),
    "lilac": (0.8, 0.6, 0.85), "olive": (0.5, 0.5, 0.1), "peach": (1.0, 0.75, 0.6),
    "khaki": (0.75, 0.7, 0.45), "mint": (0.6, 0.95, 0.7), "ruby": (0.7, 0.05, 0.2),
}
PATTERNS = ("rainbow", "striped", "spotted", "checkered")
RAINBOW = np.array([COLORS[c] for c in ("red", "orange", "yellow", "green", "blue", "purple")], np.float32)

# Mood: (tint colour, tint strength, brightness, saturation multiplier).
MOODS: dict[str, tuple[tuple[float, float, float], float, float, float]] = {
    "gloomy": ((0.3, 0.35, 0.45), 0.3, 0.75, 0.6), "cheerful": ((1.0, 0.85, 0.4), 0.2, 1.1, 1.2),
    "peaceful": ((0.6, 0.8, 0.9), 0.15, 1.0, 0.9), "mysterious": ((0.3, 0.2, 0.5), 0.3, 0.8, 0.9),
    "eerie": ((0.4, 0.6, 0.4), 0.3, 0.8, 0.8), "melancholic": ((0.4, 0.45, 0.6), 0.25, 0.85, 0.7),
    "dreamy": ((0.9, 0.7, 0.95), 0.25, 1.05, 0.9), "romantic": ((0.95, 0.5, 0.6), 0.25, 1.0, 1.0),
    "whimsical": ((0.7, 0.9, 0.6), 0.2, 1.05, 1.15), "serene": ((0.55, 0.75, 0.85), 0.2, 1.0, 0.9),
    "ominous": ((0.35, 0.1, 0.1), 0.3, 0.7, 0.8), "joyful": ((1.0, 0.7, 0.3), 0.2, 1.1, 1.25),
    "spooky": ((0.3, 0.5, 0.2), 0.3, 0.72, 0.8), "cozy": ((0.9, 0.6, 0.3), 0.25, 0.95, 1.0),
    "lonely": ((0.5, 0.55, 0.65), 0.25, 0.85, 0.6), "tranquil": ((0.5, 0.8, 0.8), 0.2, 1.0, 0.9),
    "nostalgic": ((0.85, 0.7, 0.45), 0.3, 0.95, 0.7), "festive": ((0.95, 0.3, 0.3), 0.2, 1.05, 1.2),
    "playful": ((0.9, 0.6, 0.9), 0.2, 1.05, 1.2), "haunting": ((0.35, 0.4, 0.55), 0.3, 0.75, 0.65),
}

# Time of day: (sky top, sky bottom, brightness, stars).
TIMES: dict[str, tuple[tuple[float, float, float], tuple[float, float, float], float, bool]] = {
    "at night": ((0.02, 0.03, 0.12), (0.08, 0.1, 0.25), 0.5, True),
    "at midnight": ((0.0, 0.0, 0.06), (0.04, 0.04, 0.15), 0.42, True),
    "at sunset": ((0.35, 0.2, 0.5), (0.98, 0.5, 0.2), 0.8, False),
    "at sunrise": ((0.5, 0.6, 0.9), (1.0, 0.7, 0.45), 0.9, False),
    "at dawn": ((0.3, 0.35, 0.6), (0.95, 0.6, 0.55), 0.8, False),
    "at dusk": ((0.15, 0.12, 0.35), (0.7, 0.35, 0.35), 0.65, True),
    "at noon": ((0.2, 0.5, 0.95), (0.6, 0.8, 1.0), 1.08, False),
    "at twilight": ((0.1, 0.1, 0.35), (0.5, 0.3, 0.55), 0.62, True),
    "in the morning": ((0.45, 0.7, 0.95), (0.95, 0.9, 0.75), 1.0, False),
    "in the afternoon": ((0.3, 0.55, 0.9), (0.75, 0.85, 0.95), 1.02, False),
    "in the evening": ((0.2, 0.2, 0.45), (0.85, 0.55, 0.35), 0.72, False),
}
# What a person or an animal is doing: (lift off the ground, height, leg stride), in subject heights.
ACTIONS: dict[str, tuple[float, float, float]] = {
    "jumping": (0.3, 1.0, 0.5), "running": (0.05, 0.95, 1.0), "walking": (0.0, 1.0, 0.6),
    "dancing": (0.12, 1.05, 0.8), "playing": (0.05, 1.0, 0.5), "sitting": (0.0, 0.72, 0.0),
    "resting": (0.0, 0.65, 0.0), "relaxing": (0.0, 0.7, 0.0), "sleeping": (0.0, 0.5, 0.0),
}
ALIASES = {"night": "at night", "midnight": "at midnight", "sunset": "at sunset",
           "sunrise": "at sunrise", "dawn": "at dawn", "dusk": "at dusk", "noon": "at noon",
           "twilight": "at twilight", "morning": "in the morning", "afternoon": "in the afternoon",
           "evening": "in the evening", "rain": "rainy", "snow": "snowy", "fog": "foggy",
           "storm": "stormy", "sun": "sunny", "wind": "windy", "clouds": "cloudy", "mist": "misty",
           "haze": "hazy", "frost": "frosty", "ice": "icy", "close up": "close-up"}

_INDOOR = ("kitchen", "living room", "bedroom", "classroom", "cafe", "restaurant", "museum",
           "library", "cathedral", "laboratory", "workshop", "bakery", "stage", "ballroom",
           "theater", "subway station", "airport", "greenhouse", "attic", "cellar", "throne room")
# Outdoor scene keyword -> (ground colour, feature); first match wins.
_OUTDOOR = (
    ("frozen lake", (0.85, 0.92, 0.98), "water"), ("glacier", (0.88, 0.94, 1.0), "hills"),
    ("bamboo", (0.35, 0.6, 0.25), "trees"), ("rainforest", (0.1, 0.4, 0.15), "trees"),
    ("forest", (0.15, 0.4, 0.15), "trees"), ("jungle", (0.1, 0.45, 0.1), "trees"),
    ("orchard", (0.35, 0.6, 0.2), "trees"), ("vineyard", (0.45, 0.55, 0.2), "stripes"),
    ("beach", (0.93, 0.85, 0.6), "water"), ("desert", (0.88, 0.72, 0.42), "hills"),
    ("sand dune", (0.92, 0.75, 0.45), "hills"), ("savanna", (0.8, 0.7, 0.35), "trees"),
    ("canyon", (0.7, 0.35, 0.2), "hills"), ("mountain", (0.5, 0.5, 0.45), "hills"),
    ("cliff", (0.55, 0.5, 0.45), "water"), ("hill", (0.4, 0.65, 0.3), "hills"),
    ("valley", (0.35, 0.6, 0.3), "hills"), ("wheat", (0.9, 0.8, 0.4), "stripes"),
    ("cornfield", (0.85, 0.8, 0.3), "stripes"), ("meadow", (0.45, 0.75, 0.3), "flowers"),
    ("zen garden", (0.85, 0.82, 0.75), "stripes"), ("garden", (0.3, 0.65, 0.25), "flowers"),
    ("park", (0.35, 0.7, 0.3), "trees"), ("farm", (0.55, 0.6, 0.3), "stripes"),
    ("waterfall", (0.3, 0.5, 0.3), "fall"), ("lake", (0.35, 0.6, 0.3), "water"),
    ("river", (0.35, 0.62, 0.3), "river"), ("island", (0.9, 0.82, 0.55), "water"),
    ("swamp", (0.3, 0.38, 0.2), "water"), ("lagoon", (0.9, 0.85, 0.6), "water"),
    ("harbor", (0.45, 0.45, 0.45), "water"), ("pier", (0.55, 0.4, 0.25), "water"),
    ("cave", (0.3, 0.25, 0.2), "cave"), ("cemetery", (0.35, 0.45, 0.3), "columns"),
    ("ruins", (0.6, 0.55, 0.45), "columns"), ("stadium", (0.3, 0.6, 0.3), "city"),
    ("city street", (0.4, 0.4, 0.42), "city"), ("alley", (0.35, 0.33, 0.32), "city"),
    ("marketplace", (0.6, 0.5, 0.4), "city"), ("rooftop", (0.45, 0.42, 0.42), "city"),
    ("balcony", (0.6, 0.55, 0.5), "city"),
)


@dataclass(frozen=True)
class Scene:
    """What the lexicon found in a prompt: each slot the renderer draws."""

    subject: str | None = None
    group: str | None = None
    color: str | None = None  # the subject's colour
    action: str | None = None
    objects: tuple[tuple[str | None, str], ...] = ()  # (colour, noun)
    scene: str | None = None
    time: str | None = None
    weather: tuple[str, ...] = ()
    mood: str | None = None
    styles: tuple[str, ...] = ()
    mediums: tuple[str, ...] = ()
    frame: str | None = None
    lighting: tuple[str, ...] = ()
    quality: tuple[str, ...] = ()


@cache
def _phrase_table() -> dict[tuple[str, ...], tuple[str, str]]:
    """Token tuple -> (category, entry) for every list entry and alias; the first list wins."""
    words = word_lists()
    table: dict[tuple[str, ...], tuple[str, str]] = {}

    def add(category: str, entries: Sequence[str]) -> None:
        for entry in entries:
            table.setdefault(tuple(entry.split()), (category, entry))

    add("subject", list(words.group_of))
    for name in ("objects", "colors", "actions", "scenes", "times", "weather", "moods", "styles", "mediums",
                 "frames", "lighting", "quality_tags"):
        add(name, getattr(words, name))
    for alias, entry in ALIASES.items():
        category = "times" if entry in TIMES else "frames" if entry == "close-up" else "weather"
        table.setdefault(tuple(alias.split()), (category, entry))
    for scene in words.scenes:  # "forest" for "in a forest"
        bare = [w for w in scene.split() if w not in ("in", "on", "by", "near", "at", "among", "a", "an", "the")]
        table.setdefault(tuple(bare), ("scenes", scene))
    return table


def subject_group(word: str) -> str | None:
    """The group ('people', 'animals', 'things', 'buildings', 'vehicles') of a subject word."""
    return word_lists().group_of.get(word.lower())


@lru_cache(maxsize=8192)
def parse(prompt: str) -> Scene:
    """The scene a prompt describes: longest match of the mini-world's lists, left to right.

    A colour word colours the next subject or object when nothing known comes between;
    unknown words are skipped and draw nothing.
    """
    table = _phrase_table()
    tokens = prompt.lower().replace(",", " , ").replace(".", " ").split()
    found: dict[str, list] = {}
    subject = color = None
    pending: str | None = None
    i = 0
    while i < len(tokens):
        for length in range(min(4, len(tokens) - i), 0, -1):
            hit = table.get(tuple(tokens[i:i + length]))
            if hit:
                break
        else:
            if tokens[i] == ",":
                pending = None
            i += 1
            continue
        category, entry = hit
        i += length
        if category == "colors":
            pending = entry
            continue
        if category == "subject" and subject is None:
            subject, color = entry, pending
        elif category == "objects":
            found.setdefault("objects", []).append((pending, entry))
        elif category != "subject":
            found.setdefault(category, []).append(entry)
        pending = None

    def first(name: str) -> str | None:
        return found[name][0] if name in found else None

    def all_of(name: str) -> tuple:
        return tuple(dict.fromkeys(found.get(name, ())))

    return Scene(subject=subject, group=subject_group(subject) if subject else None, color=color,
                 action=first("actions"),
                 objects=all_of("objects")[:3], scene=first("scenes"), time=first("times"),
                 weather=all_of("weather"), mood=first("moods"), styles=all_of("styles"),
                 mediums=all_of("mediums"), frame=first("frames"), lighting=all_of("lighting"),
                 quality=all_of("quality_tags"))


def _hash_unit(text: str, salt: str) -> float:
    return (stable_hash(f"{salt}:{text}") % 10_000) / 10_000


@lru_cache(maxsize=4096)
def _hash_color(text: str, salt: str = "colour") -> np.ndarray:
    """A saturated colour of its own for a word (so a replaced subject changes colour too)."""
    h = _hash_unit(text, salt)
    return _hsv(h, 0.55 + 0.35 * _hash_unit(text, salt + "s"), 0.55 + 0.35 * _hash_unit(text, salt + "v"))


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    k = (np.array([5.0, 3.0, 1.0]) + h * 6) % 6
    return (v - v * s * np.clip(np.minimum(k, 4 - k), 0, 1)).astype(np.float32)


@cache
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    return y, x


@lru_cache(maxsize=256)
def _scene_look(scene: str | None) -> tuple[str, np.ndarray, np.ndarray, str]:
    """(family, sky or wall colour, ground colour, feature) of a scene phrase."""
    if scene is None:
        return "outdoor", np.array([0.7, 0.76, 0.82], np.float32), np.array([0.55, 0.58, 0.5], np.float32), "none"
    if scene in ("underwater", "in a coral reef"):
        return "underwater", np.array([0.05, 0.35, 0.6], np.float32), np.array([0.8, 0.72, 0.5], np.float32), \
            "coral" if "coral" in scene else "bubbles"
    if scene in ("in outer space", "on the moon"):
        ground = np.array([0.55, 0.55, 0.55] if "moon" in scene else [0.0, 0.0, 0.0], np.float32)
        return "space", np.array([0.02, 0.02, 0.06], np.float32), ground, "planet"
    for key in _INDOOR:
        if key in scene:
            wall = 0.35 + 0.5 * _hash_color(scene, "wall")
            floor = 0.25 + 0.5 * _hash_color(scene, "floor")
            feature = ("curtains" if key in ("stage", "theater") else
                       "columns" if key in ("cathedral", "museum", "throne room", "ballroom") else
                       "shelves" if key in ("library", "bakery", "kitchen", "workshop", "laboratory") else "window")
            return "indoor", wall.astype(np.float32), floor.astype(np.float32), feature
    for key, ground, feature in _OUTDOOR:
        if key in scene:
            return "outdoor", np.array([0.55, 0.75, 0.95], np.float32), np.array(ground, np.float32), feature
    return "outdoor", np.array([0.55, 0.75, 0.95], np.float32), 0.3 + 0.5 * _hash_color(scene, "ground"), "none"


def _fill(img: np.ndarray, mask: np.ndarray, colour: np.ndarray) -> None:
    img[mask] = colour


def _pattern_fill(img: np.ndarray, mask: np.ndarray, pattern: str, y: np.ndarray, x: np.ndarray,
                  cell: float) -> None:
    """Fill a mask with a colour pattern (rainbow bands, stripes, spots, checks)."""
    cell = max(cell, 1.5)
    if pattern == "rainbow":
        band = (y[mask] / cell).astype(int) % len(RAINBOW)
        img[mask] = RAINBOW[band]
        return
    if pattern == "striped":
        on = ((x + y) / cell).astype(int) % 2 == 0
    elif pattern == "checkered":
        on = ((x / cell).astype(int) + (y / cell).astype(int)) % 2 == 0
    else:  # spotted
        on = ((x % (2 * cell) - cell) ** 2 + (y % (2 * cell) - cell) ** 2) < (0.5 * cell) ** 2
    img[mask & on] = (0.08, 0.08, 0.08)
    img[mask & ~on] = (0.95, 0.92, 0.85) if pattern != "spotted" else (0.9, 0.7, 0.3)


def _colour_of(name: str | None, word: str, salt: str) -> np.ndarray | str:
    if name in PATTERNS:
        return name
    if name in COLORS:
        return np.array(COLORS[name], np.float32)
    return _hash_color(word, salt)


def _paint(img, mask, colour, y, x, cell) -> None:
    if isinstance(colour, str):
        _pattern_fill(img, mask, colour, y, x, cell)
    else:
        _fill(img, mask, colour)


def _draw_subject(img: np.ndarray, scene: Scene, cx: float, cy: float, s: float, flip: float,
                  pose: float) -> np.ndarray:
    """Draw the subject glyph (its bottom at cy, height about s); return its mask.

    A person's or an animal's action lifts it (jumping), squashes it (sitting, sleeping) or
    spreads its legs (walking, running).
    """
    y, x = _grid(img.shape[0])
    word, group = scene.subject, scene.group
    if group in ("people", "animals") and scene.action in ACTIONS:
        lift, height, stride = ACTIONS[scene.action]
        cy -= lift * s
        y = cy - (cy - y) / height
        pose = 0.3 * pose + stride
    body = _colour_of(scene.color, word, "body")
    p1, p2, p3 = (_hash_unit(word, f"p{i}") for i in range(3))
    dark = np.array([0.15, 0.12, 0.1], np.float32)
    cell = s / 6
    dx, dy = x - cx, y - cy
    if group == "people":
        w, head_r = s * (0.3 + 0.15 * p1), s * (0.12 + 0.05 * p2)
        legs = (dy > -0.3 * s) & (dy <= 0) & ((np.abs(dx - w * 0.22) < 0.06 * s + 0.5) |
                                             (np.abs(dx + w * 0.22 + pose * 0.12 * s) < 0.06 * s + 0.5))
        torso = (dy > -0.72 * s) & (dy <= -0.28 * s) & (np.abs(dx) < w / 2)
        arms = (np.abs(dy + 0.62 * s) < 0.05 * s + 0.5) & (np.abs(dx) < w / 2 + 0.14 * s)
        head_y = cy - 0.72 * s - head_r * 0.9
        head = dx ** 2 + (y - head_y) ** 2 < head_r ** 2
        _fill(img, legs, dark)
        _paint(img, torso | arms, body, y, x, cell)
        _fill(img, head, _hsv(0.07, 0.35 + 0.3 * p3, 0.55 + 0.35 * p1))
        if p2 > 0.4:  # a hat
            hat = (y < head_y - 0.4 * head_r) & (y > head_y - head_r * (1.2 + p3)) & (np.abs(dx) < head_r * 0.9)
            _fill(img, hat, _hash_color(word, "hat"))
        mask = legs | torso | arms | head
        mark_y, mark_h = cy - 0.5 * s, 0.09 * s
    elif group == "animals":
        bw, bh = s * (0.55 + 0.35 * p1), s * (0.28 + 0.12 * p2)
        by = cy - 0.22 * s - bh / 2
        torso = (dx / (bw / 2)) ** 2 + ((y - by) / (bh / 2)) ** 2 <= 1
        leg_x = np.abs(np.abs(dx) - bw * (0.28 + 0.1 * pose))
        legs = (y > by) & (dy <= 0) & (leg_x < 0.05 * s + 0.5)
        hx, hy, hr = cx + flip * bw * 0.5, by - bh * 0.45, s * (0.13 + 0.06 * p3)
        head = (x - hx) ** 2 + (y - hy) ** 2 < hr ** 2
        ear_dy = y - (hy - hr * (0.6 + 1.0 * p2))
        ears = (ear_dy > 0) & (y < hy) & (np.abs(np.abs(x - hx) - hr * 0.55) < ear_dy * 0.45)
        tail_x = cx - flip * bw * 0.55
        tail = (np.abs(x - tail_x) < 0.05 * s + 0.5) & (y > by - bh * (0.4 + 0.8 * p1)) & (y < by)
        _fill(img, legs | tail, dark)
        part = torso | head | ears
        _paint(img, part, body, y, x, cell)
        mask = part | legs | tail
        mark_y, mark_h = by, 0.08 * s
    elif group == "buildings":
        w, h = s * (0.6 + 0.35 * p1), s * (0.45 + 0.3 * p2)
        box = (dy > -h) & (dy <= 0) & (np.abs(dx) < w / 2)
        roof_top = cy - h - s * (0.2 + 0.3 * p3)
        roof = (y > roof_top) & (dy <= -h) & (np.abs(dx) < (y - roof_top) / (cy - h - roof_top) * w * 0.6)
        _paint(img, box, body, y, x, cell)
        _fill(img, roof, _hash_color(word, "roof") * 0.7)
        win = box & (np.abs(np.abs(dx) - w * 0.25) < 0.07 * s + 0.5) & (np.abs(dy + h * 0.7) < 0.07 * s + 0.5)
        door = box & (np.abs(dx) < 0.08 * s + 0.5) & (dy > -0.25 * s)
        _fill(img, win, (0.95, 0.9, 0.5))
        _fill(img, door, dark)
        mask = box | roof
        mark_y, mark_h = cy - h * 0.35, 0.07 * s
    elif group == "vehicles":
        w, h = s * (0.75 + 0.25 * p1), s * (0.22 + 0.1 * p2)
        wr = s * (0.09 + 0.04 * p3)
        car = (dy > -h - wr) & (dy <= -wr) & (np.abs(dx) < w / 2)
        cab = (dy > -h - wr - s * 0.18) & (dy <= -h - wr) & (np.abs(dx - flip * w * 0.1) < w * (0.18 + 0.15 * p3))
        wheels = (np.abs(dx) - w * 0.3) ** 2 + (y - (cy - wr)) ** 2 < wr ** 2
        _paint(img, car | cab, body, y, x, cell)
        _fill(img, cab & (dy < -h - wr - 0.05 * s), (0.7, 0.85, 0.95))
        _fill(img, wheels, dark)
        mask = car | cab | wheels
        mark_y, mark_h = cy - wr - h * 0.5, 0.07 * s
    else:  # things, and an unknown group
        w, h = s * (0.45 + 0.35 * p1), s * (0.5 + 0.4 * p2)
        my = cy - h / 2
        shape = int(p3 * 4)
        if shape == 0:
            mask = (dx / (w / 2)) ** 2 + ((y - my) / (h / 2)) ** 2 <= 1
        elif shape == 1:
            mask = (dy > -h) & (dy <= 0) & (np.abs(dx) < w / 2)
        elif shape == 2:
            mask = (dy > -h) & (dy <= 0) & (np.abs(dx) < (y - (cy - h)) / h * w / 2 + 0.5)
        else:
            mask = np.abs(dx) / (w / 2) + np.abs(y - my) / (h / 2) <= 1
        _paint(img, mask, body, y, x, cell)
        mark_y, mark_h = my, 0.08 * s
    # The word's identity mark: a small square of its own colour, placed by its hash.
    mark = (np.abs(x - cx - (p1 - 0.5) * 0.2 * s) < mark_h + 0.5) & (np.abs(y - mark_y) < mark_h + 0.5)
    _fill(img, mark, _hash_color(word, "mark"))
    return mask


def _draw_objects(img, objects, cx, cy, s, rng_vals) -> None:
    """Small glyphs beside the subject, each shaped and coloured by its word (or its colour)."""
    y, x = _grid(img.shape[0])
    size = img.shape[0]
    for n, (colour, noun) in enumerate(objects):
        side = 1 if n % 2 == 0 else -1
        ox = cx + side * s * (0.45 + 0.1 * rng_vals[n])
        oy = cy - s * (0.55 + 0.2 * n + 0.1 * rng_vals[n])
        r = max(1.5, s * 0.11)
        ox, oy = float(np.clip(ox, r, size - r)), float(np.clip(oy, r, size - r))
        shape = stable_hash(noun) % 5
        dx, dy = x - ox, y - oy
        if shape == 0:
            mask = dx ** 2 + dy ** 2 < r ** 2
        elif shape == 1:
            mask = (np.abs(dx) < r) & (np.abs(dy) < r)
        elif shape == 2:
            mask = (dy > -r) & (dy < r) & (np.abs(dx) < (dy + r) / 2 + 0.5)
        elif shape == 3:
            mask = np.abs(dx) + np.abs(dy) < r * 1.2
        else:
            mask = (np.abs(dx) < r * 0.35 + 0.5) & (np.abs(dy) < r * 1.4)
        _paint(img, mask, _colour_of(colour, noun, "object"), y, x, r / 2)


def _background(img: np.ndarray, scene: Scene, horizon: float, rng: np.random.Generator) -> None:
    """Sky (or wall) with the time's gradient, ground, and the scene's feature."""
    size = img.shape[0]
    y, x = _grid(size)
    family, sky, ground, feature = _scene_look(scene.scene)
    t = y[:, :1] / size  # (size, 1)
    h = int(horizon * size)
    if family == "underwater":
        img[:] = sky * (1.2 - 0.6 * t[:, :, None])
    if scene.time and family != "space":
        top, bottom, _, _ = TIMES[scene.time]
        top, bottom = np.array(top, np.float32), np.array(bottom, np.float32)
        if family == "outdoor":
            img[:h] = top + (bottom - top) * (t[:h, :, None] / horizon)
        else:  # indoors and underwater the time only tints the wall
            img[:h] = 0.7 * sky + 0.3 * (top + bottom) / 2
    elif family != "underwater":
        img[:h] = sky * (1.0 - 0.15 * t[:h, :, None])
    if family != "underwater":
        img[h:] = ground * (0.85 + 0.3 * (t[h:, :, None] - horizon))
    else:
        img[int(0.85 * size):] = ground
    u = rng.random(8)
    if feature == "trees":
        for n in range(4):
            tx = (0.05 + 0.25 * n + 0.1 * u[n]) * size
            crown = (x - tx) ** 2 + (y - h + 0.12 * size) ** 2 < (0.08 * size) ** 2
            trunk = (np.abs(x - tx) < 0.015 * size + 0.5) & (y > h - 0.1 * size) & (y < h + 0.02 * size)
            img[trunk] = (0.35, 0.22, 0.1)
            img[crown] = ground * 0.7 + np.array([0.0, 0.12, 0.0], np.float32)
    elif feature in ("water", "river"):
        top = h + (0.02 if feature == "water" else 0.12) * size
        band = (y > top) & (y < top + (0.12 if feature == "water" else 0.06) * size)
        img[band] = (0.2, 0.45, 0.8)
    elif feature == "fall":
        img[(np.abs(x - (0.15 + 0.1 * u[0]) * size) < 0.06 * size) & (y < h + 0.1 * size)] = (0.8, 0.9, 1.0)
    elif feature == "hills":
        ridge = h - (0.12 + 0.1 * u[0]) * size * np.abs(np.sin((x / size + u[1]) * math.pi * 1.5))
        img[(y > ridge) & (y < h)] = ground * 0.8
    elif feature == "stripes":
        img[(y > h) & ((y.astype(int) // max(2, size // 16)) % 2 == 0)] *= 0.8
    elif feature == "flowers":
        spots = (y > h) & (np.sin(x * 1.7 + u[0] * 9) * np.sin(y * 1.9 + u[1] * 9) > 0.93)
        img[spots] = _hash_color(scene.scene or "", "flower")
    elif feature == "city":
        for n in range(5):
            bh = (0.1 + 0.15 * u[n]) * size
            img[(np.abs(x - (0.1 + 0.2 * n) * size) < 0.08 * size) & (y > h - bh) & (y < h)] = (0.4, 0.4, 0.45)
    elif feature == "cave":
        img[(x - size / 2) ** 2 / 1.2 + (y - h) ** 2 * 0.7 > (0.55 * size) ** 2] = (0.12, 0.1, 0.08)
    elif feature == "window":
        win = (np.abs(x - (0.2 + 0.6 * u[0]) * size) < 0.1 * size) & (np.abs(y - 0.25 * size) < 0.1 * size)
        night = scene.time in ("at night", "at midnight", "at dusk", "at twilight")
        img[win] = (0.1, 0.12, 0.3) if night else (0.75, 0.88, 1.0)
    elif feature == "curtains":
        img[(x < 0.1 * size) | (x > 0.9 * size)] = (0.7, 0.1, 0.12)
    elif feature == "columns":
        for cx in (0.1, 0.9):
            img[(np.abs(x - cx * size) < 0.05 * size) & (y < h + 0.05 * size)] = (0.85, 0.82, 0.75)
    elif feature == "shelves":
        img[((y.astype(int) % max(3, size // 8)) == 0) & (y < h) & ((x < 0.3 * size) | (x > 0.7 * size))] = (0.4, 0.25, 0.12)
    elif feature == "bubbles":
        img[np.sin(x * 0.9 + u[0] * 9) * np.sin(y * 1.1 + u[1] * 9) > 0.96] = (0.7, 0.9, 1.0)
    elif feature == "coral":
        img[(y > 0.7 * size) & (np.sin(x * 0.8 + u[0] * 9) > 0.6)] = (0.95, 0.45, 0.45)
    elif feature == "planet":
        px, py = (0.15 + 0.7 * u[0]) * size, 0.18 * size
        img[(x - px) ** 2 + (y - py) ** 2 < (0.09 * size) ** 2] = _hash_color(scene.scene or "", "planet")
    if family == "space" or (scene.time and TIMES[scene.time][3] and family == "outdoor"):
        stars = rng.random((h, size)) > 0.97
        img[:h][stars] = (0.95, 0.95, 0.85)


def _blur(img: np.ndarray) -> np.ndarray:
    """A separable [1 2 1]/4 blur with edge padding."""
    v = img * 0.5
    v[1:] += 0.25 * img[:-1]
    v[0] += 0.25 * img[0]
    v[:-1] += 0.25 * img[1:]
    v[-1] += 0.25 * img[-1]
    out = v * 0.5
    out[:, 1:] += 0.25 * v[:, :-1]
    out[:, 0] += 0.25 * v[:, 0]
    out[:, :-1] += 0.25 * v[:, 1:]
    out[:, -1] += 0.25 * v[:, -1]
    return out


def _lum(img: np.ndarray) -> np.ndarray:
    return img @ np.array([0.299, 0.587, 0.114], np.float32)


def _saturate(img: np.ndarray, factor: float) -> np.ndarray:
    gray = _lum(img)[..., None]
    return gray + (img - gray) * factor


def _hue_matrix(degrees: float) -> np.ndarray:
    """Rotation about the gray axis (a cheap hue shift)."""
    a = math.radians(degrees)
    c, s, k = math.cos(a), math.sin(a), 1 / 3
    r = math.sqrt(k)
    return np.array([
        [c + (1 - c) * k, k * (1 - c) - r * s, k * (1 - c) + r * s],
        [k * (1 - c) + r * s, c + k * (1 - c), k * (1 - c) - r * s],
        [k * (1 - c) - r * s, k * (1 - c) + r * s, c + k * (1 - c)],
    ], np.float32).T


def _edges(img: np.ndarray) -> np.ndarray:
    lum = _lum(img)
    gx = np.zeros_like(lum)
    gy = np.zeros_like(lum)
    gx[:, 1:] = np.abs(np.diff(lum, axis=1))
    gy[1:] = np.abs(np.diff(lum, axis=0))
    return gx + gy


def _pixelate(img: np.ndarray, block: int) -> np.ndarray:
    size = img.shape[0]
    n = size // block
    small = img[:n * block, :n * block].reshape(n, block, n, block, 3).mean(axis=(1, 3))
    out = img.copy()
    out[:n * block, :n * block] = np.repeat(np.repeat(small, block, 0), block, 1)
    return out


_SEPIA = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]], np.float32).T

# Style or medium -> filter; a word not listed gets a palette shift of its own (by hash).
FILTERS: dict[str, str] = {
    "pixel art": "pixelate", "low poly": "pixelate", "mosaic": "mosaic", "cubist": "mosaic",
    "pop art": "posterize", "vector illustration": "posterize", "anime": "posterize",
    "comic illustration": "outline", "cartoon": "outline", "stained glass window": "outline",
    "woodcut print": "ink", "linocut print": "ink", "ink drawing": "ink",
    "pencil sketch": "sketch", "charcoal drawing": "sketch", "chalk drawing": "sketch",
    "vintage": "sepia", "retro": "sepia", "polaroid photo": "sepia", "victorian": "sepia",
    "film noir": "gray", "marble sculpture": "marble", "clay sculpture": "clay",
    "watercolor painting": "paper", "pastel drawing": "paper", "paper collage": "paper",
    "crayon drawing": "paper", "tapestry": "weave", "embroidery": "weave", "fresco": "paper",
    "gouache painting": "paper", "impressionist": "dabs", "oil painting": "dabs",
    "acrylic painting": "dabs", "expressionist": "dabs",
    "psychedelic": "neon", "vaporwave": "neon", "synthwave": "neon", "cyberpunk": "neon",
    "minimalist": "flat", "bauhaus": "posterize", "art deco": "outline",
}


def _apply_filter(img: np.ndarray, word: str, rng: np.random.Generator) -> np.ndarray:
    size = img.shape[0]
    kind = FILTERS.get(word)
    if kind == "pixelate":
        return _pixelate(img, max(2, size // 16))
    if kind == "mosaic":
        block = max(3, size // 12)
        out = _pixelate(img, block)
        y, x = _grid(size)
        out[(y.astype(int) % block == 0) | (x.astype(int) % block == 0)] *= 0.55
        return out
    if kind == "posterize":
        return np.round(_saturate(img, 1.2).clip(0, 1) * 3) / 3
    if kind == "outline":
        out = np.round(img.clip(0, 1) * 4) / 4
        out[_edges(img) > 0.12] = 0.05
        return out
    if kind == "ink":
        ink = np.where((_lum(img) < 0.2) | (_edges(img) > 0.15), 0.08, 0.93)
        return np.repeat(ink[..., None], 3, axis=2).astype(np.float32) * np.array([1.0, 0.98, 0.94], np.float32)
    if kind == "sketch":
        paper = np.array([0.92, 0.9, 0.86], np.float32)
        shade = 0.35 * (1 - _lum(img))[..., None] + 1.8 * _edges(img)[..., None]
        return paper - shade.clip(0, 0.85)
    if kind == "sepia":
        return (img @ _SEPIA) * 0.92 + 0.03
    if kind == "gray":
        lum = _lum(img)[..., None]
        return np.repeat((lum - 0.5) * 1.4 + 0.45, 3, axis=2)
    if kind in ("marble", "clay"):
        tone = np.array([0.93, 0.92, 0.9] if kind == "marble" else [0.72, 0.45, 0.3], np.float32)
        return tone * (0.35 + 0.75 * _lum(img)[..., None])
    if kind in ("paper", "weave"):
        y, x = _grid(size)
        texture = 0.93 + 0.07 * np.sin(x * 2.1) * np.sin(y * 2.3) if kind == "weave" else \
            0.95 + 0.05 * np.sin(x * 0.7 + rng.random() * 6) * np.sin(y * 0.9)
        return (0.85 * img + 0.15 * np.float32(0.9)) * texture[..., None]
    if kind == "dabs":
        return 0.6 * img + 0.4 * _blur(_blur(img))
    if kind == "neon":
        return _saturate(img @ _hue_matrix(40 + 200 * _hash_unit(word, "neon")), 1.4)
    if kind == "flat":
        return np.round(img.clip(0, 1) * 5) / 5
    return img @ _hue_matrix(-30 + 60 * _hash_unit(word, "palette"))


@cache
def _vignette(size: int) -> np.ndarray:
    y, x = _grid(size)
    return (((x - size / 2) ** 2 + (y - size / 2) ** 2) / (size / 2) ** 2).astype(np.float32)


def _lighting(img: np.ndarray, words: tuple[str, ...], subject: np.ndarray | None) -> np.ndarray:
    """Lighting as gentle vignette, rays, rim, warmth (the prototype's rings were too strong)."""
    size = img.shape[0]
    r2 = _vignette(size)
    y, x = _grid(size)
    for word in words:
        if word in ("cinematic lighting", "dramatic lighting", "moody lighting", "candlelight"):
            img = img * (1 - 0.22 * r2.clip(0, 1.5))[..., None]
        if word in ("god rays", "volumetric lighting"):
            rays = (np.sin((x + 0.6 * y) * 0.35) > 0.6) & (y < 0.6 * size)
            img = img + 0.08 * rays[..., None]
        if word in ("rim light", "backlit", "glowing light") and subject is not None and subject.any():
            grown = subject.copy()
            grown[1:] |= subject[:-1]
            grown[:-1] |= subject[1:]
            grown[:, 1:] |= subject[:, :-1]
            grown[:, :-1] |= subject[:, 1:]
            rim = grown & ~subject
            img[rim] = 0.7 * img[rim] + 0.3
        tint = {"warm light": (1.08, 1.0, 0.88), "candlelight": (1.1, 0.95, 0.8),
                "cool light": (0.9, 0.98, 1.1), "neon lighting": (1.1, 0.85, 1.15),
                "studio lighting": (1.05, 1.05, 1.05), "natural light": (1.02, 1.02, 1.0),
                "soft light": (1.03, 1.02, 1.0)}.get(word)
        if tint:
            img = img * np.array(tint, np.float32)
        if word in ("soft light", "diffused light", "soft shadows", "ambient light"):
            img = 0.85 * img + 0.15 * img.mean(axis=(0, 1))
    return img


def _weather(img: np.ndarray, words: tuple[str, ...], rng: np.random.Generator) -> np.ndarray:
    size = img.shape[0]
    y, x = _grid(size)
    horizon = int(0.45 * size)
    for word in words:
        if word in ("rainy", "stormy"):
            img = img * (0.75 if word == "stormy" else 0.88)
            streak = ((x + 0.35 * y + rng.random() * size) % max(3, size // 10) < 1.2) & \
                (rng.random((size, size)) > 0.4)
            img[streak] = 0.3 * img[streak] + np.array([0.5, 0.55, 0.65], np.float32)
        elif word == "snowy":
            flakes = rng.random((size, size)) > 0.94
            img[flakes] = 0.97
            img[int(0.85 * size):] = 0.5 * img[int(0.85 * size):] + 0.47
        elif word in ("foggy", "misty", "hazy"):
            amount = {"foggy": 0.45, "misty": 0.3, "hazy": 0.25}[word]
            fog = (0.8, 0.8, 0.82) if word != "hazy" else (0.85, 0.8, 0.7)
            img = (1 - amount) * img + amount * np.array(fog, np.float32)
        elif word == "sunny":
            sx, sy = (0.15 + 0.7 * rng.random()) * size, 0.14 * size
            img[(x - sx) ** 2 + (y - sy) ** 2 < (0.08 * size) ** 2] = (1.0, 0.92, 0.4)
            img = img * 1.06
        elif word in ("cloudy", "overcast"):
            for _ in range(3 if word == "cloudy" else 6):
                ccx, ccy = rng.random() * size, rng.random() * horizon * 0.7
                blob = ((x - ccx) / 1.8) ** 2 + (y - ccy) ** 2 < (0.08 * size) ** 2
                img[blob] = (0.88, 0.88, 0.9) if word == "cloudy" else (0.65, 0.66, 0.7)
            if word == "overcast":
                img = _saturate(img, 0.7) * 0.92
        elif word == "windy":
            wave = np.abs(y - (0.2 + 0.6 * rng.random()) * size - 3 * np.sin(x * 0.25)) < 0.6
            img[wave & ((x.astype(int) // 3) % 2 == 0)] = 0.92
        elif word in ("frosty", "icy"):
            img = 0.8 * img + 0.2 * np.array([0.85, 0.93, 1.0], np.float32)
            border = np.minimum(np.minimum(x, size - x), np.minimum(y, size - y)) < 0.06 * size
            img[border] = 0.95
    return img


def _level(weights: float, variant: Variant) -> float:
    return 1.0 - (1.0 - variant.q0) * math.exp(-0.55 * variant.k * weights)


def factor_levels(scene: Scene, variant: str = "mini-sd15") -> dict[str, float]:
    """Each planted factor's level in [0, 1] for a parsed prompt (1 = its defect is gone)."""
    v = VARIANTS[variant]
    sums = dict.fromkeys(FACTORS, 0.0)
    for word in (*scene.quality, *scene.lighting, *scene.styles, *scene.mediums):
        for factor, weight in QUALITY_WEIGHTS.get(word, {}).items():
            sums[factor] += weight
    return {factor: _level(total, v) for factor, total in sums.items()}


def _check(variant: str, seed: int, size: int) -> int:
    if variant not in VARIANTS:
        raise ValueError(f"unknown renderer {variant!r}: choose one of {', '.join(RENDERERS)}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    return RENDERERS.index(variant)


def render(prompt: str, seed: int = 0, variant: str = "mini-sd15", size: int = 64) -> np.ndarray:
    """Draw a prompt: an (size, size, 3) uint8 image, the same for the same arguments anywhere."""
    index = _check(variant, seed, size)
    v = VARIANTS[variant]
    scene = parse(prompt)
    levels = factor_levels(scene, variant)
    layout = np.random.default_rng([seed, index, 0])
    texture = np.random.default_rng([seed, index, 1])
    u = layout.random(8)
    img = np.empty((size, size, 3), np.float32)
    horizon = 0.45 + 0.1 * u[0]
    _background(img, scene, horizon, texture)
    # The time's brightness: full on the background, a little on the subject (still visible at night).
    dim = TIMES[scene.time][2] if scene.time and _scene_look(scene.scene)[0] != "space" else 1.0
    img *= dim
    # The subject: frame sets its scale; a low composition level shrinks it and pushes it off-centre.
    scale = {"close-up": 0.75, "portrait": 0.65}.get(scene.frame or "", 0.5)
    if "wide angle" in scene.quality:
        scale *= 0.8
    miss = 1.0 - levels["composition"]
    s = size * scale * (1 - 0.45 * miss) * (0.95 + 0.1 * u[1])
    angle = u[2] * 2 * math.pi
    cx = size * (0.5 + (0.06 * (u[3] - 0.5) + 0.3 * miss * math.cos(angle)))
    cy = size * (0.5 + 0.08 * (u[4] - 0.5) + 0.12 * miss * math.sin(angle)) + s * 0.45
    cy = min(cy, size - 1.0)
    flip = 1.0 if u[5] < 0.5 else -1.0
    subject = None
    if scene.subject:
        subject = _draw_subject(img, scene, cx, cy, s, flip, u[6] - 0.5)
    if scene.objects:
        _draw_objects(img, scene.objects, cx, cy, s, layout.random(3))
    img *= dim ** 0.25
    img = _weather(img, scene.weather, texture)
    img = _lighting(img, scene.lighting, subject)
    if scene.mood:
        tint, strength, bright, sat = MOODS[scene.mood]
        img = _saturate(img, sat) * bright
        img = (1 - strength) * img + strength * np.array(tint, np.float32) * _lum(img)[..., None] * 1.6
    for word in (*scene.styles, *scene.mediums):
        img = _apply_filter(img, word, texture)
    # The variant's look, then the planted defects that quality tags remove.
    if v.hue:
        img = img @ _hue_matrix(v.hue)
    if v.pastel:
        img = (1 - v.pastel) * img + v.pastel * 0.92
    img = (img - 0.5) * v.contrast + 0.5 + v.offset
    blur = v.blur * (1 - levels["sharp"])  # passes of the [1 2 1] blur, the last one partial
    while blur > 0.01:
        img = img + (_blur(img) - img) * min(blur, 1.0)
        blur -= 1.0
    colour = levels["colour"]
    img = _saturate(img, (1 - v.wash) + (v.wash + 0.25) * colour)
    img = 0.5 + (img - 0.5) * (0.8 + 0.25 * colour)
    sigma = v.noise * (1 - levels["clean"])
    if sigma > 0.002:
        # Mostly luminance noise, with some colour speckle.
        noise = np.random.default_rng([seed, index, 2]).standard_normal((size, size, 4), np.float32)
        img = img + sigma * (0.85 * noise[..., :1] + 0.4 * noise[..., 1:])
    return (img.clip(0, 1) * 255 + 0.5).astype(np.uint8)


def render_image(prompt: str, seed: int = 0, variant: str = "mini-sd15", size: int = 64) -> Image.Image:
    """``render`` as a PIL image."""
    return Image.fromarray(render(prompt, seed, variant, size))


def render_batch(prompts: Sequence[str], seeds: Sequence[int] | int = 0, variant: str = "mini-sd15",
                 size: int = 64) -> np.ndarray:
    """(N, size, size, 3) uint8 images; an int seed is used for every prompt."""
    seed_list = [seeds] * len(prompts) if isinstance(seeds, int) else list(seeds)
    if len(seed_list) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(seed_list)} seeds")
    out = np.empty((len(prompts), size, size, 3), np.uint8)
    for n, (prompt, seed) in enumerate(zip(prompts, seed_list, strict=True)):
        out[n] = render(prompt, seed, variant, size)
    return out
