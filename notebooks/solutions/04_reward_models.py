"""Solutions to notebook 04's exercises (checked by diffchat.exercises in tests/test_exercises.py)."""

import torch.nn.functional as F


def dclip(i0, i1, t0, t1):
    """Exercise 04.1: D-CLIP-S, cos(I1 - I0, T1 - T0) of L2-normalised features, per row."""
    di = F.normalize(i1, dim=-1) - F.normalize(i0, dim=-1)
    dt = F.normalize(t1, dim=-1) - F.normalize(t0, dim=-1)
    return F.cosine_similarity(di, dt, dim=-1)


# Exercise 04.2 (predict, then check): colour and composition weigh most in the planted formula,
# and night lowers the exposure term (and the colour), so the order is:
taste_ranking = ["a cat in a park, vivid colors, centered", "a cat in a park, highly detailed, sharp focus",
                 "a cat in a park at night"]
