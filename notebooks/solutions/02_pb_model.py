"""Solutions to notebook 02's exercises (checked by diffchat.exercises in tests/test_exercises.py)."""

from diffchat.integrity import extract_keywords, synonyms


def retention(raw, beautified):
    """Exercise 02.1: share of the raw prompt's keywords still among the beautified prompt's."""
    raw_keywords = set(extract_keywords(raw))
    if not raw_keywords:
        return 1.0
    return len(raw_keywords & set(extract_keywords(beautified))) / len(raw_keywords)


def ci_from_lemmas(keywords, highlighted, y_lemmas):
    """Exercise 02.2: Listing 1's raw CI score (lines 33-46) from keywords(y_o), the highlighted
    keywords and the lemmas of y."""
    if not keywords:
        return 1.0
    points = 0
    for q in keywords:
        found = next((s for s in synonyms(q) if s in y_lemmas), None)
        points += 0 if found is None else 2 if found in highlighted else 1
    return min(points / len(keywords), 1.0)


# Exercise 02.3 (no code): with a PB model that drops content, both sides retain few keywords;
# T_A / T_B still picks the better side, but the rule teacher cannot apply or invert an edit whose
# subject is gone, so the funnel's "teacher answered" step drops those rows (its warning says so).
