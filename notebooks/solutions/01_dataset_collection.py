"""Solutions to notebook 01's exercises (checked by diffchat.exercises in tests/test_exercises.py)."""


def unseen_subjects(train_rows, test_rows):
    """Exercise 01.1: subjects of the test rows that no training row has."""
    return {r["subject"] for r in test_rows} - {r["subject"] for r in train_rows}


# Exercise 01.2 (no code): test_unseen is built only from held-out subjects, so a model that
# memorised its training subjects meets words it never saw in a prompt, and must copy them from x
# into y. The tiny tokenizer (4000 pieces, trained on the course's words and WordNet) cuts most of
# them into two or three pieces learned from other words; the model has to copy that sequence of
# pieces, which it never saw together. Trained on the course's words alone, the tokenizer would
# have had fewer English words to learn its pieces from.
