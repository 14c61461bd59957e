"""The course's stages, in pipeline order, registered with the stage runner.

Each stage imports its module lazily so that `diffchat --help` stays fast. ``TOOLS``
holds the CLI commands that are not stages (e.g. ``rewrite``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from diffchat.runner import STAGES, register

TOOLS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable, str]] = {}

__all__ = ["STAGES", "TOOLS", "register"]
