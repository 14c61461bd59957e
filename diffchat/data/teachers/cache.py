"""The teachers' answer cache: raw answers keyed by the request, resumable after a kill."""

from __future__ import annotations

import os
from pathlib import Path

from diffchat.jsonl import JsonlLog


class TeacherCache:
    """Raw teacher answers keyed by the request's hash, one JSONL line per answer.

    Each answer is fsync'd as it is written, so a killed run loses at most the answer being
    written; a torn last line is cut off when the cache is opened (see ``diffchat.jsonl``).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._log = JsonlLog(self.path, required=("key", "answer"))
        self._answers: dict[str, str] = {row["key"]: row["answer"] for row in self._log.rows}

    def __len__(self) -> int:
        return len(self._answers)

    def __contains__(self, key: str) -> bool:
        return key in self._answers

    def get(self, key: str) -> str | None:
        return self._answers.get(key)

    def put(self, key: str, answer: str, teacher: str = "") -> None:
        self._log.append([{"key": key, "teacher": teacher, "answer": answer}])
        self._answers[key] = answer

    def close(self) -> None:
        self._log.close()
