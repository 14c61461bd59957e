"""The paper profile's own code path, end to end on small files in the real formats.

Real data (InstructPix2Pix's GPT-generated JSONL, <simplified, prompt> pairs) goes through
the real loaders, the OpenAI-compatible teacher (talking to a chat-completions server on
127.0.0.1 that stands in for ChatGPT), the language / NSFW / quality filters, PB, InstructPE
assembly, SFT, labelling and both reward models. Only the models are swapped, through the
profile's model ids, for the tiny ones built from configs, and the steps are cut to a few.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from chat_server import ChatServer

from diffchat import pipeline
from diffchat.data.loaders import load_instructpix2pix_jsonl
from diffchat.profiles import PAPER, TINY_ID

FIXTURES = Path(__file__).parent / "fixtures" / "paper"
TRIPLETS = FIXTURES / "instructpix2pix.jsonl"
PB_PAIRS = FIXTURES / "pb_pairs.jsonl"
RAN = ("data", "base", "pb", "instructpe", "sft", "clip", "rewards")
TAGS = ", highly detailed, trending on artstation"

STAND_INS = PAPER.with_overrides(
    models={role: TINY_ID for role in ("policy", "pb", "reward", "aesthetic", "pickscore",
                                       "pickscore_processor", "hps", "clip")} | {"tis": (TINY_ID,)},
    data={"n_test": 8, "n_reward_labels": 20},
    tiny_lm={"vocab_size": 1000, "hidden_size": 32, "n_layer": 2, "n_head": 2},
    pb={"max_steps": 3, "batch_size": 8},
    sft={"max_steps": 3, "batch_size": 8},
    rm={"max_steps": 3, "batch_size": 8, "max_length": 64},
    images={"height": 32, "width": 32, "steps": 2},
)


# Where the stand-in errs, so that every step of the funnel has something to drop: one
# request gets no usable answer, one edit is not carried out (the quality filter's CI score
# catches it); the fixture also holds a French row and an NSFW row for the other two filters.
SILENT = "make it melt"
UNDONE = "make it a spaceship"


def chatgpt_stand_in():
    """A teacher that knows the data: for T_A the raw target y_o, for T_B the raw input x_o,
    each with prompt tags, looked up by the request's instruction."""
    rows = {r["edit"]: r for r in load_instructpix2pix_jsonl(TRIPLETS)}

    def answer(messages: list[dict]) -> str:
        content = messages[-1]["content"]
        instruction = re.search(r"^Instruction: (.*)$", content, re.M).group(1)
        if instruction == SILENT:
            return ""
        side = "input" if "Modified prompt:" in content or instruction == UNDONE else "output"
        return f'Output: "{rows[instruction][side]}{TAGS}"'

    return answer


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """The runs folder after the sft and rewards stages, and the teacher's server."""
    root = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as mp, ChatServer(chatgpt_stand_in()) as server:
        mp.setenv("NO_PROXY", "127.0.0.1")
        mp.delenv("DIFFCHAT_TEACHER", raising=False)
        mp.setenv("DIFFCHAT_TEACHER_BASE_URL", server.url)
        mp.setenv("DIFFCHAT_TEACHER_MODEL", "chatgpt-stand-in")
        mp.setenv("OPENAI_API_KEY", "")
        mp.setenv("DIFFCHAT_IP2P_JSONL", str(TRIPLETS))
        mp.setenv("DIFFCHAT_PB_PAIRS", str(PB_PAIRS))
        pipeline.run("sft", STAND_INS, root)
        pipeline.run("rewards", STAND_INS, root)
        statuses = {row["stage"]: row["done"] for row in pipeline.status(STAND_INS, root)}
    return root, server, statuses


def manifest(root: Path, stage: str) -> dict:
    return pipeline.read_manifest(stage, STAND_INS, root)


def test_the_paper_profile_runs_from_real_files_to_sft_and_reward_models(dry_run):
    root, server, statuses = dry_run
    assert [stage for stage, done in statuses.items() if done] == list(RAN)
    assert {manifest(root, s)["profile"] for s in RAN} == {"paper"}
    assert manifest(root, "base")["key"]["config"]["policy"] == TINY_ID
    data = manifest(root, "data")
    assert data["key"]["config"]["source"] == "instructpix2pix"
    assert data["key"]["config"]["files"]["triplets"][0] == str(TRIPLETS.resolve())
    assert data["summary"] == {"train": 25, "test_seen": 8, "pb_train": 26, "pb_test": 2}


def test_instructpe_asks_the_openai_compatible_teacher_and_filters(dry_run):
    root, server, _ = dry_run
    ipe = manifest(root, "instructpe")
    # The key names the endpoint's model and URL, not just "openai".
    assert ipe["key"]["config"]["teacher"] == f"openai:chatgpt-stand-in@{server.url.rstrip('/')}"
    assert ipe["summary"]["teacher_calls"] == len(server.requests) == 33
    assert {r["body"]["model"] for r in server.requests} == {"chatgpt-stand-in"}
    funnels = json.loads((root / "paper" / "instructpe" / "funnel.json").read_text())
    dropped: dict[str, int] = {}
    for steps in funnels.values():
        assert [s["step"].split(" (")[0] for s in steps] == [
            "raw triplets", "teacher answered", "English", "not NSFW", "quality"]
        for step in steps[1:]:
            name = step["step"].split(" (")[0]
            dropped[name] = dropped.get(name, 0) + sum(step["dropped"].values())
    # one row each: no answer, French, 'nude', the edit not carried out
    assert dropped == {"teacher answered": 1, "English": 1, "not NSFW": 1, "quality": 1}
    assert sum(ipe["summary"]["rows"].values()) == 33 - 4


def test_real_rows_get_the_metrics_they_can_and_say_what_is_skipped(dry_run):
    root, _, _ = dry_run
    ev = json.loads((root / "paper" / "sft" / "sft_eval.json").read_text())
    seen = ev["splits"]["test_seen"]["results"]
    for method in ("diffchat_sft", "append", "unchanged"):
        assert {"n", "exact", "loop", "ci"} <= set(seen[method]["all"])
        assert "edit" not in seen[method]["all"] and "kind" in seen[method]["all"]["skipped"]
    assert "skipped" in ev["splits"]["test_unseen"]  # real data has no unseen-subject split
    summary = manifest(root, "sft")["summary"]
    assert summary["steps"] == 3 and "append_ci" in summary["test_seen"]
    pb = json.loads((root / "paper" / "pb" / "pb_eval.json").read_text())
    assert pb["metrics"]["n"] == 2 and "tagged" in pb["metrics"]
    assert pb["tags_from"] == "tags recurring in the PB training prompts"
    assert "highly detailed" in pb["tags"]


def test_reward_models_are_trained_on_labels(dry_run):
    root, _, _ = dry_run
    rewards = root / "paper" / "rewards"
    labels = [json.loads(line) for line in (rewards / "labels.jsonl").read_text().splitlines()]
    assert labels and all({"prompt", "aesthetic", "pickscore"} <= set(r) for r in labels)
    for target in ("aesthetic", "pickscore"):
        assert (rewards / f"rm_{target}" / "model.safetensors").is_file()
    assert set(manifest(root, "rewards")["summary"]) == {"aesthetic", "pickscore"}
