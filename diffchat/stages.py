"""The course's stages, in pipeline order, registered with the stage runner.

Each stage imports its module lazily so that `diffchat --help` stays fast.
"""

from __future__ import annotations
