"""`diffchat` command line: the same functions the notebooks call, run headless."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable

from diffchat.profiles import PROFILE_NAMES, get_profile

COMMANDS: dict[str, Callable[[argparse.Namespace], int | None]] = {}


def _profile_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", choices=PROFILE_NAMES, default=None,
                   help="tiny (default, any CPU), small (SmolLM2 + LoRA) or paper (BLOOM-1.1B, GPU)")
    p.add_argument("--root", default=None,
                   help="runs folder (default $DIFFCHAT_RUNS or ./runs; e.g. a Drive folder on Colab)")


def _cmd_profile(args: argparse.Namespace) -> None:
    if args.action == "list":
        from diffchat.profiles import PROFILES

        for p in PROFILES.values():
            print(f"{p.name:6s} {p.description}")
        return
    profile = get_profile(args.name)
    print(profile.to_json() if args.json else profile.describe())


def _cmd_run(args: argparse.Namespace) -> None:
    from diffchat import pipeline

    stage = args.stage
    profile = get_profile(args.profile)
    if stage == "ppo":  # `diffchat run ppo` has no ablation switches: the full PPO run
        switches = ("pi_plus", "pi_minus", "vci", "ci_reward")
        stage = pipeline.variant_name(**{s: not getattr(args, f"no_{s}", False) for s in switches})
    methods, tis = getattr(args, "methods", None), getattr(args, "tis", None)
    if methods or tis:  # `diffchat eval --methods ... --tis ...`: a subset of the profile's
        from diffchat.evaluation import check_request

        check_request(methods, tis, profile, args.root)
        profile = profile.with_overrides(eval={k: tuple(v) for k, v in (("methods", methods), ("tis", tis)) if v})
    path = pipeline.run(stage, profile, args.root, force=args.force)
    manifest = pipeline.read_manifest(stage, profile, args.root) or {}
    print(json.dumps({"stage": stage, "path": str(path), "summary": manifest.get("summary")},
                     indent=2, default=str))


def _cmd_status(args: argparse.Namespace) -> None:
    from diffchat import pipeline

    for row in pipeline.status(args.profile, args.root):
        state = "done" if row["done"] else ("stale" if row["stale"] else "-")
        print(f"{row['stage']:16s} {state:6s} {row['finished'] or '':20s} {row['path']}")
        if row["problem"]:
            print(f"{'':16s} {row['problem']}")


def _cmd_setup(args: argparse.Namespace) -> None:
    from diffchat.assets import ensure_nltk_data, nltk_data_status
    from diffchat.tiny import build_clip_tokenizer

    ensure_nltk_data()
    print(json.dumps(nltk_data_status(), indent=2))
    clip = build_clip_tokenizer(fetch=True)
    print(f"CLIP tokenizer (tiny image models): {len(clip)} tokens")
    if args.small_model:
        from diffchat.loading import smollm2_offline_path

        print(f"SmolLM2-135M-Instruct (offline copy): {smollm2_offline_path()}")


def _cmd_course(args: argparse.Namespace) -> None:
    from diffchat.course import run_course

    run_course(args.profile, args.only, args.root)


def _rewrite_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("prompt", help="the current prompt x")
    p.add_argument("--instruction", "-i", required=True, help="what to change, e.g. 'make it night'")
    p.add_argument("--model", default=None,
                   help="a model folder or hub id (default: the profile's trained sft stage)")
    p.add_argument("--profile", default=None, choices=("tiny", "small", "paper"))
    p.add_argument("--root", default=None, help="runs folder (default $DIFFCHAT_RUNS or ./runs)")
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")


def _cmd_rewrite(args: argparse.Namespace) -> None:
    from transformers.utils import logging as hf_logging

    from diffchat.generation import check_text
    from diffchat.model import DiffChat
    from diffchat.pipeline import problem, stage_dir

    check_text(args.prompt, "prompt")
    check_text(args.instruction, "instruction")
    hf_logging.disable_progress_bar()
    model = args.model
    if model is None:
        why = problem("sft", args.profile, args.root)
        if why:
            raise RuntimeError(f"no usable trained model for profile {args.profile or 'tiny'} ({why}): "
                               "run `diffchat sft` (or the course), or pass --model")
        model = stage_dir("sft", args.profile, args.root)
    decoding = {"do_sample": True, "top_p": 0.9, "temperature": 0.8} if args.sample else {}
    print(DiffChat.from_pretrained(model).rewrite(args.prompt, args.instruction, **decoding))


CHAT_HELP = """type a prompt, then one instruction per line. Commands:
  /undo          drop the last turn
  /branch N      continue from turn N
  /edit TEXT     replace the current prompt by TEXT and redraw
  /seed N        draw with seed N from now on (redraws the current turn)
  /export [DIR]  write the chat (PNGs + session.json) to DIR (default: --out)
  /help          this list
  /quit          export to --out and leave (so does end of input)"""


def _chat_command(session, line: str, out) -> bool:
    """Run one /command; False means quit."""
    from pathlib import Path

    name, _, arg = line[1:].partition(" ")
    arg = arg.strip()
    if name == "quit":
        return False
    if name == "help":
        print(CHAT_HELP)
    elif name == "undo":
        _chat_show(session.undo(), out)
    elif name == "branch":
        if not arg.lstrip("-").isdigit():
            raise ValueError(f"/branch needs a turn number, got {arg!r}")
        _chat_show(session.branch(int(arg)), out)
    elif name == "edit":
        _chat_show(session.edit_prompt(arg), out)
    elif name == "seed":
        if not arg.isdigit():
            raise ValueError(f"/seed needs a non-negative integer, got {arg!r}")
        turn = session.set_seed(int(arg))
        if turn is not None:
            _chat_show(turn, out)
    elif name == "export":
        print(f"exported to {session.export(Path(arg) if arg else out)}")
    else:
        raise ValueError(f"unknown command /{name}: type /help")
    return True


def _chat_show(turn, out) -> None:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"turn_{turn.index:02d}.png"
    turn.image.save(path)
    said = "" if turn.instruction is None else f" <- {turn.instruction}"
    print(f"turn {turn.index}{said}: {turn.prompt}\n  image: {path} ({turn.seconds:.2f} s)", flush=True)


def _cmd_chat(args: argparse.Namespace) -> None:
    from pathlib import Path

    from diffchat.chat import ChatError, ChatSession
    from diffchat.runner import runs_root

    session = ChatSession.from_runs(args.profile, args.root, model=args.model, tis=args.tis, seed=args.seed)
    out = Path(args.out) if args.out else runs_root(args.root) / session.profile.name / "chat"
    interactive = sys.stdin.isatty()
    print(session.describe(), flush=True)
    if interactive:
        print(CHAT_HELP)
    while True:
        if interactive:
            print("instruction> " if session.current else "prompt> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line:
            break
        line = line.strip()
        if not line:
            continue
        try:
            if line.startswith("/"):
                if not _chat_command(session, line, out):
                    break
            elif session.current is None:
                _chat_show(session.start(line), out)
            else:
                _chat_show(session.send(line), out)
        # Refusals, failures and a folder that cannot be written: the chat goes on.
        except (ValueError, ChatError, OSError) as err:
            print(f"diffchat chat: {err}", file=sys.stderr, flush=True)
    if session.current is not None:
        print(f"exported to {session.export(out)}")


def _cmd_render(args: argparse.Namespace) -> None:
    from diffchat.images.render import render_image

    tis = args.tis or get_profile("tiny").models.tis[0]
    if args.size < 16:
        raise ValueError(f"--size must be at least 16, got {args.size}")
    image = render_image(args.prompt, seed=args.seed, variant=tis, size=args.size)
    image.save(args.out, format="PNG")
    print(f"{args.out}: {tis}, seed {args.seed}, {args.size}x{args.size}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffchat",
        description="DiffChat course: build InstructPE, train and chat with a prompt-rewriting model.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("profile", help="show a profile's settings (Table 3, A.5, model ids)")
    p.add_argument("action", choices=["show", "list"])
    p.add_argument("name", nargs="?", default=None, choices=PROFILE_NAMES)
    p.add_argument("--json", action="store_true", help="print as JSON")
    COMMANDS["profile"] = _cmd_profile

    p = sub.add_parser("setup", help="resolve NLTK data (WordNet, tagger, punkt), offline if needed, "
                                     "and the CLIP tokenizer of the tiny image models")
    p.add_argument("--small-model", action="store_true",
                   help="also build the offline SmolLM2-135M-Instruct copy (small profile)")
    COMMANDS["setup"] = _cmd_setup

    p = sub.add_parser("run", help="run a course stage (and any missing inputs)")
    p.add_argument("stage")
    _profile_args(p)
    p.add_argument("--force", action="store_true", help="rebuild even if up to date")
    COMMANDS["run"] = _cmd_run

    p = sub.add_parser("status", help="which stages are done for a profile")
    _profile_args(p)
    COMMANDS["status"] = _cmd_status

    p = sub.add_parser("course", help="execute the notebooks in order, headless")
    _profile_args(p)
    p.add_argument("--only", nargs="*", default=None, help="notebook name prefixes, e.g. 00 03")
    COMMANDS["course"] = _cmd_course

    from diffchat.pipeline import COURSE

    for name, stage in COURSE.stages.items():
        p = sub.add_parser(name, help=f"stage: {stage.description}")
        _profile_args(p)
        p.add_argument("--force", action="store_true", help="rebuild even if up to date")
        p.set_defaults(stage=name)
        if name == "ppo":
            for switch, what in (("pi-plus", "ADM pi+ (typical sampling)"),
                                 ("pi-minus", "ADM pi- (keyword removal / replacement)"),
                                 ("vci", "VCI (CI in the value estimate)"),
                                 ("ci-reward", "the CI term of the reward (ours, not the paper's)")):
                p.add_argument(f"--no-{switch}", action="store_true",
                               help=f"ablation: train without {what}, in its own run folder")
        if name == "eval":
            from diffchat.competitors import METHODS

            p.add_argument("--methods", nargs="+", default=None, metavar="METHOD",
                           help="evaluate only these: " + ", ".join(METHODS))
            p.add_argument("--tis", nargs="+", default=None, metavar="MODEL",
                           help="only these text-to-image models (short names or hub ids)")
        COMMANDS[name] = _cmd_run

    p = sub.add_parser("rewrite", help="rewrite a prompt by an instruction with a trained model")
    _rewrite_args(p)
    COMMANDS["rewrite"] = _cmd_rewrite

    p = sub.add_parser("chat", help="chat in the terminal: a prompt, then instructions (images as PNGs)")
    _profile_args(p)
    p.add_argument("--model", default=None,
                   help="a stage (ppo, sft, an ablation) or model folder (default: ppo, else sft)")
    p.add_argument("--tis", default=None, help="text-to-image model (default: the profile's first)")
    p.add_argument("--seed", type=int, default=0, help="image seed, the same every turn (default 0)")
    p.add_argument("--out", default=None, help="folder for the PNGs (default <runs>/<profile>/chat)")
    COMMANDS["chat"] = _cmd_chat

    p = sub.add_parser("render", help="draw a prompt with a mini-world renderer (the tiny profile's TIS models)")
    p.add_argument("prompt")
    p.add_argument("--tis", default=None, help="renderer (default: the tiny profile's first, mini-sd15)")
    p.add_argument("--seed", type=int, default=0, help="image seed (default 0)")
    p.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    p.add_argument("-o", "--out", required=True, help="PNG file to write")
    COMMANDS["render"] = _cmd_render
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.command == "profile" and args.action == "show" and args.name is None:
        parser.error("profile show needs a name: " + ", ".join(PROFILE_NAMES))
    try:
        return COMMANDS[args.command](args) or 0
    except KeyboardInterrupt:
        print("diffchat: interrupted; finished stages and cached work are kept", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, RuntimeError, OSError) as err:
        print(f"diffchat {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
