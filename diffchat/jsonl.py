"""Append-only JSONL files that survive a crash: the format of every resumable cache.

Teacher answers, PB outputs and reward labels are appended while a long run goes on, and the
run may be killed at any moment. So each append is flushed and fsync'd; a torn last line (a
crash mid-write) is cut off, with a warning, when the file is opened for appending; and a bad
line anywhere else is an error naming the file and the line, because it means the file was
edited or damaged, and skipping it silently would hide lost work.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class JsonlError(ValueError):
    """A line of a JSONL file that is not a complete row (and not a torn last line)."""


def _row(path: Path, number: int, line: bytes, required: Sequence[str]) -> dict[str, Any]:
    """The row on one line; JsonlError naming the file and line when it is not one."""
    try:
        row = json.loads(line.decode("utf-8"))
    except ValueError as err:  # both UnicodeDecodeError and JSONDecodeError
        raise JsonlError(f"{path}, line {number}: not JSON ({err})") from err
    if not isinstance(row, dict):
        raise JsonlError(f"{path}, line {number}: not a JSON object")
    for field in required:
        if field not in row:
            raise JsonlError(f"{path}, line {number}: missing field {field!r}")
    return row


def _load(path: Path, required: Sequence[str]) -> tuple[list[dict[str, Any]], bytes, bool]:
    """(rows, the unterminated tail, whether the tail is torn) of the file at ``path``."""
    if not path.exists():
        return [], b"", False
    *lines, tail = path.read_bytes().split(b"\n")
    rows = [_row(path, n, line, required) for n, line in enumerate(lines, 1) if line.strip()]
    if not tail.strip():
        return rows, tail, False
    try:
        json.loads(tail.decode("utf-8"))
    except ValueError:
        return rows, tail, True  # a crash mid-write
    # A complete row that only lacks its newline is kept (and still checked).
    rows.append(_row(path, len(lines) + 1, tail, required))
    return rows, tail, False


def read_rows(path: str | os.PathLike, required: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The rows of a JSONL file, [] when there is none; the file is not changed.

    A torn last line is left out with a warning (a writer may still be finishing it).
    ``required``: fields every row must have.
    """
    path = Path(path)
    rows, _, torn = _load(path, required)
    if torn:
        log.warning("%s: ignoring a partial last line (an interrupted write)", path)
    return rows


class JsonlLog:
    """An append-only JSONL file: the rows it held when opened, and ``append`` for new ones.

    Opening repairs a crashed writer's tail so that appending starts on a clean line. The
    file is created on the first append and kept open until ``close``; appends from several
    threads are serialised.
    """

    def __init__(self, path: str | os.PathLike, required: Sequence[str] = ()) -> None:
        self.path = Path(path)
        self.required = tuple(required)
        self.rows, tail, torn = _load(self.path, self.required)
        if torn:
            log.warning("%s: cutting off a partial last line (an interrupted write)", self.path)
            with open(self.path, "r+b") as f:
                f.truncate(self.path.stat().st_size - len(tail))
        elif tail.strip():
            with open(self.path, "ab") as f:
                f.write(b"\n")
        self._file: Any = None
        self._lock = threading.Lock()

    def append(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Write rows at the end of the file, then flush and fsync: on disk when this returns."""
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        with self._lock:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = open(self.path, "a", encoding="utf-8")
            self._file.write(text)
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def __enter__(self) -> JsonlLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
