"""Solutions to notebook 03's exercises (checked by diffchat.exercises in tests/test_exercises.py)."""


def append_baseline(x, i):
    """Exercise 03.1: Fig. 6's human prompt writer: the instruction's words after a comma."""
    return f"{x.rstrip(', ')}, {i}"


def label_mask(prompt_ids, completion_ids, eos_id):
    """Exercise 03.1: the labels of prompt + completion + [EOS]: no loss (-100) on the prompt."""
    return [-100] * len(prompt_ids) + list(completion_ids) + [eos_id]


def typical_set(probs, p):
    """Exercise 03.3: the tokens locally typical sampling keeps: closest to the entropy first,
    until they hold mass p (the token that crosses p included)."""
    import torch

    logp = probs.log()
    entropy = -(probs * logp).sum()
    kept, mass = set(), 0.0
    for token in torch.argsort((-logp - entropy).abs()).tolist():
        kept.add(token)
        mass += probs[token].item()
        if mass >= p:
            break
    return kept


# Exercise 03.2 (no code): the append baseline scores high edit accuracy on "add" edits (the new
# keyword is there) and 0 on "remove" and "replace" edits (the old keyword stays), and never an
# exact match: the per-kind table shows where SFT's gain comes from.
