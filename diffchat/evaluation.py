"""Section 4's evaluation: result tables and the average ranks the paper reports.

For now this holds the Avg. Rank column of Table 1 and Table 4 (``average_ranks``);
the rest of section 4's evaluation (building the tables from scored images, win rates)
comes later.
"""

from __future__ import annotations

import pandas as pd

__all__ = ["average_ranks"]


def average_ranks(table: pd.DataFrame) -> pd.Series:
    """Average rank of each method over the metrics it has (the paper's "Avg. Rank.").

    Rule: ``table`` has one row per method and one column per metric, higher is better.
    Within each metric the methods are ranked 1 (best) downwards; tied values share the
    best rank of the tie (``rank(ascending=False, method="min")``), so two methods tied
    for first both get 1 and the next one gets 3. A NaN cell means the metric does not
    apply to that method (InstructPix2Pix has no CI score): it gets no rank there and
    is not counted, and the other methods are ranked among themselves. A method's value
    is the mean of its ranks over the metrics it has; lower is better.

    Returns a float Series indexed like ``table``'s rows, named ``"Avg. Rank"``.
    """
    ranks = table.rank(axis=0, ascending=False, method="min", na_option="keep")
    return ranks.mean(axis=1, skipna=True).rename("Avg. Rank")
