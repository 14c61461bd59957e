"""InstructPE assembly (Fig. 2): T_A/T_B choice, filters, funnel, and resuming after a kill."""

import random

import pytest

from diffchat.data import miniworld
from diffchat.data.teachers import RuleTeacher, TeacherCache
from diffchat.instructpe import (
    assemble,
    choose_template,
    funnel_side_by_side,
    is_english,
    is_nsfw,
    keyword_retention,
)


def rule_beautify(texts):
    """The mini-world's own beautification rule (what the PB model learns), seeded per text."""
    return [miniworld.beautify(t, random.Random(t)) or t for t in texts]


class DyingTeacher(RuleTeacher):
    """A rule teacher whose process is 'killed' after ``budget`` backend answers."""

    def __init__(self, cache, budget):
        super().__init__(cache)
        self.budget = budget

    def _answer(self, request):
        if self.budget <= 0:
            raise KeyboardInterrupt("killed")
        self.budget -= 1
        return super()._answer(request)


@pytest.fixture(scope="module")
def triplets():
    return miniworld.generate_triplets(40, seed=3)


def test_assembly_writes_released_fields_and_a_funnel(triplets, tmp_path):
    teacher = RuleTeacher(TeacherCache(tmp_path / "teacher.jsonl"))
    rows, funnel = assemble(triplets, rule_beautify, teacher, tmp_path, progress=False)
    assert 0 < len(rows) <= len(triplets)
    for row in rows:
        for key in ("source_prompt", "instruction", "beautified_source_prompt",
                    "beautified_target_prompt", "target_prompt", "template", "kind", "added"):
            assert key in row
        assert row["template"] in ("T_A", "T_B")
        # The rule teacher's target is the instruction applied to the beautified source.
        assert miniworld.apply_instruction(row["beautified_source_prompt"], row["instruction"]) == \
            row["beautified_target_prompt"]
    steps = [s["step"] for s in funnel.steps]
    assert steps[0] == "raw triplets" and steps[-3:] == ["English", "not NSFW", "quality"]
    assert funnel.steps[-1]["kept"] == len(rows)
    assert "| step | kept |" in funnel.table()


def test_killed_assembly_resumes_without_reasking(triplets, tmp_path):
    cache_path = tmp_path / "teacher.jsonl"
    first = DyingTeacher(TeacherCache(cache_path), budget=15)
    with pytest.raises(KeyboardInterrupt):
        assemble(triplets, rule_beautify, first, tmp_path, progress=False)
    assert first.calls == 16  # 15 answered and cached, the 16th died in flight
    second = RuleTeacher(TeacherCache(cache_path))
    rows, _ = assemble(triplets, rule_beautify, second, tmp_path, progress=False)
    assert second.calls == len(triplets) - 15, "cached answers must not be asked again"
    cache = TeacherCache(cache_path)
    failed = len(triplets) - len(cache)  # requests the rules cannot answer are not cached
    third = RuleTeacher(cache)
    again, _ = assemble(triplets, rule_beautify, third, tmp_path, progress=False)
    assert third.calls == failed and again == rows


def test_pb_outputs_are_cached_across_runs(triplets, tmp_path):
    calls = []

    def counting(texts):
        calls.append(len(texts))
        return rule_beautify(texts)

    assemble(triplets[:5], counting, RuleTeacher(), tmp_path, progress=False)
    assemble(triplets[:5], counting, RuleTeacher(), tmp_path, progress=False)
    assert len(calls) == 1


def test_t_b_is_chosen_when_the_target_keeps_more_keywords(tmp_path):
    triplet = {"input": "a cat in a garden", "edit": "add a crown",
               "output": "a cat with a crown in a garden"}

    def lossy_source(texts):  # drops the cat from x only
        return [t.replace("a cat", "an animal") if "crown" not in t else t + ", highly detailed"
                for t in texts]

    rows, funnel = assemble([triplet], lossy_source, RuleTeacher(), tmp_path, progress=False,
                            quality_filter=lambda r: True)
    assert keyword_retention("a cat in a garden", "an animal in a garden") < 1
    assert "T_B 1" in funnel.steps[1]["step"]


def test_choose_template_trusts_the_side_that_kept_more_keywords():
    choice = choose_template("a cat in a garden", "a cat with a crown in a garden",
                             "an animal in a garden", "a cat with a crown in a garden, 8k", "add a crown")
    assert (choice.keep_x, choice.keep_y, choice.template) == (0.5, 1.0, "T_B")
    assert choice.request.task == "write_source" and choice.request.text.endswith("8k")
    tie = choose_template("a cat", "a dog", "a cat, 8k", "a dog, 8k", "make it a dog")
    assert (tie.template, tie.request.task, tie.known) == ("T_A", "write_target", "a cat, 8k")


def test_funnel_side_by_side_puts_the_splits_in_columns():
    funnels = {"train": [{"step": "raw triplets", "kept": 10, "dropped": {}},
                         {"step": "teacher answered (T_A 9 / T_B 1)", "kept": 8, "dropped": {}}],
               "test_seen": [{"step": "raw triplets", "kept": 4, "dropped": {}},
                             {"step": "teacher answered (T_A 4 / T_B 0)", "kept": 1, "dropped": {}}]}
    table = funnel_side_by_side(funnels).splitlines()
    assert table[0] == "| step | train | test_seen |"
    assert table[3] == "| teacher answered | 8 (80%) | 1 (25%) |"
    with pytest.raises(ValueError, match="different steps"):
        funnel_side_by_side({"train": funnels["train"], "test_seen": funnels["test_seen"][:1]})


def test_filters():
    assert is_nsfw("a nude statue") and not is_nsfw("a nudibranch in the sea")
    assert is_english("a portrait of a zebra in a forest, 8k, octane render")
    assert not is_english("un chat noir assis dans un jardin, très détaillé")


def test_an_empty_split_is_reported_where_it_happens_and_skipped_downstream(triplets, tmp_path, caplog):
    """A PB model that fails to copy makes the rule teacher fail on most rows: the funnel says
    which step emptied the split and why, the reader returns no rows with a one-line warning
    (not a loader's exception), and the evaluation skips the split with a reason."""
    from diffchat.data.collect import read_instructpe
    from diffchat.data.loaders import save_instructpe
    from diffchat.edit_metrics import evaluate_model

    def forgetful(texts):  # keeps none of the input: the rule teacher can answer nothing
        return ["masterpiece, highly detailed, 8k" for _ in texts]

    rows, funnel = assemble(triplets, forgetful, RuleTeacher(), tmp_path / "cache", progress=False)
    assert rows == []
    warning = funnel.shortfall()
    assert warning.startswith(f"only 0 of {len(triplets)} rows kept")
    assert "the split is empty" in warning and "teacher" in warning
    assert "**Warning:**" in funnel.table()

    save_instructpe(rows, tmp_path / "InstructPE_test_unseen.json")
    with caplog.at_level("WARNING"):
        assert read_instructpe(tmp_path, "test_unseen") == []
    assert "InstructPE split 'test_unseen' is empty" in caplog.text
    result = evaluate_model(None, [])
    assert result["skipped"].startswith("the split has no rows")


def test_a_split_that_came_through_has_no_warning(triplets, tmp_path):
    _, funnel = assemble(triplets, rule_beautify, RuleTeacher(), tmp_path, progress=False)
    assert funnel.shortfall() is None


def _pb_that_cannot_spell_unseen_subjects(texts):
    """A PB stand-in that fails like the tiny PB model: it beautifies by rule, but spells a
    subject its training never saw by its first three letters ('bottle' -> 'bot')."""
    held = miniworld.held_out_subjects()
    pretty = rule_beautify(texts)
    return [" ".join(w[:3] if w in held else w for w in p.split(" ")) for p in pretty]


@pytest.mark.parametrize("split", ["test_seen", "test_unseen"])
def test_held_out_splits_keep_their_rows(split, tmp_path):
    """Held-out mini-world splits keep >= 95% of their raw rows through assembly: the rule
    teacher repeats the raw edit where its rules cannot undo it or cannot read the PB output,
    and the quality filter marks rows instead of dropping them. Without the edit metadata
    (as for real data) the unseen split loses rows at the teacher."""
    from diffchat.instructpe import ci_quality_filter, keeps_every_row

    triplets = miniworld.generate_triplets(150, seed=0, split=split)
    assert keeps_every_row(split, triplets) and not keeps_every_row("train", triplets)
    rows, funnel = assemble(triplets, _pb_that_cannot_spell_unseen_subjects, RuleTeacher(),
                            tmp_path / "with", quality_filter=ci_quality_filter(0.7),
                            keep_rows=True, progress=False)
    assert len(rows) >= 0.95 * len(triplets), funnel.table()
    assert {r["template"] for r in rows} == ({"T_A", "T_B"} if split == "test_unseen" else {"T_A"})
    for row in rows:
        assert row["beautified_source_prompt"] != row["beautified_target_prompt"]
        assert isinstance(row["low_quality"], bool)

    # Assembled as the training split is (and as before the fix), the unseen split loses rows.
    without, _ = assemble(triplets, _pb_that_cannot_spell_unseen_subjects, RuleTeacher(),
                          tmp_path / "without", quality_filter=ci_quality_filter(0.7), progress=False)
    if split == "test_unseen":
        assert len(without) < 0.8 * len(triplets)


def test_transfer_edit_repeats_the_raw_edit_on_a_rewrite():
    t = miniworld.transfer_edit
    assert t("a portrait of a cat in a garden, oil painting, 8k", "a cat in a garden",
             "a cat in a garden at night") == "a portrait of a cat in a garden at night, oil painting, 8k"
    # The PB model spelt 'bottle' as 'bot': the edit still lands, the misspelling stays.
    assert t("a spotted bot, mosaic", "a spotted bottle", "a blue spotted bottle") == \
        "a blue spotted bot, mosaic"
    assert t("a spotted bot, mosaic", "a spotted bottle", "a spotted vase") == "a spotted vase, mosaic"
    # Undoing a removal puts the object back where it was.
    assert t("a cat in a garden, 8k", "a cat in a garden", "a cat with a red hat in a garden") == \
        "a cat with a red hat in a garden, 8k"
    assert t("a cat, 8k", "a cat", "a cat") is None
    # A removal whose object the rewrite already lost cannot be repeated.
    assert t("a cat in a garden, 8k", "a cat with a hat in a garden", "a cat in a garden") is None
