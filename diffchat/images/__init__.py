"""The image half: text-to-image models (``tis``), the mini-world renderer (``render``) and its
planted taste (``taste``).

``from diffchat.images import ...`` keeps the names of the former ``diffchat.images`` module.
"""

from diffchat.images.tis import (
    DEFAULT_SCHEDULER,
    TIS_MODELS,
    TISModel,
    TISSpec,
    create_images,
    get_tis_spec,
    image_grid,
    load_tis,
)

__all__ = [
    "DEFAULT_SCHEDULER",
    "TIS_MODELS",
    "TISModel",
    "TISSpec",
    "create_images",
    "get_tis_spec",
    "image_grid",
    "load_tis",
]
