"""Solutions to notebook 03's exercises (checked by diffchat.exercises in tests/test_exercises.py)."""


def append_baseline(x, i):
    """Exercise 03.1: Fig. 6's human prompt writer: the instruction's words after a comma."""
    return f"{x.rstrip(', ')}, {i}"


# Exercise 03.2 (no code): the append baseline scores high edit accuracy on "add" edits (the new
# keyword is there) and 0 on "remove" and "replace" edits (the old keyword stays), and never an
# exact match: the per-kind table shows where SFT's gain comes from.
