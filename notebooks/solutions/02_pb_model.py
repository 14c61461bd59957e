"""Solutions to notebook 02's exercises (checked by diffchat.exercises in tests/test_exercises.py)."""

from diffchat.integrity import extract_keywords


def retention(raw, beautified):
    """Exercise 02.1: share of the raw prompt's keywords still among the beautified prompt's."""
    raw_keywords = set(extract_keywords(raw))
    if not raw_keywords:
        return 1.0
    return len(raw_keywords & set(extract_keywords(beautified))) / len(raw_keywords)


# Exercise 02.2 (no code): with a PB model that drops content, both sides retain few keywords;
# T_A / T_B still picks the better side, but the rule teacher cannot apply or invert an edit whose
# subject is gone, so the funnel's "teacher answered" step drops those rows (its warning says so).
