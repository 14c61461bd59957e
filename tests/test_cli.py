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
