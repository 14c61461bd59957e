"""average_ranks reproduces the paper's Avg. Rank column (Table 1, Table 4 (a)-(e)).

Numbers copied from the paper (shared/paper/diffchat-paper.txt beside the repository). "-" (InstructPix2Pix has no
CI score) is NaN. Every paper Avg. Rank comes out of the paper's own numbers under the
stated rule (ties share the best rank): e.g. Table 4 (b) PickScore 19.602 vs 19.602 and
(d) PickScore 19.590 vs 19.590 are ties ranked 2 and 2; the CI scores 87.496 / 85.089 /
87.314 repeat in every table.
"""

import math

import pandas as pd
import pytest

from diffchat.evaluation import average_ranks

NAN = math.nan
METHODS = ["ChatGPT", "InstructPix2Pix", "DiffChat (SFT only)", "DiffChat (full imp.)"]
METRICS = ["PickScore", "Aes. Score", "HPS", "CLIP-S", "D-CLIP-S", "CI Score"]

# name -> (rows in METHODS order, columns in METRICS order; paper's Avg. Rank per method)
PAPER_TABLES: dict[str, tuple[list[list[float]], list[float]]] = {
    "Table 1 (average over SD models)": (
        [
            [19.569, 6.394, 20.822, 29.354, 15.802, 87.496],
            [19.346, 5.726, 19.036, 22.670, 17.327, NAN],
            [19.571, 6.392, 20.836, 29.350, 16.596, 85.089],
            [19.584, 6.416, 20.851, 29.397, 16.787, 87.314],
        ],
        [2.500, 3.400, 2.667, 1.333],
    ),
    "Table 4 (a) Stable Diffusion 1.5": (
        [
            [19.338, 6.145, 20.123, 28.837, 14.594, 87.496],
            [19.235, 5.917, 19.430, 24.580, 20.818, NAN],
            [19.339, 6.149, 20.129, 28.769, 15.532, 85.089],
            [19.359, 6.169, 20.163, 28.822, 15.747, 87.314],
        ],
        [2.500, 3.400, 2.500, 1.500],
    ),
    "Table 4 (b) Dreamlike": (
        [
            [19.602, 6.501, 21.010, 29.692, 16.863, 87.496],
            [19.349, 5.977, 19.672, 25.175, 19.309, NAN],
            [19.602, 6.487, 21.042, 29.686, 17.592, 85.089],
            [19.612, 6.511, 21.032, 29.723, 17.687, 87.314],
        ],
        [2.333, 3.400, 2.500, 1.500],
    ),
    "Table 4 (c) Realistic": (
        [
            [19.494, 6.254, 20.586, 28.863, 15.258, 87.496],
            [19.313, 6.052, 19.784, 25.072, 20.790, NAN],
            [19.500, 6.249, 20.589, 28.857, 16.018, 85.089],
            [19.513, 6.283, 20.622, 28.945, 16.242, 87.314],
        ],
        [2.500, 3.400, 2.667, 1.333],
    ),
    "Table 4 (d) Deliberate": (
        [
            [19.590, 6.312, 20.755, 28.982, 14.994, 87.496],
            [19.363, 6.082, 19.913, 25.209, 20.602, NAN],
            [19.590, 6.311, 20.760, 29.051, 15.842, 85.089],
            [19.600, 6.335, 20.780, 29.101, 16.214, 87.314],
        ],
        [2.500, 3.400, 2.500, 1.333],
    ),
    "Table 4 (e) Stable Diffusion XL 1.0": (
        [
            [19.820, 6.757, 21.636, 30.395, 17.300, 87.496],
            [19.468, 4.603, 16.381, 13.313, 5.117, NAN],
            [19.823, 6.762, 21.659, 30.383, 17.992, 85.089],
            [19.836, 6.781, 21.654, 30.392, 18.040, 87.314],
        ],
        [2.333, 4.000, 2.167, 1.500],
    ),
}


@pytest.mark.parametrize("name", list(PAPER_TABLES))
def test_average_ranks_reproduce_paper(name):
    values, paper = PAPER_TABLES[name]
    table = pd.DataFrame(values, index=METHODS, columns=METRICS)
    got = average_ranks(table).round(3)
    assert list(got.index) == METHODS
    for method, expected in zip(METHODS, paper):
        assert got[method] == pytest.approx(expected, abs=1e-3), f"{name}: {method}"


def test_ties_share_best_rank_and_nan_is_skipped():
    table = pd.DataFrame({"a": [3.0, 3.0, 1.0], "b": [1.0, NAN, 2.0]}, index=["x", "y", "z"])
    # a: x=1, y=1 (tie shares the best rank), z=3; b: z=1, x=2, y has no b.
    got = average_ranks(table)
    assert got.to_dict() == {"x": 1.5, "y": 1.0, "z": 2.0}
    assert got.name == "Avg. Rank"
