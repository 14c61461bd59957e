"""The preference study's widget, driven through its controls: votes name the right methods
whatever side they were shown on, and a returning rater continues where they stopped."""

import io

import pytest
from PIL import Image

from diffchat.human_eval import PreferenceApp, PreferenceStudy, StudyItem, plot_win_rates, win_rates

COLOURS = {"ppo": (255, 0, 0), "teacher": (0, 255, 0), "human": (0, 0, 255), "raw": (90, 90, 90)}


def make_items(folder, n=8):
    paths = {}
    for name, colour in COLOURS.items():
        paths[name] = folder / f"{name}.png"
        Image.new("RGB", (32, 32), colour).save(paths[name])
    return [StudyItem(f"tiny/{e}/s0/{other}", paths["raw"], f"instruction {e}",
                      (("ppo", paths["ppo"]), (other, paths[other])))
            for e in range(n) for other in ("teacher", "human")]


def shown_method(png: bytes) -> str:
    colour = Image.open(io.BytesIO(png)).convert("RGB").getpixel((0, 0))
    return next(name for name, c in COLOURS.items() if c == colour)


def test_clicks_record_the_method_on_the_clicked_side_and_a_rater_resumes(tmp_path):
    items = make_items(tmp_path)
    votes_path = tmp_path / "votes.jsonl"
    app = PreferenceApp(PreferenceStudy(items, votes_path, seed=3))
    app.buttons["left"].click()  # no rater yet: nothing recorded
    assert not votes_path.exists()
    app.rater.value = "alice"
    app.start.click()
    expected, lefts = [], []
    for n, choice in enumerate(["left", "right", "tie", "left", "right"]):
        left, right = shown_method(app.left.value), shown_method(app.right.value)
        lefts.append(left)
        assert app.current.item == items[n].item and {left, right} == {"ppo", items[n].images[1][0]}
        expected.append({"left": left, "right": right, "tie": "tie"}[choice])
        app.buttons[choice].click()
    assert "ppo" in lefts and len(set(lefts)) > 1, f"the sides must be randomised: {lefts}"
    study = PreferenceStudy(items, votes_path, seed=3)
    votes = study.votes()
    assert [v["winner"] for v in votes] == expected
    assert [v["item"] for v in votes] == [it.item for it in items[:5]]
    assert "alice: 5 of 16 voted" in app.progress.value

    # A new session (a restarted kernel): alice continues with the 6th item, bob starts at the 1st.
    again = PreferenceApp(PreferenceStudy(items, votes_path, seed=3))
    again.rater.value = "alice"
    again.start.click()
    assert again.current.item == items[5].item
    again.rater.value = "bob"
    again.start.click()
    assert again.current.item == items[0].item
    with pytest.raises(ValueError, match="already voted"):
        study.vote("alice", items[0].item, "left")
    with pytest.raises(ValueError, match="unknown choice"):
        study.vote("bob", items[0].item, "up")


def test_a_raters_name_is_shown_as_text_not_html(tmp_path):
    app = PreferenceApp(PreferenceStudy(make_items(tmp_path), tmp_path / "votes.jsonl", seed=3))
    app.rater.value = "<img src=x onerror=alert(1)>"
    app.start.click()
    assert "<img" not in app.progress.value and "&lt;img src=x onerror=alert(1)&gt;" in app.progress.value


def test_win_rates_count_from_diffchats_side(tmp_path):
    items = make_items(tmp_path, n=2)
    study = PreferenceStudy(items, tmp_path / "votes.jsonl")
    for item in items:  # vote for DiffChat's image wherever it is shown
        (left, _), _ = study.sides("carol", item)
        study.vote("carol", item.item, "left" if left == "ppo" else "right")
    study.vote("dave", items[0].item, "tie")
    table = win_rates(study.votes())
    assert table.loc["Human prompt writer (append)", "Win"] == 1.0
    assert table.loc["Teacher LLM (ChatGPT row)", ["Win", "Tie", "Lose"]].tolist() == [2 / 3, 1 / 3, 0.0]
    assert table["votes"].sum() == 5
    assert plot_win_rates(table).axes


def test_scripted_votes_prefer_the_higher_score_and_resume(tmp_path):
    from diffchat.human_eval import scripted_votes

    items = make_items(tmp_path, n=3)
    records = [{"image": f"{name}.png", "scores": {"pickscore": score}}
               for name, score in (("ppo", 2.0), ("teacher", 1.0), ("human", 2.0))]
    study = PreferenceStudy(items, tmp_path / "scripted.jsonl")
    assert scripted_votes(study, "script", records, tmp_path) == 6
    assert scripted_votes(study, "script", records, tmp_path) == 0, "a rerun casts nothing twice"
    winners = {v["opponent"]: set() for v in study.votes()}
    for v in study.votes():
        winners[v["opponent"]].add(v["winner"])
    assert winners == {"teacher": {"ppo"}, "human": {"tie"}}
