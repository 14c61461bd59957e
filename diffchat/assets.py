"""Offline resolution of the course's external assets.

Where things are kept that are not in the source tree and not per-run artifacts.
"""

from __future__ import annotations

import os
from pathlib import Path


def assets_home() -> Path:
    """Folder for assets built once per machine: $DIFFCHAT_HOME, else ~/.cache/diffchat."""
    path = Path(os.environ.get("DIFFCHAT_HOME") or Path.home() / ".cache" / "diffchat")
    path.mkdir(parents=True, exist_ok=True)
    return path
