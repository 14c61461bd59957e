"""NLTK data resolution: what the CI score needs works, and builds offline from packages."""

from __future__ import annotations

import time
from pathlib import Path

import nltk
import pytest

from diffchat import assets


@pytest.fixture(scope="module")
def nltk_ready() -> Path:
    return assets.ensure_nltk_data()


def test_tagger_tokenizers_and_wordnet_work(nltk_ready):
    from nltk.corpus import wordnet
    from nltk.stem import WordNetLemmatizer

    tags = dict(nltk.pos_tag(nltk.word_tokenize("A cat sits on the red mats")))
    assert (tags["cat"], tags["sits"], tags["red"], tags["mats"]) == ("NN", "VBZ", "JJ", "NNS")
    assert WordNetLemmatizer().lemmatize("mats", "n") == "mat"
    assert WordNetLemmatizer().lemmatize("running", "v") == "run"
    assert wordnet.synsets("dog")
    assert wordnet.synset("dog.n.01").lexname() == "noun.animal"
    sentences = nltk.sent_tokenize("Mr. Smith paints a horse. It turns into a zebra!")
    assert sentences == ["Mr. Smith paints a horse.", "It turns into a zebra!"]
    assert all(assets.nltk_data_status().values())


def _lex_categories(wordnet_dir: Path) -> set[tuple[int, str]]:
    """(lexicographer file number, synset type) pairs used by the WordNet data files."""
    pairs = set()
    for name in ("data.noun", "data.verb", "data.adj", "data.adv"):
        with open(wordnet_dir / name, encoding="utf-8") as fh:
            for line in fh:
                if not line.startswith("  "):  # licence header lines start with spaces
                    _, lex_filenum, ss_type = line.split(" ", 3)[:3]
                    pairs.add((int(lex_filenum), ss_type))
    return pairs


@pytest.mark.filterwarnings("ignore:The multilingual functions")  # no OMW: not needed
def test_offline_build_into_an_empty_home(tmp_path, monkeypatch):
    """No download host, nothing installed: build everything into a fresh DIFFCHAT_HOME."""
    from nltk.corpus.reader.wordnet import WordNetCorpusReader
    from nltk.tag.perceptron import PerceptronTagger
    from nltk.tokenize.punkt import PunktTokenizer

    monkeypatch.setenv("DIFFCHAT_HOME", str(tmp_path))
    monkeypatch.delenv("NLTK_DATA", raising=False)
    monkeypatch.setattr(nltk.data, "path", [])
    monkeypatch.setattr(assets, "_online", lambda: False)
    assert not any(assets.nltk_data_status().values())

    target = assets.ensure_nltk_data()
    assert target == tmp_path / "nltk_data"
    assert nltk.data.path == [str(target)]
    assert all(assets.nltk_data_status().values())

    tagger = PerceptronTagger()  # loads from the only data dir: the new one
    assert [t for _, t in tagger.tag("A cat sits on the red mats".split())] == [
        "DT", "NN", "VBZ", "IN", "DT", "JJ", "NNS",
    ]  # fmt: skip
    wordnet_dir = target / "corpora" / "wordnet"
    wn = WordNetCorpusReader(nltk.data.find("corpora/wordnet"), None)
    assert "automobile" in wn.synset("car.n.01").lemma_names()
    assert wn.synset("run.v.01").lexname() == "verb.motion"
    assert not any(p.is_symlink() for p in wordnet_dir.iterdir())
    # every synset's lexicographer file has the category of the synset's type
    lexnames = (wordnet_dir / "lexnames").read_text().splitlines()
    assert len(lexnames) == 45
    category = {int(n): int(c) for n, _, c in (line.split("\t") for line in lexnames)}
    ss_category = {"n": 1, "v": 2, "a": 3, "s": 3, "r": 4}
    for lex_filenum, ss_type in _lex_categories(wordnet_dir):
        assert category[lex_filenum] == ss_category[ss_type], (lex_filenum, ss_type)
    punkt = PunktTokenizer("english")
    assert punkt.tokenize("Dr. Smith arrived. He sat.") == ["Dr. Smith arrived.", "He sat."]


def test_missing_piece_without_offline_build_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFCHAT_HOME", str(tmp_path))
    monkeypatch.delenv("NLTK_DATA", raising=False)
    monkeypatch.setattr(nltk.data, "path", [])
    monkeypatch.setattr(assets, "_online", lambda: False)
    with pytest.raises(assets.MissingAssetError, match="python -m diffchat.assets") as err:
        assets.ensure_nltk_data(offline_build=False)
    assert "wordnet" in str(err.value) and "tagger" in str(err.value)


def test_wordnet_without_debian_files_names_the_apt_command(tmp_path, monkeypatch):
    monkeypatch.setattr(assets, "WORDNET_DEB_DIR", tmp_path / "absent")
    monkeypatch.setattr(assets.os, "geteuid", lambda: 1000)  # not root: do not install
    with pytest.raises(assets.MissingAssetError, match="apt-get install -y wordnet-base"):
        assets.build_nltk_data(tmp_path / "nltk_data", pieces=("wordnet",))


def test_connectivity_probe_fails_fast(monkeypatch):
    # a TCP connect may succeed anywhere behind a proxy; the HTTPS request must not
    monkeypatch.setattr(assets, "_DOWNLOAD_INDEX", "https://10.255.255.1/index.xml")
    started = time.monotonic()
    assert assets._online(timeout=0.5) is False
    assert time.monotonic() - started < 2.0
