"""Content integrity (CI) score: Listing 1 of the DiffChat paper (appendix A.4).

The CI score is used three times - as a reward, inside the value of every generated
prefix (VCI, section 3.3) and as an evaluation metric - so this module has one exact
reference implementation, :func:`ci_score`, and a prefix scorer,
:class:`PrefixCIScorer`, that returns the same floats for every prefix of a rollout at a
fraction of the cost.

Choices that Listing 1 leaves open (one place, used everywhere):

* Words: ``nltk.word_tokenize`` (punkt + NLTK's Treebank tokenizer; computed by
  ``_word_tokenize``, which gives the same tokens and caches their parts), tagged with NLTK's
  PTB averaged-perceptron tagger on the original casing (capitals are evidence for NNP),
  then lemmatised lower-cased with WordNetLemmatizer, the PTB tag mapped to a WordNet POS
  (J -> a, V -> v, N -> n, R -> r, anything else -> n, the lemmatizer's own default).
* Keywords (line 10): tokens tagged as nouns (NN, NNS, NNP, NNPS), adjectives (JJ, JJR,
  JJS) or verbs (VB, VBD, VBG, VBN, VBP, VBZ) that contain a letter or digit (punctuation
  never counts), except verbs whose lemma is an auxiliary ("be", "have", "do"): "a cat is
  sitting" keeps "cat" and "sit", not "be". Lemmas are de-duplicated in order of first
  occurrence (Listing 1's ``set`` has no order; ours is deterministic).
* y's words (line 25): ALL tokens of y, lemmatised with their own tag, as Listing 1 does.
* Synonyms (line 36): the keyword itself, then the lemma names of all its WordNet synsets
  (every POS), lower-cased, de-duplicated. Multiword names ("hot_dog") are dropped: a
  tokenised y never holds one, so they could never be found.
* Weights (lines 37-44): Listing 1 gives weight 2 when the *synonym found* is highlighted
  (``if s in highlighted``). We keep that literally: a highlighted keyword found as itself
  counts 2; found only through a synonym it counts 2 only if that synonym is itself a
  highlighted keyword, else 1.
* No keywords in y_o: the score is 1.0 (there is nothing to keep), thresholded or not.
* Inputs: x_o, i, y_o must be non-blank strings (they are references; a blank one is a
  data bug). y may be empty or blank: it then keeps nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from functools import lru_cache
from typing import Any, NamedTuple

NOUN_TAGS = frozenset({"NN", "NNS", "NNP", "NNPS"})
ADJECTIVE_TAGS = frozenset({"JJ", "JJR", "JJS"})
VERB_TAGS = frozenset({"VB", "VBD", "VBG", "VBN", "VBP", "VBZ"})
CANDIDATE_TAGS = NOUN_TAGS | ADJECTIVE_TAGS | VERB_TAGS
AUXILIARY_LEMMAS = frozenset({"be", "have", "do"})
DEFAULT_THRESHOLD = 0.7

_WORDNET_POS = {"J": "a", "V": "v", "N": "n", "R": "r"}


# ---- NLTK, loaded once ---------------------------------------------------------------


class _Nltk(NamedTuple):
    tagger: Any  # nltk.tag.perceptron.PerceptronTagger
    lemmatizer: Any  # nltk.stem.WordNetLemmatizer
    wordnet: Any  # nltk.corpus.wordnet
    sent_tokenize: Callable[[str], list[str]]


@lru_cache(maxsize=1)
def _nltk() -> _Nltk:
    """Resolve NLTK data (once, lazily) and build the tagger and lemmatizer we reuse.

    ``nltk.pos_tag`` builds a new PerceptronTagger (a JSON load) on every call; one
    instance of the same model gives the same tags.
    """
    from nltk.corpus import wordnet
    from nltk.stem import WordNetLemmatizer
    from nltk.tag.perceptron import PerceptronTagger
    from nltk.tokenize import sent_tokenize

    from diffchat.assets import require_nltk_data

    require_nltk_data()
    wordnet.ensure_loaded()
    return _Nltk(PerceptronTagger(), WordNetLemmatizer(), wordnet, sent_tokenize)


def _tag(tokens: list[str]) -> list[str]:
    return [tag for _, tag in _nltk().tagger.tag(tokens)]


def _wordnet_pos(tag: str) -> str:
    return _WORDNET_POS.get(tag[:1], "n")


@lru_cache(maxsize=1 << 18)
def _lemma_as(token: str, pos: str) -> str:
    """Lower-cased WordNet lemma of `token` as WordNet `pos` (morphy is slow: cache)."""
    return _nltk().lemmatizer.lemmatize(token.lower(), pos)


def _lemma(token: str, tag: str) -> str:
    """Lemma of `token` read with its PTB `tag`."""
    return _lemma_as(token, _wordnet_pos(tag))


def _is_keyword(token: str, tag: str, lemma: str) -> bool:
    if tag not in CANDIDATE_TAGS or not any(ch.isalnum() for ch in token):
        return False
    return not (tag in VERB_TAGS and lemma in AUXILIARY_LEMMAS)


def _check_text(value: object, name: str, allow_blank: bool) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if not allow_blank and not value.strip():
        raise ValueError(f"{name} is empty: a reference text is needed to score against")
    return value


# ---- Listing 1 ------------------------------------------------------------------------


def keywords_with_pos(text: str) -> list[tuple[str, str]]:
    """Listing 1's keywords of `text` (line 10) with their WordNet POS ("n", "a" or "v"), in
    order of first occurrence; a lemma takes the POS of its first occurrence. ADM pi-
    replaces a keyword only by one of the same POS (section 3.3)."""
    _check_text(text, "text", allow_blank=True)
    tokens = _word_tokenize(text)
    keywords: dict[str, str] = {}
    for token, tag in zip(tokens, _tag(tokens)):
        lemma = _lemma(token, tag)
        if _is_keyword(token, tag, lemma):
            keywords.setdefault(lemma, _wordnet_pos(tag))
    return list(keywords.items())


def extract_keywords(text: str) -> list[str]:
    """Keyword lemmas of `text` in order of first occurrence (Listing 1, line 10)."""
    return [keyword for keyword, _ in keywords_with_pos(text)]


@lru_cache(maxsize=1 << 16)
def _synonyms(word: str) -> tuple[str, ...]:
    names = {word: None}
    for synset in _nltk().wordnet.synsets(word):
        for name in synset.lemma_names():
            if "_" not in name:
                names.setdefault(name.lower())
    return tuple(names)


def synonyms(word: str) -> list[str]:
    """Synonym list of Listing 1 line 36: `word` (lower-cased) first, then WordNet names."""
    _check_text(word, "word", allow_blank=False)
    return list(_synonyms(word.strip().lower()))


class _Reference:
    """What the score of any y needs from (x_o, i, y_o): computed once per triple."""

    def __init__(self, x_o: str, i: str, y_o: str) -> None:
        _check_text(x_o, "x_o", allow_blank=False)
        _check_text(i, "i", allow_blank=False)
        _check_text(y_o, "y_o", allow_blank=False)
        x_keywords = set(extract_keywords(x_o))
        i_keywords = set(extract_keywords(i))
        self.keywords = extract_keywords(y_o)
        self.highlighted = frozenset(
            q for q in self.keywords if q not in x_keywords and q in i_keywords
        )
        self.synonyms = [_synonyms(q) for q in self.keywords]
        # Only these lemmas of y can change the score.
        self.relevant = frozenset(s for syns in self.synonyms for s in syns)

    def found(self, y_words: AbstractSet[str]) -> list[tuple[str | None, int]]:
        """Lines 35-44, per keyword: the first synonym found among y's lemmas (None if none)
        and the points it adds (2 when that synonym is highlighted, 1, or 0)."""
        out: list[tuple[str | None, int]] = []
        for syns in self.synonyms:
            hit = next((s for s in syns if s in y_words), None)
            out.append((hit, 0 if hit is None else 2 if hit in self.highlighted else 1))
        return out

    def score(self, y_words: AbstractSet[str], threshold: float | None) -> float:
        """Lines 33-48 of Listing 1, given the set of lemmas of y."""
        if not self.keywords:
            return 1.0
        cnt = sum(points for _, points in self.found(y_words))
        score = min(cnt / len(self.keywords), 1.0)
        if threshold is None:
            return score
        return score if score >= threshold else 0.0


def _check_threshold(threshold: float | None) -> float | None:
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1] or None, got {threshold!r}")
    return threshold


def ci_score(
    x_o: str, i: str, y_o: str, y: str, threshold: float | None = DEFAULT_THRESHOLD
) -> float:
    """CI score of y given raw prompt x_o, instruction i, reference target y_o (Listing 1).

    Returns min(cnt / |keywords(y_o)|, 1), or 0 below `threshold`; `threshold=None` gives
    the raw score (what evaluation reports, x100).
    """
    _check_threshold(threshold)
    _check_text(y, "y", allow_blank=True)
    return _reference(x_o, i, y_o).score(_lemmas(y), threshold)


@lru_cache(maxsize=1 << 14)
def _reference(x_o: str, i: str, y_o: str) -> _Reference:
    """The reference side of (x_o, i, y_o), built once: PPO scores every rollout of a row
    against the same triple, and building it (three tagged texts, synonym sets) costs
    several times scoring y."""
    return _Reference(x_o, i, y_o)


class CITrace(NamedTuple):
    """Listing 1's intermediate values for one y (see ``explain_ci``)."""

    keywords: list[str]  # keywords(y_o), line 10
    highlighted: list[str]  # in keywords(i), not in keywords(x_o): lines 14-20
    y_lemmas: list[str]  # lemmas of all words of y, lines 23-25
    found: list[tuple[str, str | None, int]]  # (keyword, synonym found in y or None, points)
    count: int  # cnt, lines 33-44
    raw: float  # min(cnt / |keywords|, 1), line 46
    score: float  # raw, or 0 below the threshold (lines 47-48); equals ci_score(...)


def explain_ci(
    x_o: str, i: str, y_o: str, y: str, threshold: float | None = DEFAULT_THRESHOLD
) -> CITrace:
    """Listing 1 step by step for one y: the same computation as ``ci_score`` (whose result
    is ``.score``), with every intermediate value kept for reading."""
    _check_threshold(threshold)
    _check_text(y, "y", allow_blank=True)
    reference = _reference(x_o, i, y_o)
    y_words = _lemmas(y)
    found = [(q, hit, points) for q, (hit, points) in zip(reference.keywords, reference.found(y_words))]
    count = sum(points for _, _, points in found)
    raw = min(count / len(reference.keywords), 1.0) if reference.keywords else 1.0
    return CITrace(list(reference.keywords), [q for q in reference.keywords if q in reference.highlighted],
                   sorted(y_words), found, count, raw, reference.score(y_words, threshold))


def _lemmas(y: str) -> set[str]:
    """The lemmas of all words of y (Listing 1, lines 23-25)."""
    tokens = _word_tokenize(y)
    return {_lemma(token, tag) for token, tag in zip(tokens, _tag(tokens))}


# ---- prefix scorer for VCI -----------------------------------------------------------

# word_tokenize = punkt sentences (cheap) + NLTKWordTokenizer on each (the cost). Cut a
# sentence after a run of whitespace that has an ASCII letter/digit on both sides: none of
# NLTKWordTokenizer's rules can match across it (they act on quotes, punctuation and
# clitics next to the matched text, on "^"/"$" - a chunk ends in whitespace after a
# letter/digit and starts with one, so neither end rule fires at a cut - or inside a word),
# and it only inserts spaces, so the tokens of the sentence are the tokens of its chunks.
# Chunks repeat from prefix to prefix: cache them. tests/test_integrity.py checks it.
_SAFE_CUT = re.compile(r"(?<=[A-Za-z0-9])[ \t\n\r]+(?=[A-Za-z0-9])")


@lru_cache(maxsize=1 << 16)
def _treebank_chunk(chunk: str) -> tuple[str, ...]:
    from nltk.tokenize import _treebank_word_tokenizer

    return tuple(_treebank_word_tokenizer.tokenize(chunk))


def _word_tokenize(text: str) -> list[str]:
    """nltk.word_tokenize(text), re-tokenising only the chunks not seen before."""
    tokens: list[str] = []
    for sentence in _nltk().sent_tokenize(text):
        start = 0
        for cut in _SAFE_CUT.finditer(sentence):
            tokens.extend(_treebank_chunk(sentence[start : cut.end()]))
            start = cut.end()
        tokens.extend(_treebank_chunk(sentence[start:]))
    return tokens


class _PrefixTagger:
    """PerceptronTagger.tag for a token list that changes at its end, tagging lazily.

    The tag of token j reads tokens j-2..j+2 and the tags of j-1 and j-2. So when the
    tokens change from position m on, tags before m-2 stay; the others are recomputed,
    and only as far as someone asks (`tag_upto`).
    """

    def __init__(self) -> None:
        self._tagger = _nltk().tagger
        self.tokens: list[str] = []
        self.tags: list[str] = []  # tags of tokens[: len(tags)]
        self._context = [*self._tagger.START, *self._tagger.END]  # START + normalised + END

    def set_tokens(self, tokens: list[str]) -> int:
        """Move to `tokens`; return how many leading tokens are unchanged."""
        same = 0
        for old, new in zip(self.tokens, tokens):
            if old != new:
                break
            same += 1
        tagger, context = self._tagger, self._context
        del self.tags[max(0, same - 2) :], context[len(tagger.START) + same :]
        context.extend(tagger.normalize(w) for w in tokens[same:])
        context.extend(tagger.END)
        self.tokens = tokens
        return same

    def tag_upto(self, last: int) -> list[str]:
        """Tags of tokens[: last + 1] (and maybe more), as PerceptronTagger.tag gives them."""
        tagger, tags, tokens = self._tagger, self.tags, self.tokens
        start = tagger.START
        prev2, prev = [start[1], start[0], *tags][-2:]
        for j in range(len(tags), last + 1):
            word = tokens[j]
            tag = tagger.tagdict.get(word)
            if not tag:
                features = tagger._get_features(j, word, self._context, prev, prev2)
                tag = tagger.model.predict(features)[0]
            tags.append(tag)
            prev2, prev = prev, tag
        return tags


_BY_TAG = object()  # a token whose score-relevant lemma depends on its tag


class PrefixCIScorer:
    """CI score of every prefix of generated texts for one (x_o, i, y_o).

    Equal to ``ci_score(x_o, i, y_o, "".join(pieces[:k]), threshold)`` for every k >= 1
    (a word cut mid-way counts as whatever ci_score makes of it), but cheap:
    the reference side (keywords, highlights, synonym sets) is built once; tokenising
    reuses the chunks of earlier prefixes; a token is tagged only when its tag can change
    the score (its lemma as some POS is a synonym of a keyword and differs from its lemma
    as another POS, like "standing": "stand" / "standing"), and only tags near the first
    changed token are recomputed; a prefix whose tokens did not change, or whose
    score-relevant lemmas did not change, is not scored again.
    """

    def __init__(
        self, x_o: str, i: str, y_o: str, threshold: float | None = DEFAULT_THRESHOLD
    ) -> None:
        self.threshold = _check_threshold(threshold)
        self.reference = _reference(x_o, i, y_o)
        self._found: dict[str, object] = {}  # token -> relevant lemma, None or _BY_TAG
        self._by_lemmas: dict[frozenset[str], float] = {}  # relevant lemmas of y -> score

    def _found_in(self, token: str) -> object:
        """The score-relevant lemma `token` gives whatever its tag, None, or _BY_TAG."""
        found = self._found.get(token, self)
        if found is self:
            relevant = self.reference.relevant
            outcomes = {
                lemma if lemma in relevant else None
                for lemma in (_lemma_as(token, pos) for pos in "nvar")
            }
            found = self._found[token] = outcomes.pop() if len(outcomes) == 1 else _BY_TAG
        return found

    def scores(self, pieces: Sequence[str]) -> list[float]:
        """Score after each piece: entry k is the score of ``"".join(pieces[: k + 1])``."""
        if isinstance(pieces, str):
            raise TypeError("pieces must be a sequence of str (decoded tokens), not a str")
        relevant, by_lemmas = self.reference.relevant, self._by_lemmas
        tagger = _PrefixTagger()
        found: list[object] = []  # _found_in of each token
        text = ""
        out: list[float] = []
        for index, piece in enumerate(pieces):
            if not isinstance(piece, str):
                raise TypeError(f"pieces[{index}] must be a str, got {type(piece).__name__}")
            text += piece
            tokens = _word_tokenize(text)
            if out and tokens == tagger.tokens:
                out.append(out[-1])
                continue
            same = tagger.set_tokens(tokens)
            del found[same:]
            found.extend(self._found_in(token) for token in tokens[same:])
            by_tag = [j for j, f in enumerate(found) if f is _BY_TAG]
            present = {f for f in found if f is not None and f is not _BY_TAG}
            if by_tag:
                tags = tagger.tag_upto(by_tag[-1])
                present.update(_lemma(tokens[j], tags[j]) for j in by_tag)
            key = frozenset(present & relevant)
            score = by_lemmas.get(key)
            if score is None:
                score = by_lemmas[key] = self.reference.score(key, self.threshold)
            out.append(score)
        return out


def prefix_ci_scores(
    x_o: str,
    i: str,
    y_o: str,
    pieces: Sequence[str],
    threshold: float | None = DEFAULT_THRESHOLD,
) -> list[float]:
    """CI score after each piece of one generated text (see PrefixCIScorer)."""
    return PrefixCIScorer(x_o, i, y_o, threshold).scores(pieces)


def batch_prefix_ci_scores(
    batch: Sequence[tuple[str, str, str, Sequence[str]]],
    threshold: float | None = DEFAULT_THRESHOLD,
) -> list[list[float]]:
    """Prefix scores for a batch of rollouts (x_o, i, y_o, pieces); shared references reuse work."""
    scorers: dict[tuple[str, str, str], PrefixCIScorer] = {}
    results = []
    for row, item in enumerate(batch):
        if not isinstance(item, (tuple, list)) or len(item) != 4:
            raise TypeError(f"batch[{row}] must be a tuple (x_o, i, y_o, pieces)")
        x_o, i, y_o, pieces = item
        key = (x_o, i, y_o)
        scorer = scorers.get(key)
        if scorer is None:
            scorer = scorers[key] = PrefixCIScorer(x_o, i, y_o, threshold)
        results.append(scorer.scores(pieces))
    return results


def word_lemmas(word: str) -> frozenset[str]:
    """Every lemma `word` can have (as a noun, verb, adjective or adverb), and the word itself.

    A word in a generated text "holds" a keyword when the keyword is among these: ADM pi-
    uses it to find and edit every occurrence of a keyword whatever its tag.
    """
    _check_text(word, "word", allow_blank=False)
    lower = word.strip().lower()
    return frozenset({lower, *(_lemma_as(lower, pos) for pos in "nvar")})
