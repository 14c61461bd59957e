"""average_ranks reproduces the paper's Avg. Rank column (Table 1, Table 4 (a)-(e)).

Numbers copied from the paper (shared/paper/diffchat-paper.txt beside the repository). "-" (InstructPix2Pix has no
CI score) is NaN. Every paper Avg. Rank comes out of the paper's own numbers under the
stated rule (ties share the best rank): e.g. Table 4 (b) PickScore 19.602 vs 19.602 and
(d) PickScore 19.590 vs 19.590 are ties ranked 2 and 2; the CI scores 87.496 / 85.089 /
87.314 repeat in every table.
"""

import json
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


# ---- the protocol: resuming, tables, bad input ----

ROWS = [
    {"source_prompt": f"a {animal} in a garden", "instruction": f"make it {when}",
     "beautified_source_prompt": f"a {animal} in a garden, oil painting, highly detailed",
     "beautified_target_prompt": f"a {animal} in a garden at {when}, oil painting, highly detailed",
     "target_prompt": f"a {animal} in a garden at {when}"}
    for animal, when in (("fox", "night"), ("cat", "dawn"), ("owl", "dusk"))
]


class CountingPipe:
    """A real diffusers pipeline, counted; raises after ``fail_after`` images (a killed run)."""

    def __init__(self, pipe, counter, fail_after=None):
        self.pipe, self.counter, self.fail_after = pipe, counter, fail_after

    def __call__(self, **kwargs):
        n = len(kwargs["prompt"])
        if self.fail_after is not None and self.counter["images"] + n > self.fail_after:
            raise RuntimeError("killed midway")
        self.counter["images"] += n
        for prompt in kwargs["prompt"]:
            self.counter["prompts"].append(prompt)
        return self.pipe(**kwargs)


@pytest.fixture(scope="module")
def parts():
    from diffchat.competitors import load_instructpix2pix
    from diffchat.evaluation import load_scorers
    from diffchat.images import load_tis

    # The small profile's scorers: random tiny CLIPs, no clip stage to run first.
    return load_tis("tiny", device="cpu"), load_instructpix2pix("tiny", device="cpu"), load_scorers("small")


def run_protocol(work, parts, counter, fail_after=None):
    from diffchat.competitors import METHODS
    from diffchat.evaluation import Evaluation, ImageSettings
    from diffchat.images import TISModel

    tis, ip2p, scorers = parts
    evaluation = Evaluation(work, ROWS, ImageSettings((0, 1), ip2p_steps=2, ip2p_guidance=7.5,
                                                      ip2p_image_guidance=1.5))
    append = [f"{r['beautified_source_prompt']}, {r['instruction']}" for r in ROWS]
    plan = {METHODS["human"]: ("rule", append),
            METHODS["instructpix2pix"]: ("tiny", [r["beautified_target_prompt"] for r in ROWS])}
    return evaluation.run({"tiny": TISModel(tis.spec, CountingPipe(tis.pipe, counter, fail_after))},
                          plan, scorers, CountingPipe(ip2p, counter, fail_after), batch_size=2, progress=False)


def test_a_killed_evaluation_resumes_without_drawing_an_image_twice(tmp_path, parts):
    counter = {"images": 0, "prompts": []}
    with pytest.raises(RuntimeError, match="killed midway"):
        run_protocol(tmp_path, parts, counter, fail_after=7)
    made_before = counter["images"]
    assert 0 < made_before <= 7
    records = run_protocol(tmp_path, parts, counter)
    # 3 rows x 2 seeds: 6 raw images, 6 appended-prompt images, 6 InstructPix2Pix edits.
    assert counter["images"] == 18, f"{counter['images']} images drawn for 18 distinct ones"
    keys = [(r["method"], r["example"], r["seed"]) for r in records]
    assert len(keys) == len(set(keys)) == 12
    on_disk = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    assert len(on_disk) == 12
    assert run_protocol(tmp_path, parts, counter) and counter["images"] == 18, "a finished run draws nothing"
    ip2p = [r for r in records if r["method"] == "instructpix2pix"]
    assert all(r["scores"]["ci"] is None for r in ip2p)
    assert all(set(r["scores"]) == {"pickscore", "aesthetic", "hps", "clip", "dclip", "ci"} for r in records)
    assert all((tmp_path / r["image"]).is_file() and (tmp_path / r["raw_image"]).is_file() for r in records)


def test_tables_rescale_rank_and_export(tmp_path, parts):
    from diffchat.evaluation import all_tables, export_tables

    records = run_protocol(tmp_path, parts, {"images": 0, "prompts": []})
    tables = all_tables(records)
    assert set(tables) == {"table1", "table4_tiny"}
    t1 = tables["table1"]
    assert list(t1.columns) == ["PickScore", "Aes. Score", "HPS", "CLIP-S", "D-CLIP-S", "CI Score", "Avg. Rank"]
    human = [r for r in records if r["method"] == "human"]
    hps = 100 * sum(r["scores"]["hps"] for r in human) / len(human)
    assert t1.loc["Human prompt writer (append)", "HPS"] == pytest.approx(hps)
    assert math.isnan(t1.loc["InstructPix2Pix", "CI Score"])
    written = export_tables(tables, tmp_path)
    md = (tmp_path / "table1.md").read_text()
    assert "| InstructPix2Pix |" in md and " - |" in md and len(written) == 4


def test_bad_methods_tis_and_missing_runs_say_what_to_run(tmp_path, capsys):
    from diffchat.cli import main
    from diffchat.evaluation import check_request
    from diffchat.profiles import get_profile

    tiny = get_profile("tiny")
    with pytest.raises(ValueError, match="unknown method 'gpt5': choose one of teacher, "):
        check_request(["gpt5"], None, tiny, tmp_path)
    with pytest.raises(ValueError, match="unknown text-to-image model 'sd99'"):
        check_request(None, ["sd99"], tiny, tmp_path)
    with pytest.raises(RuntimeError, match=r"run `diffchat ppo --no-vci --profile tiny`"):
        check_request(["human", "ppo_no_vci"], None, tiny, tmp_path)
    for argv, missing in ((["--methods", "sft"], "`diffchat sft --profile tiny`"),
                          (["--tis", "sd99"], "'sd99'"), (["--methods", "gpt5"], "'gpt5'")):
        assert main(["eval", "--root", str(tmp_path), *argv]) == 1
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and missing in err, err


def test_plot_table_draws_one_panel_per_metric_and_skips_missing_values():
    import matplotlib

    matplotlib.use("Agg")
    from diffchat.evaluation import PAPER_TABLE1, plot_table

    fig = plot_table(PAPER_TABLE1, title="Table 1")
    assert [ax.get_title() for ax in fig.axes] == list(PAPER_TABLE1.columns)
    ci = fig.axes[list(PAPER_TABLE1.columns).index("CI Score")]
    assert [round(p.get_height(), 3) for p in ci.patches] == [87.496, 85.089, 87.314]  # no bar for "-"
    assert ci.get_ylim()[0] > 0  # a few points apart: the axis does not start at 0
    assert len(fig.legends[0].get_texts()) == len(PAPER_TABLE1)  # every method once, "-" or not
