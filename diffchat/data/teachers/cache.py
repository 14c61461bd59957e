"""The teachers' answer cache: raw answers keyed by the request, resumable after a kill."""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class TeacherCache:
    """Append-only JSONL of raw teacher answers keyed by the request's hash.

    One line per answer, flushed and fsync'd as it is written, so a killed run loses at
    most the answer being written. A truncated last line (a crash mid-write) is cut off
    on load so the next append starts on a clean line.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._answers: dict[str, str] = {}
        self._lock = threading.Lock()
        self._file: Any = None
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            log.warning("%s: dropping a partial last line (an interrupted write)", self.path)
            with open(self.path, "r+b") as f:
                f.truncate(end)
        for n, line in enumerate(data[:end].decode("utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                self._answers[row["key"]] = row["answer"]
            except (json.JSONDecodeError, KeyError, TypeError):
                log.warning("%s line %d: not a cache row, skipped", self.path, n)

    def __len__(self) -> int:
        return len(self._answers)

    def __contains__(self, key: str) -> bool:
        return key in self._answers

    def get(self, key: str) -> str | None:
        return self._answers.get(key)

    def put(self, key: str, answer: str, teacher: str = "") -> None:
        line = json.dumps({"key": key, "teacher": teacher, "answer": answer}, ensure_ascii=False)
        with self._lock:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                # Kept open for the run: one write, flush and fsync per answer.
                self._file = open(self.path, "a", encoding="utf-8")
            self._file.write(line + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())
            self._answers[key] = answer

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
