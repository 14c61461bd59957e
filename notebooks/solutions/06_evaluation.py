"""Solutions to notebook 06's exercises (checked by diffchat.exercises in tests/test_exercises.py)."""

from collections import defaultdict


def avg_rank(table):
    """Exercise 06.1: rank each metric column (1 = highest, ties share the best rank, NaN gets no
    rank), then average each method's ranks over the metrics it has."""
    ranks = table.rank(axis=0, ascending=False, method="min", na_option="keep")
    return ranks.mean(axis=1, skipna=True)


def rates(votes):
    """Exercise 06.2: shares of votes DiffChat won, tied and lost, per opponent."""
    counts = defaultdict(lambda: [0, 0, 0])
    for v in votes:
        outcome = 1 if v["winner"] == "tie" else (0 if v["winner"] == v["ours"] else 2)
        counts[v["opponent"]][outcome] += 1
    return {o: tuple(c / sum(cs) for c in cs) for o, cs in counts.items()}


# Exercise 06.3 (no code): D-CLIP-S compares the change of the image with the change of the text.
# InstructPix2Pix edits the raw image itself and keeps everything else in place, so the image
# changes only where the instruction points; a prompt modifier redraws the whole picture from a new
# prompt (the same seed keeps only the starting noise), so unrelated parts change too and the
# direction of the change is noisier. That is why InstructPix2Pix tops D-CLIP-S in Table 1 while
# losing on every other score.
