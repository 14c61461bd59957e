"""Held-out rewrite metrics: edit accuracy, strict, exact match, loops, baselines."""

import pytest

from diffchat.edit_metrics import (
    baseline_outputs,
    edit_correct,
    evaluate_rewrites,
    has_loop,
    keyword_diagnostics,
    metrics_table,
    normalise,
)

ROW = {"source_prompt": "a cat in a garden", "instruction": "give it a crown",
       "beautified_source_prompt": "a cat in a garden, highly detailed",
       "beautified_target_prompt": "a cat with a crown in a garden, highly detailed",
       "target_prompt": "a cat with a crown in a garden", "kind": "add", "added": ["crown"],
       "removed": []}


def test_edit_correct_uses_lemmas_and_removed_words():
    assert edit_correct("two cats wearing crowns", ["crown"], [])
    assert not edit_correct("a cat", ["crown"], [])
    assert edit_correct("a dog in a garden", ["dog"], ["cat"])
    assert not edit_correct("a dog chasing a cat", ["dog"], ["cat"])
    assert edit_correct("a cat at night", ["night"], [])


def test_loops():
    assert has_loop("a purple purple purple cat")
    assert has_loop("a cat with a hat with a hat with a hat")
    assert not has_loop("a cat with a hat, a dog with a bone")


def test_baselines_and_normalise():
    assert baseline_outputs([ROW], "unchanged") == [ROW["beautified_source_prompt"]]
    assert baseline_outputs([ROW], "append") == ["a cat in a garden, highly detailed, give it a crown"]
    with pytest.raises(ValueError, match="unknown baseline"):
        baseline_outputs([ROW], "nope")
    assert normalise("A  Cat, at NIGHT!") == "a cat at night"


def test_strict_and_exact_separate_degenerate_outputs():
    outputs = {
        "reference": ROW["beautified_target_prompt"],
        "dropped the rest": "a crown",
        "loop": "a cat with a crown crown crown in a garden, highly detailed",
        "appended": "a cat in a garden, highly detailed, give it a crown",
    }
    res = {k: evaluate_rewrites([ROW], [v])["all"] for k, v in outputs.items()}
    assert res["reference"] == {"n": 1, "edit": 1.0, "strict": 1.0, "exact": 1.0, "loop": 0.0, "ci": 100.0}
    assert res["dropped the rest"]["edit"] == 1.0 and res["dropped the rest"]["strict"] == 0.0
    assert res["loop"]["edit"] == 1.0 and res["loop"]["loop"] == 1.0 and res["loop"]["exact"] == 0.0
    assert res["appended"]["edit"] == 1.0 and res["appended"]["strict"] == 0.0
    table = metrics_table({"m": evaluate_rewrites([ROW], [ROW["beautified_target_prompt"]])})
    assert "| add | 1 | 1.000 |" in table


def test_partial_or_mixed_metadata_is_named():
    with pytest.raises(ValueError, match="row 0: field 'kind'"):
        evaluate_rewrites([{**ROW, "kind": None}], ["x"])
    real = {k: v for k, v in ROW.items() if k not in ("kind", "added", "removed")}
    with pytest.raises(ValueError, match=r"mix mini-world rows .* \(row 1 differs from row 0\)"):
        evaluate_rewrites([ROW, real], ["x", "x"])


def test_real_rows_score_exact_loops_and_ci_and_say_what_is_skipped():
    real = {k: v for k, v in ROW.items() if k not in ("kind", "added", "removed")}
    res = evaluate_rewrites([real, real], [ROW["beautified_target_prompt"], "a dog dog"])
    assert set(res) == {"all"}
    assert {k: res["all"][k] for k in ("n", "exact", "loop", "ci")} == {"n": 2, "exact": 0.5, "loop": 0.5, "ci": 50.0}
    assert "edit" not in res["all"] and "kind, added, removed" in res["all"]["skipped"]
    assert "| all | 2 | nan |" in metrics_table({"m": res})


def test_keyword_diagnostics_count_omissions_kept_words_and_where_the_edit_lands():
    rows = [{"added": ["nostalgic"], "removed": []},
            {"added": ["red hat"], "removed": ["crown"]},
            {"added": ["crown"], "removed": []},
            {"added": [], "removed": ["feather"]}]
    outputs = ["a nostalgic picture of a parrot, comic illustration, uhd",  # edit in place, first part
               "a king with a crown, uhd, red hats",  # appended in the last part; crown kept
               "a king, uhd",  # the crown omitted
               "a monk, feathers"]  # the feather kept (a lemma)
    d = keyword_diagnostics(rows, outputs)
    assert d["omitted"] == pytest.approx(1 / 3, abs=1e-4)
    assert d["removed_kept"] == 1.0
    assert d["at_end"] == 0.5
    assert d["first_pos"] == pytest.approx((1 / 8 + 6 / 7) / 2, abs=1e-4)
    fixed = keyword_diagnostics(rows, ["a nostalgic parrot, uhd", "a king with a red hat, uhd",
                                       "a king with a crown, uhd", "a monk, uhd"])
    assert fixed["omitted"] == 0.0 and fixed["removed_kept"] == 0.0 and fixed["at_end"] == 0.0
