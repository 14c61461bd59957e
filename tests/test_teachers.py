"""Teachers (section 3.1): prompts, cache and resume, the OpenAI wire format, local and rule teachers.

The OpenAI-compatible teacher (the openai SDK) talks to an in-process HTTP server on 127.0.0.1
that speaks the chat-completions format; nothing leaves the machine.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from chat_server import ChatServer, prompt_of

from diffchat.data.teachers import (
    FAILURES_FILE,
    RULE_TOUCH_UP,
    LocalTeacher,
    OpenAITeacher,
    Request,
    RuleTeacher,
    Teacher,
    TeacherCache,
    TeacherConfigError,
    TeacherError,
    ask_many,
    clean_answer,
    make_teacher,
    pb_summary_messages,
    write_source_messages,
    write_target_messages,
)

KEY = "sk-test-secret-0123456789"


# --------------------------------------------------------------------------------------
# The chat-completions server on loopback (tests/chat_server.py)
# --------------------------------------------------------------------------------------


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with ChatServer() as srv:
        yield srv


def fast(srv: ChatServer, **kw) -> OpenAITeacher:
    return OpenAITeacher(base_url=srv.url, model="test-model", api_key=KEY, timeout=10, **kw)


def ok(content: str) -> tuple[int, dict, dict]:
    return 200, {"choices": [{"message": {"role": "assistant", "content": content}}]}, {}


# --------------------------------------------------------------------------------------
# Prompts and answer cleaning
# --------------------------------------------------------------------------------------


def test_message_builders_put_the_inputs_last_after_one_example():
    for messages, needles in [
        (pb_summary_messages("a castle, 8k, trending on artstation"), ["a castle, 8k"]),
        (
            write_target_messages("a red car, oil painting", "make it blue"),
            ["a red car", "make it blue"],
        ),
        (
            write_source_messages("a blue car, oil painting", "make it blue"),
            ["a blue car", "make it blue"],
        ),
    ]:
        assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
        assert all(n in messages[-1]["content"] for n in needles)
        assert not any(n in messages[1]["content"] for n in needles)  # the few-shot example
    # T_A and T_B share the example in opposite directions.
    ta, tb = write_target_messages("x", "i"), write_source_messages("y", "i")
    assert ta[2]["content"] in tb[1]["content"] and tb[2]["content"] in ta[1]["content"]
    assert Request("write_source", "y", "i").messages == tb
    with pytest.raises(ValueError, match="unknown teacher task"):
        Request("translate", "x")


@pytest.mark.parametrize(
    "raw, clean",
    [
        ("a cat", "a cat"),
        ('Output: "a cat, highly detailed"', "a cat, highly detailed"),
        ("\u201ca cat\u201d\nExplanation: I removed the tags.", "a cat"),
        ("Here is the simplified prompt:\n\n**a cat on a sofa**", "a cat on a sofa"),
        ("```\nSimplified prompt: a cat\n```", "a cat"),
        ("  \n", ""),
    ],
)
def test_clean_answer(raw, clean):
    assert clean_answer(raw) == clean


# --------------------------------------------------------------------------------------
# Cache, resume after a kill, failures
# --------------------------------------------------------------------------------------


class EchoTeacher(Teacher):
    """Answers 'ANSWER <prompt>'; raises KeyboardInterrupt (a kill) after ``die_after`` calls."""

    name = "echo"

    def __init__(self, cache=None, die_after: int | None = None) -> None:
        super().__init__(cache)
        self.die_after = die_after
        self.backend_calls: list[str] = []

    def complete(self, messages):
        if self.die_after is not None and len(self.backend_calls) >= self.die_after:
            raise KeyboardInterrupt
        prompt = prompt_of(messages)
        self.backend_calls.append(prompt)
        return f"ANSWER {prompt}"


def requests_(n: int) -> list[Request]:
    return [
        Request("write_target", f"prompt {k}, highly detailed", "make it blue") for k in range(n)
    ]


def test_interrupted_run_resumes_without_re_asking(tmp_path):
    reqs = requests_(12)
    expected = ask_many(EchoTeacher(), reqs, progress=False)

    first = EchoTeacher(TeacherCache(tmp_path / "cache.jsonl"), die_after=5)
    with pytest.raises(KeyboardInterrupt):
        ask_many(first, reqs, progress=False)
    assert len(first.backend_calls) == 5

    again = EchoTeacher(TeacherCache(tmp_path / "cache.jsonl"))
    assert ask_many(again, reqs, progress=False) == expected
    assert again.calls == len(again.backend_calls) == 12 - 5
    asked_before = set(first.backend_calls)
    assert not asked_before & set(again.backend_calls)  # no cached request asked again

    third = EchoTeacher(TeacherCache(tmp_path / "cache.jsonl"))
    assert ask_many(third, reqs, progress=False) == expected
    assert third.calls == 0
    # The same request under other settings (here another teacher name) is a new key.
    other = EchoTeacher(TeacherCache(tmp_path / "cache.jsonl"))
    other.name = "echo-2"
    other.summarise("a cat")
    assert other.calls == 1


def test_cache_survives_a_truncated_last_line(tmp_path, caplog):
    path = tmp_path / "cache.jsonl"
    teacher = EchoTeacher(TeacherCache(path))
    teacher.summarise("a dog")
    teacher.summarise("a cat")
    teacher.cache.close()
    full = path.read_bytes()
    path.write_bytes(full[:-9])  # a crash in the middle of the second line

    with caplog.at_level(logging.WARNING):
        cache = TeacherCache(path)
    assert "partial last line" in caplog.text
    assert len(cache) == 1
    again = EchoTeacher(cache)
    assert again.summarise("a dog").startswith("ANSWER")
    assert again.summarise("a cat").startswith("ANSWER")
    assert again.calls == 1  # only the lost answer is asked again
    cache.close()
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 2 and {"key", "teacher", "answer"} <= set(rows[0])


def test_killed_process_leaves_a_resumable_cache(tmp_path):
    """SIGKILL a process mid-run: the rerun asks exactly the requests that had no answer."""
    script = tmp_path / "run.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_teachers import EchoTeacher, requests_
        from diffchat.data.teachers import TeacherCache, ask_many

        class Slow(EchoTeacher):
            def complete(self, messages):
                time.sleep(0.02)
                return super().complete(messages)

        ask_many(Slow(TeacherCache({str(tmp_path / "cache.jsonl")!r})), requests_(400),
                 progress=False)
    """)
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1]))
    proc = subprocess.Popen([sys.executable, str(script)], env=env)
    cache_path = tmp_path / "cache.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if cache_path.exists() and cache_path.read_bytes().count(b"\n") >= 10:
            break
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL

    cache = TeacherCache(cache_path)
    done = len(cache)
    assert 10 <= done < 400
    teacher = EchoTeacher(cache)
    answers = ask_many(teacher, requests_(400), progress=False)
    assert teacher.calls == 400 - done
    assert answers == ask_many(EchoTeacher(), requests_(400), progress=False)


def test_failures_are_recorded_and_skipped(tmp_path):
    class Picky(EchoTeacher):
        def complete(self, messages):
            if "prompt 3," in messages[-1]["content"]:
                raise TeacherError("no answer for prompt 3")
            if "prompt 5," in messages[-1]["content"]:
                return "Output:"  # nothing usable
            return super().complete(messages)

    teacher = Picky(TeacherCache(tmp_path / "cache.jsonl"))
    teacher.batch_size = 3  # chunks of 3, the last one short
    answers = ask_many(teacher, requests_(8), progress=False)
    assert answers[3] is None and answers[5] is None
    assert sum(a is not None for a in answers) == 6
    rows = [json.loads(line) for line in (tmp_path / FAILURES_FILE).read_text().splitlines()]
    assert [r["text"] for r in rows] == ["prompt 3, highly detailed", "prompt 5, highly detailed"]
    assert "no answer for prompt 3" in rows[0]["error"]
    assert {"task", "instruction", "teacher", "error"} <= set(rows[0])
    with pytest.raises(TeacherError):
        teacher.write_target("prompt 3, highly detailed", "make it blue")


# --------------------------------------------------------------------------------------
# OpenAI-compatible teacher against the loopback server
# --------------------------------------------------------------------------------------


def test_openai_request_shape_and_env(server, monkeypatch):
    monkeypatch.setenv("DIFFCHAT_TEACHER_BASE_URL", server.url + "/")
    monkeypatch.setenv("DIFFCHAT_TEACHER_MODEL", "my-model")
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    teacher = make_teacher("openai", None)
    assert isinstance(teacher, OpenAITeacher)
    assert teacher.summarise("a castle, 8k") == "a castle, 8k"

    (req,) = server.requests
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["Authorization"] == f"Bearer {KEY}"
    assert req["headers"]["Content-Type"] == "application/json"
    body = req["body"]
    assert body["model"] == "my-model"
    assert body["messages"] == pb_summary_messages("a castle, 8k")
    assert body["temperature"] == teacher.temperature and body["max_tokens"] == 128
    assert KEY not in repr(teacher) and "my-model" in repr(teacher)


def test_openai_env_fallbacks(monkeypatch):
    for var in (
        "DIFFCHAT_TEACHER_BASE_URL",
        "OPENAI_BASE_URL",
        "DIFFCHAT_TEACHER_MODEL",
        "OPENAI_API_KEY",
    ):
        monkeypatch.delenv(var, raising=False)
    teacher = OpenAITeacher()
    assert teacher.url == "https://api.openai.com/v1/chat/completions"
    assert teacher.model == "gpt-3.5-turbo"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:11434/v1")
    assert OpenAITeacher().base_url == "http://127.0.0.1:11434/v1"


def test_openai_without_a_key_sends_no_auth_header(server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    teacher = OpenAITeacher(base_url=server.url, model="llama3")
    teacher.write_source("a blue car", "make it blue")
    assert "Authorization" not in server.requests[0]["headers"]


@pytest.mark.parametrize("status", [429, 500, 503])
def test_openai_retries_transient_errors(server, status):
    server.script = [(status, {"error": {"message": "busy"}}, {}), ok("a calm lake, 8k")]
    teacher = fast(server)
    assert teacher.write_target("a lake", "make it calm") == "a calm lake, 8k"
    assert len(server.requests) == 2
    assert server.requests[0]["body"] == server.requests[1]["body"]
    assert teacher.calls == 1


def test_openai_honours_retry_after(server):
    server.script = [
        (429, {"error": {"message": "slow down"}}, {"Retry-After": "0.3"}),
        ok("a dog"),
    ]
    start = time.monotonic()
    assert fast(server).summarise("a dog, 8k") == "a dog"
    assert time.monotonic() - start >= 0.3


def test_openai_backoff_is_exponential_and_gives_up(server, monkeypatch):
    sleeps: list[float] = []
    monkeypatch.setattr(time, "sleep", sleeps.append)  # the SDK's waits between attempts
    server.script = [(500, "oops", {})] * 4
    teacher = fast(server, max_retries=3)
    with pytest.raises(TeacherError, match="gave up after 4 attempts") as err:
        teacher.summarise("a dog")
    assert server.url in str(err.value) and "HTTP 500" in str(err.value)
    # Each wait doubles, give or take the SDK's jitter (up to 25% off).
    assert len(sleeps) == 3
    assert all(2 * 0.75 <= later / earlier <= 2 / 0.75 for earlier, later in zip(sleeps, sleeps[1:]))
    assert len(server.requests) == 4


def test_openai_rejected_key_is_a_clear_fatal_error(server, caplog, capsys):
    message = {"error": {"message": f"Incorrect API key provided: {KEY}"}}
    server.script = [(401, message, {})] * 3
    teacher = fast(server)
    with caplog.at_level(logging.DEBUG), pytest.raises(TeacherConfigError) as err:
        teacher.summarise("a dog")
    text = str(err.value)
    assert f"{server.url}/chat/completions" in text and "key was rejected" in text
    assert len(server.requests) == 1  # no retry
    # ask_many stops on it rather than recording every request as a failure.
    with pytest.raises(TeacherConfigError):
        ask_many(teacher, requests_(3), progress=False)
    assert len(server.requests) == 2
    out = capsys.readouterr()
    assert KEY not in text + caplog.text + out.out + out.err + repr(teacher)


def test_openai_wrong_model_or_url_stops_the_run(server):
    server.script = [(404, {"error": {"message": "model 'nope' not found"}}, {})]
    with pytest.raises(TeacherConfigError, match="HTTP 404.*'test-model'.*model 'nope' not found"):
        fast(server).summarise("a dog")
    assert len(server.requests) == 1


def test_openai_malformed_answer_is_a_failure(server):
    server.script = [(200, "<html>proxy login</html>", {}), (200, {"choices": []}, {})]
    teacher = fast(server)
    for _ in range(2):
        with pytest.raises(TeacherError, match="not a chat-completions answer"):
            teacher.summarise("a dog")
    assert len(server.requests) == 2


@pytest.mark.parametrize(
    "header, seconds",
    [
        ("2", 2.0),
        ("0.25", 0.25),
        ("-3", None),  # None: not a usable wait, so the SDK's own backoff
        ("soon", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", None),
    ],
)
def test_retry_after_header(server, monkeypatch, header, seconds):
    sleeps: list[float] = []
    monkeypatch.setattr(time, "sleep", sleeps.append)
    server.script = [(429, {"error": {"message": "slow down"}}, {"Retry-After": header}), ok("a")]
    assert fast(server).summarise("a, 8k") == "a"
    (slept,) = sleeps
    if seconds is None:
        assert 0 < slept <= 1.0
    else:
        assert slept == seconds


def test_retry_after_beyond_the_sdk_limit_fails_the_request(server, monkeypatch):
    """The SDK does not wait minutes for a server: the request fails at once and is skipped."""
    sleeps: list[float] = []
    monkeypatch.setattr(time, "sleep", sleeps.append)
    server.script = [(429, {"error": {"message": "come back tomorrow"}}, {"Retry-After": "99999"})]
    with pytest.raises(TeacherError, match="HTTP 429.*come back tomorrow"):
        fast(server).summarise("a dog")
    assert sleeps == [] and len(server.requests) == 1


def test_openai_bad_request_is_skipped_and_secret_redacted(server, tmp_path):
    server.script = [
        ok("first"),
        (400, {"error": {"message": f"too long; key {KEY}"}}, {}),
        ok("third"),
    ]
    teacher = fast(server, cache=TeacherCache(tmp_path / "cache.jsonl"))
    assert ask_many(teacher, requests_(3), progress=False) == ["first", None, "third"]
    assert len(server.requests) == 3  # a 400 is not retried
    failures = (tmp_path / FAILURES_FILE).read_text()
    assert "HTTP 400" in failures and KEY not in failures


def test_openai_unreachable_server_is_a_failure_naming_the_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    teacher = OpenAITeacher(
        base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=1, timeout=5
    )
    with pytest.raises(TeacherError, match=f"127.0.0.1:{port}/v1/chat/completions"):
        teacher.summarise("a dog")


def test_openai_concurrent_workers_keep_order_and_cache(server, tmp_path):
    reqs = requests_(20)
    teacher = fast(server, cache=TeacherCache(tmp_path / "cache.jsonl"))
    answers = ask_many(teacher, reqs, workers=4, progress=False)
    assert answers == [r.text for r in reqs]
    assert len(server.requests) == 20
    again = fast(server, cache=TeacherCache(tmp_path / "cache.jsonl"))
    assert ask_many(again, reqs, workers=4, progress=False) == answers
    assert again.calls == 0 and len(server.requests) == 20


# --------------------------------------------------------------------------------------
# Local transformers teacher (a tiny random chat model built here)
# --------------------------------------------------------------------------------------

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def tiny_chat_model(tmp_path_factory):
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("tiny-chat")
    specials = ["<pad>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    texts = [
        m["content"] for m in pb_summary_messages("a castle") + write_target_messages("x", "i")
    ]
    bpe.train_from_iterator(
        texts * 4,
        trainers.BpeTrainer(
            vocab_size=400,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", eos_token="<|im_end|>")
    tok.chat_template = CHATML
    tok.save_pretrained(path)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=bpe.get_vocab_size(),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=None,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    return path


def test_local_teacher_is_deterministic_and_caches(tiny_chat_model, tmp_path):
    teacher = LocalTeacher(tiny_chat_model, max_new_tokens=12, device="cpu")
    raw = teacher.complete(pb_summary_messages("a castle, 8k"))
    assert isinstance(raw, str)
    reqs = [
        Request("summarise", "a castle, 8k"),
        Request("write_target", "a car", "make it red"),
        Request("write_source", "a red car", "make it red"),
    ]
    first = teacher.ask_batch(reqs)
    assert all(isinstance(a, str | TeacherError) for a in first)

    cached = make_teacher(str(tiny_chat_model), tmp_path)
    assert isinstance(cached, LocalTeacher)
    cached.max_new_tokens, cached.device = 12, "cpu"
    answers = ask_many(cached, reqs, progress=False)
    assert [a if isinstance(a, str) else None for a in first] == answers
    assert cached.calls == 3
    again = make_teacher(str(tiny_chat_model), tmp_path)
    again.max_new_tokens = 12
    assert ask_many(again, reqs, progress=False) == answers
    assert again.calls == 0 and again._loaded is None  # cache hits never load the model


def test_local_teacher_needs_a_chat_template(tiny_chat_model, tmp_path):
    from transformers import AutoTokenizer

    plain = tmp_path / "plain"
    tok = AutoTokenizer.from_pretrained(tiny_chat_model)
    tok.chat_template = None
    tok.save_pretrained(plain)
    for name in ("config.json", "model.safetensors"):
        (plain / name).write_bytes((tiny_chat_model / name).read_bytes())
    with pytest.raises(TeacherConfigError, match="no chat template"):
        LocalTeacher(plain, device="cpu").summarise("a dog")


# --------------------------------------------------------------------------------------
# Rule teacher (tiny profile) and the factory
# --------------------------------------------------------------------------------------


def test_make_teacher_specs(tmp_path):
    assert isinstance(make_teacher("rule", None), RuleTeacher)
    teacher = make_teacher("rule", tmp_path)
    assert teacher.cache is not None and teacher.cache.path == tmp_path / "teacher_cache.jsonl"
    assert teacher.touch_up == RULE_TOUCH_UP > 0 and RuleTeacher().touch_up == 0
    assert isinstance(make_teacher("HuggingFaceTB/SmolLM2-135M-Instruct", None), LocalTeacher)


def test_rule_teacher_summary_recovers_the_simplified_prompts():
    from diffchat.data import miniworld

    teacher = RuleTeacher()
    pairs = miniworld.generate_pb_pairs(200, seed=0)
    assert ask_many(
        teacher, [Request("summarise", p["prompt"]) for p in pairs], progress=False
    ) == [p["simplified"] for p in pairs]
    assert teacher.summarise(
        "A portrait of a camel in a rainforest, oil painting, soft light, 8k"
    ) == ("a camel in a rainforest")
    # A prompt whose caption is not a mini-world caption cannot be summarised by rule.
    with pytest.raises(TeacherError, match="rule teacher cannot summarise"):
        teacher.summarise("zebras quietly contemplating quantum physics, 8k")


def test_rule_teacher_writes_targets_and_sources(tmp_path):
    x = "a teal elephant reading in a theater in snowy weather, oil painting, soft light, 8k"
    y = "a teal squirrel reading in a theater in snowy weather, oil painting, soft light, 8k"
    teacher = make_teacher("rule", tmp_path)
    teacher.touch_up = 0.0  # the rules alone (the touch-up: the next test)
    assert teacher.write_target(x, "swap the elephant for a squirrel") == y
    assert teacher.write_source(y, "swap the elephant for a squirrel") == x
    with pytest.raises(TeacherError, match="rule teacher cannot write target"):
        teacher.write_target(x, "make it sing")

    from diffchat.data import miniworld

    rows = miniworld.generate_triplets(200, seed=0)
    targets = ask_many(
        teacher, [Request("write_target", r["input"], r["edit"]) for r in rows], progress=False
    )
    assert targets == [r["output"] for r in rows]
    sources = ask_many(
        teacher, [Request("write_source", r["output"], r["edit"]) for r in rows], progress=False
    )
    assert all(s is None or s == r["input"] for s, r in zip(sources, rows, strict=True))
    undoable = [s is not None for s in sources]
    assert any(undoable) and not all(undoable)  # e.g. a removal cannot be undone from y and i
    failures = (tmp_path / FAILURES_FILE).read_text().splitlines()
    assert len(failures) == undoable.count(False)
    assert all("rule teacher cannot" in json.loads(line)["error"] for line in failures)


def test_rule_teacher_touches_up_about_half_its_training_targets(tmp_path):
    """One more quality tag, drawn per request (the same answer every time), on about
    RULE_TOUCH_UP of the targets; never on a source, nor on a held-out row's exact edit."""
    from diffchat.data import miniworld

    rows = miniworld.generate_triplets(400, seed=0)
    requests = [Request("write_target", r["input"], r["edit"]) for r in rows]
    teacher = make_teacher("rule", tmp_path)
    targets = ask_many(teacher, requests, progress=False)
    assert ask_many(make_teacher("rule", None), requests, progress=False) == targets
    added = []
    for target, row in zip(targets, rows, strict=True):
        assert target.startswith(row["output"])
        if target != row["output"]:
            tag = target.removeprefix(row["output"] + ", ")
            assert tag in miniworld.quality_tags() and tag not in row["output"].split(", ")
            added.append(tag)
    assert abs(len(added) / len(rows) - RULE_TOUCH_UP) < 0.08
    assert len(set(added)) > 20, "the tag is drawn from the whole list"
    assert teacher.key(requests[0]) != RuleTeacher().key(requests[0])
    held_out = [dataclasses.replace(q, raw_edit=(r["input"], r["output"])) for q, r in zip(requests, rows)]
    assert ask_many(teacher, held_out, progress=False) == [r["output"] for r in rows]
    sources = ask_many(teacher, [Request("write_source", r["output"], r["edit"]) for r in rows], progress=False)
    assert all(s is None or s == r["input"] for s, r in zip(sources, rows, strict=True))


def test_rule_teacher_repeats_the_raw_edit_it_is_given(tmp_path):
    """A removal cannot be undone from y and i; with the mini-world's raw edit it can."""
    teacher = make_teacher("rule", tmp_path)
    y, i = "a cat in a garden, oil painting, 8k", "remove the hat"
    raw = ("a cat with a red hat in a garden", "a cat in a garden")
    with pytest.raises(TeacherError, match="rule teacher cannot write source"):
        teacher.write_source(y, i)
    known = Request("write_source", y, i, raw_edit=raw)
    assert teacher.ask(known) == "a cat with a red hat in a garden, oil painting, 8k"
    assert teacher.key(known) != teacher.key(Request("write_source", y, i))
    assert known.messages == Request("write_source", y, i).messages, "LLM teachers never see it"
    # Rules come first: an edit they can apply is applied by rule, not copied.
    x = "a teal elephant in a theater, oil painting, 8k"
    swap = Request("write_target", x, "swap the elephant for a squirrel",
                   raw_edit=("a elephant", "a rabbit"))
    assert teacher.ask(swap) == "a teal squirrel in a theater, oil painting, 8k"


def test_the_endpoint_model_is_part_of_the_teacher_stages_keys(monkeypatch):
    """'openai' alone does not say which model answers: pointing DIFFCHAT_TEACHER_MODEL elsewhere
    must make InstructPE (and the evaluation that asks the teacher) stale; a named teacher's key
    does not read the endpoint's environment."""
    from diffchat.data.teachers import teacher_identity
    from diffchat.pipeline import COURSE
    from diffchat.profiles import get_profile

    profile = get_profile("tiny")
    monkeypatch.setenv("DIFFCHAT_TEACHER", "openai")
    monkeypatch.setenv("DIFFCHAT_TEACHER_BASE_URL", "http://127.0.0.1:9/v1/")
    monkeypatch.setenv("DIFFCHAT_TEACHER_MODEL", "model-a")
    first = {name: COURSE.key(name, profile)["config"]["teacher"] for name in ("instructpe", "eval")}
    assert first["instructpe"] == teacher_identity("openai") == OpenAITeacher().name == (
        "openai:model-a@http://127.0.0.1:9/v1")
    monkeypatch.setenv("DIFFCHAT_TEACHER_MODEL", "model-b")
    assert all(COURSE.key(name, profile)["config"]["teacher"] != first[name] for name in first)
    monkeypatch.setenv("DIFFCHAT_TEACHER", "rule")
    rule = COURSE.key("instructpe", profile)
    monkeypatch.setenv("DIFFCHAT_TEACHER_MODEL", "model-c")
    assert COURSE.key("instructpe", profile) == rule
    assert rule["config"]["teacher"] == teacher_identity("rule") == f"rule+touch_up={RULE_TOUCH_UP}"
