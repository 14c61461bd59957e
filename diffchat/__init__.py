"""DiffChat: chat with text-to-image models by rewriting prompts (Wang et al., 2024)."""

from diffchat.profiles import DEFAULT_PROFILE, PROFILES, TEMPLATE_T, Profile, get_profile

__version__ = "0.1.0"
__all__ = ["DEFAULT_PROFILE", "PROFILES", "TEMPLATE_T", "Profile", "get_profile", "__version__"]
