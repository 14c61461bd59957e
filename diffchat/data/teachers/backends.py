"""The teachers: a base class with the cache logic, and three interchangeable backends.

- ``OpenAITeacher``: any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM,
  Ollama, ...), configured from the environment;
- ``LocalTeacher``: a transformers chat model (the small profile's SmolLM2 instruct);
- ``RuleTeacher``: deterministic rules from the mini-world, for the tiny profile.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from diffchat.data.teachers.cache import TeacherCache
from diffchat.data.teachers.prompts import Messages, Request, clean_answer

if TYPE_CHECKING:
    import openai

log = logging.getLogger(__name__)


class TeacherError(RuntimeError):
    """One request could not be answered (after retries); ``ask_many`` records and skips it."""


class TeacherConfigError(TeacherError):
    """The endpoint refuses every request (rejected key, wrong URL or model): stop the run."""



class Teacher:
    """Base teacher: builds the messages, consults the cache, counts backend calls.

    Subclasses implement ``complete(messages) -> str`` (one chat completion), or override
    ``_answer``/``_answer_batch`` when they answer from the request itself or in batches.
    """

    name = "teacher"
    batch_size = 1  # requests per backend call in ``ask_many``
    # ``ask_many`` stops after this many failures in a row before any answer (None: never).
    give_up_after: int | None = None

    def __init__(self, cache: TeacherCache | None = None) -> None:
        self.cache = cache
        self.calls = 0  # requests sent to the backend (cache hits are free)
        self._calls_lock = threading.Lock()

    @property
    def params(self) -> dict[str, Any]:
        """Settings that change the answer; part of the cache key."""
        return {}

    def complete(self, messages: Messages) -> str:
        """One chat completion: the raw text of the assistant's answer."""
        raise NotImplementedError(f"{type(self).__name__} does not answer free-form messages")

    def key(self, request: Request) -> str:
        """Cache key: sha256 of the teacher, the messages and the settings."""
        blob = json.dumps(
            {"teacher": self.name, "messages": request.messages, "params": self.params},
            sort_keys=True,
            ensure_ascii=False,
        )
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def summarise(self, prompt: str) -> str:
        """Fig. 9: the simplified user-friendly prompt of a high-quality prompt."""
        return self.ask(Request("summarise", prompt))

    def write_target(self, x: str, instruction: str) -> str:
        """T_A: the target prompt y, given the input prompt x and the instruction."""
        return self.ask(Request("write_target", x, instruction))

    def write_source(self, y: str, instruction: str) -> str:
        """T_B: the input prompt x, given the target prompt y and the instruction."""
        return self.ask(Request("write_source", y, instruction))

    def ask(self, request: Request) -> str:
        """The cleaned answer to one request; raises ``TeacherError`` when there is none."""
        answer = self.ask_batch([request])[0]
        if isinstance(answer, TeacherError):
            raise answer
        return answer

    def ask_batch(self, requests: Sequence[Request]) -> list[str | TeacherError]:
        """Cleaned answers (or the error) for several requests; uncached ones in one batch."""
        keys = [self.key(r) for r in requests]
        raw: list[str | TeacherError | None] = [
            self.cache.get(k) if self.cache is not None else None for k in keys
        ]
        todo = [j for j, answer in enumerate(raw) if answer is None]
        if todo:
            with self._calls_lock:
                self.calls += len(todo)
            for j, answer in zip(
                todo, self._answer_batch([requests[j] for j in todo]), strict=True
            ):
                raw[j] = answer
                if isinstance(answer, str) and self.cache is not None:
                    self.cache.put(keys[j], answer, teacher=self.name)
        return [self._clean(r, a) for r, a in zip(requests, raw, strict=True)]

    def _clean(self, request: Request, raw: str | TeacherError | None) -> str | TeacherError:
        if isinstance(raw, TeacherError):
            return raw
        answer = clean_answer(raw or "")
        if not answer:
            return TeacherError(f"{self.name} gave no usable answer to a {request.task} request")
        return answer

    def _answer_batch(self, requests: Sequence[Request]) -> list[str | TeacherError]:
        out: list[str | TeacherError] = []
        for request in requests:
            try:
                out.append(self._answer(request))
            except TeacherConfigError:
                raise
            except TeacherError as err:
                out.append(err)
        return out

    def _answer(self, request: Request) -> str:
        return self.complete(request.messages)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


_DEFAULT_BASE_URL = "https://api.openai.com/v1"
_DEFAULT_MODEL = "gpt-3.5-turbo"  # ChatGPT, as in section 3.1
# The SDK refuses to start without a key; local servers need none, so the client gets this
# stand-in and the Authorization header is left out of every request.
_NO_KEY = "no-key"


# Query parameters whose values are credentials (api-key, token, sig, password, ...).
_SECRET_PARAM = re.compile(r"key|token|secret|pass|pwd|auth|sig|credential|session", re.IGNORECASE)


def _mask(secret: str) -> str:
    """A stand-in for a secret: tells two secrets apart (a stage key changes with the
    endpoint's credentials) without showing either."""
    return "redacted-" + hashlib.sha256(secret.encode("utf-8")).hexdigest()[:12]


def _is_secret(name: str, value: str) -> bool:
    return bool(value) and bool(_SECRET_PARAM.search(name))


def url_secrets(url: str) -> list[str]:
    """The credentials inside a URL, as written and decoded: the userinfo (user:password),
    the password alone, and the values of secret-looking query parameters."""
    parts = urlsplit(url)
    found = []
    if "@" in parts.netloc:
        found += [parts.netloc.rpartition("@")[0], parts.password or ""]
    for piece in parts.query.split("&"):
        name, _, value = piece.partition("=")
        if _is_secret(name, value):
            found += [value, unquote(value)]
    return sorted({f for f in found if f}, key=len, reverse=True)  # longest first, for replacing


class _SecretFilter(logging.Filter):
    """Masks known secrets in log records: the HTTP library under the SDK logs full URLs."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        for secret in sorted(self.secrets, key=len, reverse=True):
            message = message.replace(secret, "***")
        record.msg, record.args = message, ()
        return True


_SECRET_FILTER = _SecretFilter()


def hide_in_library_logs(secrets: Sequence[str]) -> None:
    """Mask ``secrets`` in what the openai SDK and its HTTP library (httpx, or the SDK's fork
    httpx2) log at INFO and DEBUG: the request URLs and options."""
    _SECRET_FILTER.secrets.update(s for s in secrets if s)
    for name in ("openai._base_client", "httpx", "httpx2"):
        logger = logging.getLogger(name)
        if _SECRET_FILTER not in logger.filters:
            logger.addFilter(_SECRET_FILTER)


def redact_url(url: str) -> str:
    """The URL as manifests, caches, failure rows, reprs and logs show it: the userinfo and
    the values of secret-looking query parameters are replaced by a short hash of
    themselves (``redacted-<sha256[:12]>``); a URL without credentials is unchanged."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        netloc = f"{_mask(userinfo)}@{host}"
    query = "&".join(
        f"{name}={_mask(value)}" if _is_secret(name, value) else piece
        for piece in parts.query.split("&") if piece
        for name, _, value in [piece.partition("=")]
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def openai_endpoint(base_url: str | None = None, model: str | None = None) -> tuple[str, str]:
    """(base URL, model) an ``OpenAITeacher`` talks to: the arguments, else the environment's
    ``DIFFCHAT_TEACHER_BASE_URL`` / ``OPENAI_BASE_URL`` and ``DIFFCHAT_TEACHER_MODEL``, else
    OpenAI's URL and gpt-3.5-turbo. The URL may carry credentials: show it with ``redact_url``."""
    url = (base_url or os.environ.get("DIFFCHAT_TEACHER_BASE_URL") or os.environ.get("OPENAI_BASE_URL")
           or _DEFAULT_BASE_URL)
    return url.rstrip("/"), model or os.environ.get("DIFFCHAT_TEACHER_MODEL") or _DEFAULT_MODEL


class OpenAITeacher(Teacher):
    """Any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, Ollama, LM Studio...).

    Defaults come from the environment: ``DIFFCHAT_TEACHER_BASE_URL`` (else
    ``OPENAI_BASE_URL``, else OpenAI), ``DIFFCHAT_TEACHER_MODEL`` (else gpt-3.5-turbo, the
    paper's ChatGPT) and ``OPENAI_API_KEY`` (may be empty for a local server). The key is
    sent only in the Authorization header; it never appears in reprs, logs or errors.
    Requests go through the official ``openai`` SDK, whose own settings apply: each attempt
    gets ``timeout`` seconds, and 408, 409, 429, 5xx and network errors are retried
    ``max_retries`` times with exponential backoff, honouring Retry-After. Credentials in the
    base URL (user:password@, ?api-key=) are sent, and shown only redacted (``redact_url``).
    An endpoint whose first ``give_up_after`` requests all fail stops ``ask_many``.
    """

    give_up_after = 3

    def __init__(
        self,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        *,
        temperature: float = 0.7,
        max_tokens: int | None = 128,
        timeout: float = 60,
        max_retries: int = 5,
        cache: TeacherCache | None = None,
    ) -> None:
        import openai

        super().__init__(cache)
        endpoint, self.model = openai_endpoint(base_url, model)
        self.base_url = redact_url(endpoint)  # what names, reprs, errors and logs show
        key = os.environ.get("OPENAI_API_KEY", "") if api_key is None else api_key
        self.temperature = temperature
        self.max_tokens = max_tokens  # None: not sent (newer OpenAI models reject the field)
        self.timeout = timeout
        self.max_retries = max_retries
        self._has_key = bool(key)
        self._secrets = sorted({key, *url_secrets(endpoint)} - {""}, key=len, reverse=True)
        hide_in_library_logs(self._secrets)
        # The SDK appends the path to the base URL as a string, after any query: the query
        # parameters (an Azure-style api-version or api-key) go in every request's query instead.
        parts = urlsplit(endpoint)
        self._url = redact_url(urlunsplit((parts.scheme, parts.netloc, parts.path + "/chat/completions",
                                           parts.query, "")))
        self._client = openai.OpenAI(
            base_url=urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")),
            default_query=dict(parse_qsl(parts.query, keep_blank_values=True)) or None,
            api_key=key or _NO_KEY,
            timeout=timeout,
            max_retries=max_retries,
        )
        self.name = f"openai:{self.model}@{self.base_url}"

    @property
    def url(self) -> str:
        """The chat-completions URL, credentials redacted (``redact_url``)."""
        return self._url

    @property
    def params(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "max_tokens": self.max_tokens}

    def __repr__(self) -> str:
        key = "set" if self._has_key else "none"
        return f"OpenAITeacher(base_url={self.base_url!r}, model={self.model!r}, api_key={key})"

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def complete(self, messages: Messages) -> str:
        import openai

        extra: dict[str, Any] = {}
        if self.max_tokens is not None:
            extra["max_tokens"] = self.max_tokens
        if not self._has_key:
            extra["extra_headers"] = {"Authorization": openai.Omit()}
        try:  # the raw body: the SDK's lenient parsing hands back whatever a proxy sends
            raw = self._client.chat.completions.with_raw_response.create(
                model=self.model, messages=messages, temperature=self.temperature, **extra
            )
        # `from None` throughout: the SDK's own errors may quote the key.
        except openai.APIStatusError as err:
            raise self._status_error(err) from None
        except openai.APIConnectionError as err:  # timeouts included
            cause = err.__cause__ or err
            problem = f"{type(cause).__name__}: {self._redact(str(cause))}"
            raise TeacherError(self._gave_up(err.request, problem)) from None
        return self._content(raw.text)

    def _content(self, body: str) -> str:
        """The assistant's text in a chat-completions body; ``TeacherError`` for anything else
        (a captive portal's HTML page, a JSON list or string, choices without a message)."""
        bad = f"{self.url}: not a chat-completions answer"
        try:
            data = json.loads(body)
        except ValueError:
            raise TeacherError(f"{bad} (not JSON: {self._redact(body[:80])!r})") from None
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list) or not choices:
            raise TeacherError(f"{bad} (no list of choices in a {type(data).__name__})")
        message = choices[0].get("message") if isinstance(choices[0], dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            raise TeacherError(f"{bad} (the first choice has no message text)")
        return content

    def _status_error(self, err: openai.APIStatusError) -> TeacherError:
        """Rejected key or wrong URL/model: stop the run; anything else: skip the request."""
        status = err.status_code
        problem = f"HTTP {status}: {self._redact(err.response.text[:300])}"
        if status in (401, 403):
            sent = "the API key was rejected" if self._has_key else "no API key was sent"
            return TeacherConfigError(
                f"{self.url}: {sent} (HTTP {status}); set OPENAI_API_KEY "
                "to a valid key for this endpoint"
            )
        if status == 404:
            return TeacherConfigError(
                f"{self.url}: not found (HTTP 404); check DIFFCHAT_TEACHER_BASE_URL "
                f"and the model name {self.model!r} ({problem})"
            )
        return TeacherError(self._gave_up(err.response.request, problem))

    def _gave_up(self, request: Any, problem: str) -> str:
        """The error message, with how often the SDK sent the request when it retried."""
        # The SDK numbers its retries in a request header.
        retries = request.headers.get("x-stainless-retry-count", "")
        attempts = int(retries) + 1 if retries.isdigit() else 1
        if attempts == 1:
            return f"{self.url}: {problem}"
        return f"{self.url}: gave up after {attempts} attempts ({problem})"


class LocalTeacher(Teacher):
    """A transformers chat model as the teacher (the small profile's SmolLM2 instruct).

    Greedy decoding, so answers are deterministic; requests are generated in left-padded
    batches of ``batch_size``. The model loads on first use, from a folder or a hub id
    (``diffchat.loading`` resolves SmolLM2 offline), on the device and precision it picks.
    """

    def __init__(
        self,
        model_name_or_path: str | os.PathLike,
        max_new_tokens: int = 96,
        device: str | None = None,
        *,
        batch_size: int = 8,
        cache: TeacherCache | None = None,
    ) -> None:
        super().__init__(cache)
        self.model_name_or_path = str(model_name_or_path)
        self.max_new_tokens = max_new_tokens
        self.device = device
        self.batch_size = batch_size
        self._loaded: tuple[Any, Any] | None = None
        self._load_lock = threading.Lock()
        self.name = f"local:{self.model_name_or_path}"

    @property
    def params(self) -> dict[str, Any]:
        return {"max_new_tokens": self.max_new_tokens, "decoding": "greedy"}

    def _load(self) -> tuple[Any, Any]:
        with self._load_lock:
            if self._loaded is None:
                from diffchat.loading import load_causal_lm, load_tokenizer

                tok = load_tokenizer(self.model_name_or_path)
                if not tok.chat_template:
                    raise TeacherConfigError(
                        f"{self.model_name_or_path} has no chat template; a teacher must be "
                        "an instruct (chat) model"
                    )
                tok.padding_side = "left"
                model = load_causal_lm(self.model_name_or_path, device=self.device).eval()
                log.info("teacher %s loaded on %s", self.model_name_or_path, model.device)
                self._loaded = (tok, model)
            return self._loaded

    def complete(self, messages: Messages) -> str:
        return self._generate([messages])[0]

    def _answer_batch(self, requests: Sequence[Request]) -> list[str | TeacherError]:
        return list(self._generate([r.messages for r in requests]))

    def _generate(self, conversations: list[Messages]) -> list[str]:
        import torch

        tok, model = self._load()
        texts = [
            tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True)
            for m in conversations
        ]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = enc.to(model.device)
        with torch.inference_mode():
            out = model.generate(
                **enc,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=tok.pad_token_id,
            )
        return tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)


class RuleTeacher(Teacher):
    """Deterministic offline teacher for the tiny profile, built on the mini-world's rules.

    T_A and T_B apply or invert the instruction with the mini-world's edit rules; the
    summary (Fig. 9) is ``miniworld.simplify_prompt``, the inverse of its beautification.

    The rules cannot undo every edit from y and i (a removal, "make it night" without the old
    time) and cannot read a prompt whose caption the PB model got wrong (an unseen subject
    spelt as a seen one). An LLM teacher would still answer those; so when the request carries
    the raw edit the mini-world made (``Request.raw_edit``), the rule teacher repeats that edit
    on the prompt (``miniworld.transfer_edit``). Without it (real data) a request the rules
    cannot answer is a ``TeacherError``, which ``ask_many`` records and skips.
    """

    name = "rule"

    def __init__(self, cache: TeacherCache | None = None, touch_up: float = 0.0) -> None:
        super().__init__(cache)
        # Share of the targets it writes for training rows (no raw edit) that get one more
        # quality tag (``miniworld.touch_up``); held-out targets stay the exact edit.
        self.touch_up = touch_up

    @property
    def params(self) -> dict[str, Any]:
        return {"touch_up": self.touch_up} if self.touch_up else {}

    def key(self, request: Request) -> str:
        """The request's key, and the raw edit's when there is one (the answer may use it)."""
        base = super().key(request)
        if request.raw_edit is None:
            return base
        blob = json.dumps([base, list(request.raw_edit)], ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def _answer(self, request: Request) -> str:
        from diffchat.data import miniworld

        if request.task == "summarise":
            answer = miniworld.simplify_prompt(request.text)
        elif request.task == "write_target":
            answer = miniworld.apply_instruction(request.text, request.instruction)
        else:
            answer = miniworld.invert_instruction(request.text, request.instruction)
        if not answer and request.raw_edit is not None and request.task != "summarise":
            x_o, y_o = request.raw_edit
            before, after = (x_o, y_o) if request.task == "write_target" else (y_o, x_o)
            answer = miniworld.transfer_edit(request.text, before, after)
        if not answer:
            raise TeacherError(
                f"rule teacher cannot {request.task.replace('_', ' ')} for "
                f"{request.text!r} with {request.instruction!r}"
            )
        if request.task == "write_target" and request.raw_edit is None and self.touch_up:
            answer = miniworld.touch_up(answer, f"{request.text}\n{request.instruction}", self.touch_up)
        return answer
