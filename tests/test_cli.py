import subprocess
import sys
import time

from diffchat.cli import main


def test_help_lists_commands(capsys):
    try:
        main(["--help"])
    except SystemExit as e:
        assert e.code == 0
    out = capsys.readouterr().out
    for cmd in ("profile", "run", "status", "course", "setup"):
        assert cmd in out


def test_profile_show_paper(capsys):
    assert main(["profile", "show", "paper"]) == 0
    out = capsys.readouterr().out
    assert "bigscience/bloom-1b1" in out and "typical_p" in out and "0.97" in out


def test_unknown_stage_is_a_one_line_error(capsys, tmp_path):
    assert main(["run", "nope", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("diffchat run: error: unknown stage 'nope'") and "\n" not in err


def test_console_script_starts_fast():
    start = time.time()
    out = subprocess.run([sys.executable, "-m", "diffchat.cli", "profile", "list"],
                         capture_output=True, text=True, check=True)
    assert "paper" in out.stdout
    assert time.time() - start < 30


def test_ppo_no_ci_reward_is_its_own_stage_and_run_folder(capsys, tmp_path):
    """`diffchat ppo --no-ci-reward` trains the reward without its CI term, in ppo_no_ci_reward/."""
    from diffchat import pipeline
    from diffchat.cli import build_parser
    from diffchat.profiles import get_profile

    args = build_parser().parse_args(["ppo", "--no-ci-reward", "--root", str(tmp_path)])
    assert args.no_ci_reward and not args.no_vci
    name = pipeline.variant_name(ci_reward=False)
    assert name == "ppo_no_ci_reward" and pipeline.variant_name() == "ppo"
    tiny = get_profile("tiny")
    cfg = pipeline.ppo_settings(name, tiny)
    assert cfg.ci_reward is False and (cfg.pi_plus, cfg.pi_minus, cfg.vci) == (True, True, True)
    assert pipeline.ppo_config(name)(tiny) != pipeline.ppo_config("ppo")(tiny)  # another stage key
    assert pipeline.stage_dir(name, "tiny", tmp_path) != pipeline.stage_dir("ppo", "tiny", tmp_path)
    assert main(["status", "--root", str(tmp_path)]) == 0
    assert "ppo_no_ci_reward" in capsys.readouterr().out
    assert "ppo_no_ci_reward" not in pipeline.COURSE.stages["eval"].optional  # not one of Table 2's


def test_two_ablation_switches_at_once_are_a_one_line_error(capsys, tmp_path):
    assert main(["ppo", "--no-ci-reward", "--no-vci", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert "one of pi+, pi-, VCI and the CI reward at a time" in err and "\n" not in err
