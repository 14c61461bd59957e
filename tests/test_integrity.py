"""Content integrity score (Listing 1) and the prefix scorer used by VCI."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import nltk
import pytest

from diffchat import integrity
from diffchat.integrity import (
    PrefixCIScorer,
    batch_prefix_ci_scores,
    ci_score,
    explain_ci,
    extract_keywords,
    prefix_ci_scores,
    synonyms,
)

# x_o (raw prompt), i (instruction), y_o (reference target): keywords(y_o) = zebra, stand,
# field (standing is VBG here); zebra is highlighted (in i, not in x_o).
ZEBRA = ("a horse is standing in a field", "turn the horse into a zebra")
ZEBRA_Y_O = "a zebra is standing in a field"


def raw(y: str, x_o: str = ZEBRA[0], i: str = ZEBRA[1], y_o: str = ZEBRA_Y_O) -> float:
    return ci_score(x_o, i, y_o, y, threshold=None)


# ---- keywords and synonyms -----------------------------------------------------------


def test_keywords_are_lemmas_of_nouns_adjectives_verbs_in_first_occurrence_order():
    assert extract_keywords("A cat is sitting on the red mats.") == ["cat", "sit", "red", "mat"]
    assert extract_keywords(ZEBRA_Y_O) == ["zebra", "stand", "field"]


def test_keywords_drop_auxiliaries_punctuation_and_duplicates_and_lower_case():
    assert extract_keywords("The dogs have been running, dogs!") == ["dog", "run"]
    assert extract_keywords("it is there") == []
    assert extract_keywords("Van Gogh style") == ["van", "gogh", "style"]
    assert extract_keywords("... , ; !") == []
    assert extract_keywords("") == []


def test_synonyms_word_first_then_wordnet_names_without_multiword_names():
    syns = synonyms("car")
    assert syns[0] == "car"
    assert "automobile" in syns and "auto" in syns
    assert len(syns) == len(set(syns))
    assert all("_" not in s for s in synonyms("dog"))  # "hot_dog" etc. are dropped
    assert synonyms("Car") == syns
    assert synonyms("zxqwv") == ["zxqwv"]  # unknown to WordNet: only itself


# ---- ci_score: each rule of Listing 1 ---------------------------------------------------


def test_highlighted_keyword_counts_two():
    assert extract_keywords(ZEBRA[0]) == ["horse", "stand", "field"]
    assert raw("a zebra") == pytest.approx(2 / 3)  # highlighted: 2 of 3
    assert raw("a field") == pytest.approx(1 / 3)  # plain keyword: 1 of 3
    assert raw("a horse is standing in a field") == pytest.approx(2 / 3)  # the omission


def test_cap_at_one():
    assert raw("a zebra is standing") == 1.0  # 2 + 1 = 3 of 3
    assert raw(ZEBRA_Y_O) == 1.0  # 4 of 3, capped


def test_wordnet_synonym_keeps_the_score():
    x_o, i, y_o = "a street at night", "add a car", "a car parked on the street"
    assert extract_keywords(y_o) == ["car", "park", "street"]
    assert raw("an automobile parked on the street", x_o, i, y_o) == 1.0
    assert raw("a truck parked on the street", x_o, i, y_o) == pytest.approx(2 / 3)


def test_highlight_weight_goes_to_the_synonym_found_as_listing_1_does():
    # Listing 1 checks `s in highlighted` for the synonym s it found: "car" is highlighted,
    # "automobile" is not, so the same content counts 2 as "car" and 1 as "automobile".
    x_o, i, y_o = "a street at night", "add a car", "a car on the street at night"
    assert raw("a car", x_o, i, y_o) == pytest.approx(2 / 3)
    assert raw("an automobile", x_o, i, y_o) == pytest.approx(1 / 3)


def test_explain_ci_traces_listing_1_and_gives_ci_scores_result():
    x_o, i, y_o = "a street at night", "add a car", "a car parked on the street"
    trace = explain_ci(x_o, i, y_o, "an automobile on the street", threshold=0.7)
    assert trace.keywords == ["car", "park", "street"] and trace.highlighted == ["car"]
    assert trace.found == [("car", "automobile", 1), ("park", None, 0), ("street", "street", 1)]
    assert (trace.count, trace.raw, trace.score) == (2, pytest.approx(2 / 3), 0.0)
    for y, threshold in [("a car on the street", 0.7), ("a truck", None), ("", 0.7), (y_o, None)]:
        assert explain_ci(x_o, i, y_o, y, threshold).score == ci_score(x_o, i, y_o, y, threshold)
    assert explain_ci(*ZEBRA, ZEBRA_Y_O, "a zebra", None).found[0] == ("zebra", "zebra", 2)


def test_inflections_match_through_lemmas():
    # plural and -ing forms on either side
    assert raw("cats sit on mats", "a cat", "a cat", "a cat sitting on a mat") == 1.0
    assert raw("A dog is running in the park.", "dogs", "dogs", "two dogs run") == 1.0


def test_all_words_of_y_are_lemmatised_not_only_its_keywords():
    # "running" here is tagged NN and lemmatised "running"; "runs" (VBZ) gives "run".
    assert raw("the dog runs", "dogs", "dogs", "two dogs run") == 1.0


def test_threshold_and_raw_mode():
    assert ci_score(*ZEBRA, ZEBRA_Y_O, "a zebra") == 0.0  # 2/3 < 0.7 default
    assert ci_score(*ZEBRA, ZEBRA_Y_O, "a zebra", threshold=0.6) == pytest.approx(2 / 3)
    assert ci_score(*ZEBRA, ZEBRA_Y_O, "a zebra", threshold=2 / 3) == pytest.approx(2 / 3)
    assert ci_score(*ZEBRA, ZEBRA_Y_O, "a zebra", threshold=None) == pytest.approx(2 / 3)
    assert ci_score(*ZEBRA, ZEBRA_Y_O, "a zebra is standing") == 1.0
    assert ci_score(*ZEBRA, ZEBRA_Y_O, "a zebra is standing", threshold=0.0) == 1.0


def test_reference_without_keywords_scores_one():
    assert raw("anything at all", y_o="it is there") == 1.0
    assert ci_score(*ZEBRA, "it is there", "") == 1.0


def test_empty_y_keeps_nothing():
    assert raw("") == 0.0
    assert raw("   ") == 0.0


@pytest.mark.parametrize("field", ["x_o", "i", "y_o", "y"])
def test_non_string_fields_name_the_field(field):
    args = dict(x_o="a cat", i="make it red", y_o="a red cat", y="a red cat")
    args[field] = None
    with pytest.raises(TypeError, match=field):
        ci_score(**args)


@pytest.mark.parametrize("field", ["x_o", "i", "y_o"])
def test_blank_references_name_the_field(field):
    args = dict(x_o="a cat", i="make it red", y_o="a red cat", y="a red cat")
    args[field] = " "
    with pytest.raises(ValueError, match=field):
        ci_score(**args)


def test_bad_threshold_and_bad_words():
    with pytest.raises(ValueError, match="threshold"):
        ci_score("a", "b", "a cat", "a cat", threshold=1.5)
    with pytest.raises(TypeError, match="text"):
        extract_keywords(3)
    with pytest.raises(ValueError, match="word"):
        synonyms("")


def test_tags_are_those_of_nltk_pos_tag():
    text = "A young woman wearing a red hat, standing near the old castle at night."
    tokens = nltk.word_tokenize(text)
    assert integrity._tag(tokens) == [tag for _, tag in nltk.pos_tag(tokens)]


# ---- properties on generated prompts -------------------------------------------------

WORDS = (
    "a an the of in on at with and by near under red golden old young tiny huge dark misty "
    "horse horses zebra cat cats dog dogs woman women man men girl castle castles tree "
    "trees field fields sky forest lake sea ship robot dragon crown hat sunglasses rainbow "
    "standing stands stood sitting sits running runs painted painting paintings wearing "
    "wears flying flies detailed beautiful better best Greg Rutkowski Mucha Paris "
    "artstation 8k 4k 1,000 3.5 cinematic lighting sharp focus octane render watercolor"
).split()
PUNCT = [", ", ". ", "! ", "? ", " - ", " -- ", "... ", "; ", ": ", " (", ") ", "'s ", "n't "]
ODD = ['"', "'", "“", "”", "’", "(", ")", "Mr. ", "St. ", "can not ", "cannot ", "wanna "]
ODD += ["gonna ", "\n", "  ", "U.S. ", "e.g. ", "#", "$5 ", "it's ", "don't ", "&", "*"]


def random_text(rng: random.Random, n_words: int) -> str:
    out = []
    for _ in range(n_words):
        word = rng.choice(WORDS)
        out.append(word.capitalize() if rng.random() < 0.1 else word)
        r = rng.random()
        out.append(rng.choice(PUNCT) if r < 0.15 else rng.choice(ODD) if r < 0.25 else " ")
    return "".join(out).strip()


def random_pieces(rng: random.Random, text: str) -> list[str]:
    """Cut like decoded LM tokens: 0-8 characters, mid-word, with spaces and punctuation."""
    pieces, k = [], 0
    while k < len(text):
        step = rng.choice([0, 1, 2, 3, 4, 5, 6, 8])
        pieces.append(text[k : k + step])
        k += step
    return pieces


REFERENCES = [
    (ZEBRA[0], ZEBRA[1], ZEBRA_Y_O),
    (
        "a woman wearing a hat in Paris",
        "give her sunglasses",
        "a beautiful woman wearing a red hat and sunglasses in Paris, detailed painting",
    ),
    (
        "castles near a lake",
        "add a rainbow in the sky",
        "old castles near a misty lake, a rainbow in the sky, cinematic lighting, 8k",
    ),
    ("a dog running", "make it a robot", "a robot dog running in the forest by Greg Rutkowski"),
]


def test_y_equal_to_y_o_scores_one():
    rng = random.Random(1)
    for _ in range(40):
        y_o = random_text(rng, rng.randint(1, 12))
        if y_o.strip():
            assert ci_score("a cat", "make it red", y_o, y_o) == 1.0


def test_removing_every_keyword_gives_zero():
    rng = random.Random(2)
    for x_o, i, y_o in REFERENCES:
        keep = set().union(*(synonyms(k) for k in extract_keywords(y_o)))
        for _ in range(10):
            words = random_text(rng, 12).split() + y_o.split()
            rng.shuffle(words)
            y = " ".join(words)
            while True:  # drop every token that some POS would lemmatise into a synonym
                tokens = nltk.word_tokenize(y)
                kept = [t for t in tokens if not {integrity._lemma_as(t, p) for p in "nvar"} & keep]
                if kept == tokens:
                    break
                y = " ".join(kept)
            assert ci_score(x_o, i, y_o, y, threshold=None) == 0.0


# ---- prefix scorer -------------------------------------------------------------------


def test_chunked_tokenizer_equals_word_tokenize_on_every_prefix():
    rng = random.Random(3)
    for _ in range(150):
        text = random_text(rng, rng.randint(3, 25))
        for end in range(1, len(text) + 1):
            assert integrity._word_tokenize(text[:end]) == nltk.word_tokenize(text[:end])


def test_prefix_tagger_equals_a_full_retag():
    rng = random.Random(4)
    tagger = integrity._nltk().tagger
    for _ in range(60):
        text = random_text(rng, rng.randint(3, 25))
        prefix_tagger = integrity._PrefixTagger()
        for end in range(1, len(text) + 1, 2):
            tokens = nltk.word_tokenize(text[:end])
            prefix_tagger.set_tokens(tokens)
            if rng.random() < 0.5:  # sometimes leave tags lazy for a while
                expected = [tag for _, tag in tagger.tag(tokens)]
                assert prefix_tagger.tag_upto(len(tokens) - 1) == expected


@pytest.mark.parametrize("threshold", [None, 0.7])
def test_prefix_scores_equal_ci_score_on_every_prefix(threshold):
    rng = random.Random(5 if threshold is None else 6)
    n_cases = 240 if threshold is None else 60
    checked = 0
    for _ in range(n_cases):
        x_o, i, y_o = rng.choice(REFERENCES)
        y = y_o if rng.random() < 0.3 else ""
        y = f"{random_text(rng, rng.randint(1, 8))} {y} {random_text(rng, rng.randint(0, 6))}"
        pieces = random_pieces(rng, y.strip())
        got = prefix_ci_scores(x_o, i, y_o, pieces, threshold=threshold)
        expected = [
            ci_score(x_o, i, y_o, "".join(pieces[: k + 1]), threshold) for k in range(len(pieces))
        ]
        assert got == expected, (x_o, i, y_o, pieces)
        checked += len(pieces)
    assert checked > 1000


def test_batch_prefix_scores_match_single_rollouts():
    rng = random.Random(7)
    batch = []
    for _ in range(12):
        x_o, i, y_o = rng.choice(REFERENCES)
        batch.append((x_o, i, y_o, random_pieces(rng, random_text(rng, 10) + " " + y_o)))
    got = batch_prefix_ci_scores(batch, threshold=None)
    assert got == [prefix_ci_scores(*row, threshold=None) for row in batch]
    assert [len(s) for s in got] == [len(row[3]) for row in batch]


def test_prefix_scorer_edges():
    scorer = PrefixCIScorer(*ZEBRA, ZEBRA_Y_O, threshold=None)
    assert scorer.scores([]) == []
    two_thirds = pytest.approx(2 / 3)
    pieces = [" ", "a zeb", "ra", " ", "", "in a fie", "ld"]
    assert scorer.scores(pieces) == [0.0, 0.0, *[two_thirds] * 4, 1.0]
    with pytest.raises(TypeError, match="not a str"):
        scorer.scores("a zebra")
    with pytest.raises(TypeError, match=r"pieces\[1\]"):
        scorer.scores(["a", 3])
    with pytest.raises(TypeError, match=r"batch\[0\]"):
        batch_prefix_ci_scores([("a", "b", "c")])
    with pytest.raises(ValueError, match="y_o"):
        PrefixCIScorer("a", "b", "")


def test_nltk_data_is_resolved_lazily_and_once():
    code = (
        "import diffchat.assets as a, diffchat.integrity as ci\n"
        "calls = []\n"
        "real = a.require_nltk_data\n"
        "a.require_nltk_data = lambda *x, **k: calls.append(1) or real(*x, **k)\n"
        "assert ci._nltk.cache_info().currsize == 0\n"
        "ci.extract_keywords('a red cat')\n"
        "ci.ci_score('a cat', 'make it red', 'a red cat', 'a red cat')\n"
        "ci.prefix_ci_scores('a cat', 'make it red', 'a red cat', ['a re', 'd cat'])\n"
        "assert calls == [1], calls\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_library_calls_never_install_and_name_the_setup_command(tmp_path):
    """With no NLTK data anywhere, ci_score raises the one-line error naming `diffchat setup`
    instead of running apt-get or pip."""
    code = (
        "import shutil, subprocess\n"
        "def refuse(*a, **k): raise AssertionError(f'a library call ran {a}')\n"
        "subprocess.run = subprocess.Popen = refuse\n"
        "import diffchat.assets as a, diffchat.integrity as ci\n"
        "a._findable = lambda resource: False\n"
        "try:\n"
        "    ci.ci_score('a cat', 'make it red', 'a red cat', 'a red cat')\n"
        "except a.MissingAssetError as err:\n"
        "    assert 'diffchat setup' in str(err) and '\\n' not in str(err), err\n"
        "else:\n"
        "    raise AssertionError('no error')\n"
    )
    env = {**os.environ, "DIFFCHAT_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
