"""Teacher LLMs: the role ChatGPT plays in section 3.1 (appendix A.2, A.3).

The paper asks ChatGPT twice: to summarise high-quality drawing prompts into simplified
user-friendly ones (Fig. 9; the PB pairs), and, given one beautified prompt and an
instruction, to write the other one (Fig. 10; template T_A: given x and i write y,
template T_B: given y and i write x). ``prompts`` builds those requests; ``backends``
holds the three interchangeable teachers that answer them (OpenAI-compatible endpoint,
local transformers model, mini-world rules).

Asking a teacher is slow or costs money, and a run over a dataset gets interrupted. So
every raw answer is appended to a ``TeacherCache`` (JSONL, fsync'd per answer) keyed by
the request, and ``ask_many`` skips what is cached: a rerun resumes where the last one
stopped. A request that keeps failing is recorded in ``failures.jsonl`` and skipped; an
endpoint that refuses everything (a rejected key, a wrong URL) stops the run, and so does an
OpenAI-compatible endpoint that fails its first ``Teacher.give_up_after`` requests without a
single answer (a dead server, a proxy's login page): each failure there costs the SDK's
retries, many minutes over a dataset.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from diffchat.data.teachers.backends import (
    LocalTeacher,
    OpenAITeacher,
    RuleTeacher,
    Teacher,
    TeacherConfigError,
    TeacherError,
    openai_endpoint,
    redact_url,
)
from diffchat.data.teachers.cache import TeacherCache
from diffchat.data.teachers.prompts import (
    TASKS,
    Messages,
    Request,
    clean_answer,
    pb_summary_messages,
    write_source_messages,
    write_target_messages,
)

__all__ = [
    "CACHE_FILE",
    "FAILURES_FILE",
    "RULE_TOUCH_UP",
    "TASKS",
    "LocalTeacher",
    "Messages",
    "OpenAITeacher",
    "Request",
    "RuleTeacher",
    "Teacher",
    "TeacherCache",
    "TeacherConfigError",
    "TeacherError",
    "ask_many",
    "clean_answer",
    "make_teacher",
    "pb_summary_messages",
    "redact_url",
    "teacher_identity",
    "write_source_messages",
    "write_target_messages",
]

log = logging.getLogger(__name__)

# The course's rule teacher touches up half the training targets it writes with one more quality
# tag (``miniworld.touch_up``): the SFT policy then keeps a choice at the prompt's end for PPO.
RULE_TOUCH_UP = 0.5
CACHE_FILE = "teacher_cache.jsonl"
FAILURES_FILE = "failures.jsonl"


def make_teacher(spec: str, cache_dir: str | os.PathLike | None = None) -> Teacher:
    """The teacher a profile names: 'rule', 'openai' (from the environment), or a model.

    Any other spec is a hub id or a local folder of a chat model. With ``cache_dir``,
    answers are cached in ``cache_dir/teacher_cache.jsonl``.
    """
    cache = TeacherCache(Path(cache_dir) / CACHE_FILE) if cache_dir is not None else None
    if spec == "rule":
        return RuleTeacher(cache, touch_up=RULE_TOUCH_UP)
    if spec == "openai":
        return OpenAITeacher(cache=cache)
    return LocalTeacher(spec, cache=cache)


def teacher_identity(spec: str) -> str:
    """What a stage's key records for a teacher spec. 'openai' alone does not say which model
    answers: it is the endpoint and model the environment picks (``openai_endpoint``), as in
    ``OpenAITeacher.name``, so that pointing DIFFCHAT_TEACHER_MODEL or the base URL elsewhere
    rebuilds the stages the teacher wrote. Credentials in the URL are redacted (``redact_url``)
    to a hash, so the key still changes with them. The rule teacher's key carries its touch-up
    rate. Any other spec names its teacher already."""
    if spec == "openai":
        url, model = openai_endpoint()
        return f"openai:{model}@{redact_url(url)}"
    if spec == "rule" and RULE_TOUCH_UP:
        return f"rule+touch_up={RULE_TOUCH_UP}"
    return spec


def ask_many(
    teacher: Teacher,
    requests: Sequence[Request],
    *,
    workers: int = 1,
    failures_path: str | os.PathLike | None = None,
    progress: bool = True,
    desc: str = "teacher",
    give_up_after: int | None = None,
) -> list[str | None]:
    """Answers for many requests, in order; None where a request failed.

    Cached requests cost nothing, so an interrupted run resumes where it stopped.
    Failures are appended to ``failures_path`` (default: ``failures.jsonl`` next to the
    teacher's cache) and skipped; a ``TeacherConfigError`` stops the run, as do
    ``give_up_after`` failures in a row before the backend answered any request (default:
    the teacher's ``give_up_after``; 0 or None there: never).
    ``workers`` sends several requests at once (worth it for a remote endpoint).
    """
    from tqdm.auto import tqdm

    if failures_path is None and teacher.cache is not None:
        failures_path = teacher.cache.path.parent / FAILURES_FILE
    size = max(1, teacher.batch_size)
    chunks = [range(s, min(s + size, len(requests))) for s in range(0, len(requests), size)]
    answers: list[str | None] = [None] * len(requests)
    failed: list[dict[str, str]] = []
    give_up_after = give_up_after if give_up_after is not None else teacher.give_up_after
    cached = {j for j, r in enumerate(requests) if teacher.cache is not None and teacher.key(r) in teacher.cache}
    fresh = {"failed": 0, "answered": 0}  # the backend's results (not the cache's) so far
    bar = tqdm(total=len(requests), desc=desc, disable=not progress)

    def record(chunk: range, results: list[str | TeacherError]) -> None:
        for j, result in zip(chunk, results, strict=True):
            if j not in cached:
                fresh["failed" if isinstance(result, TeacherError) else "answered"] += 1
            if isinstance(result, TeacherError):
                r = requests[j]
                failed.append(
                    {
                        "task": r.task,
                        "text": r.text,
                        "instruction": r.instruction,
                        "teacher": teacher.name,
                        "error": str(result),
                    }
                )
            else:
                answers[j] = result
        bar.update(len(chunk))
        if failed:
            bar.set_postfix(failed=len(failed))
        if give_up_after and not fresh["answered"] and fresh["failed"] >= give_up_after:
            raise TeacherConfigError(
                f"{teacher.name}: the first {fresh['failed']} requests all failed, stopping "
                f"instead of trying {len(requests)} (last error: {failed[-1]['error']}); "
                "check the teacher's endpoint and model")

    try:
        if workers <= 1:
            for chunk in chunks:
                record(chunk, teacher.ask_batch([requests[j] for j in chunk]))
        else:
            with ThreadPoolExecutor(workers) as pool:
                futures = {
                    pool.submit(teacher.ask_batch, [requests[j] for j in chunk]): chunk
                    for chunk in chunks
                }
                try:
                    for future in as_completed(futures):
                        record(futures[future], future.result())
                except BaseException:
                    for future in futures:
                        future.cancel()
                    raise
    finally:
        bar.close()
        if failed and failures_path is not None:
            path = Path(failures_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as f:
                for row in failed:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
    if failed:
        where = f"; see {failures_path}" if failures_path is not None else ""
        log.warning(
            "%d of %d teacher requests failed and were skipped%s", len(failed), len(requests), where
        )
    return answers
