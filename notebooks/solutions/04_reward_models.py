"""Solutions to notebook 04's exercises (checked by diffchat.exercises in tests/test_exercises.py)."""

import torch.nn.functional as F


def dclip(i0, i1, t0, t1):
    """Exercise 04.1: D-CLIP-S, cos(I1 - I0, T1 - T0) of L2-normalised features, per row."""
    di = F.normalize(i1, dim=-1) - F.normalize(i0, dim=-1)
    dt = F.normalize(t1, dim=-1) - F.normalize(t0, dim=-1)
    return F.cosine_similarity(di, dt, dim=-1)


# Exercise 04.2 (no code): with the threshold at 0.9 instead of 0.7, "study of fair hair beauty,
# full hd" (5 of 6 keywords, 0.833) and the landscape that loses "painting" (0.667) both score 0;
# a stricter threshold makes the CI reward sparser, which is what VCI's dense prefix signal offsets.
