"""Solutions to notebook 01's exercises (checked by diffchat.exercises in tests/test_exercises.py)."""


def unseen_subjects(train_rows, test_rows):
    """Exercise 01.1: subjects of the test rows that no training row has."""
    return {r["subject"] for r in test_rows} - {r["subject"] for r in train_rows}


# Exercise 01.2 (no code): test_unseen is built only from held-out subjects, so a model that
# memorised its training subjects meets words it never saw in a prompt, and must copy them from x
# into y. A tokenizer trained only on the course's words would split them into rare fragments;
# the course's tokenizer is trained on WordNet as well, which keeps such words whole or nearly so.
