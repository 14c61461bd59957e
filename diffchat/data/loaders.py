"""Loaders for the real data sources, all returning the row dicts the pipeline uses (section 3.1).

- InstructPix2Pix's GPT-generated edit triplets: JSON lines `{"input", "edit", "output"}`.
- InstructPE as released in EasyNLP (`InstructPE_train.json`, `InstructPE_test.json`): rows of
  `source_prompt`, `instruction`, `beautified_source_prompt`, `beautified_target_prompt`. Whether
  the released file is one JSON array or JSON lines is not documented, so both are read.
- <simplified, high-quality> prompt pairs: JSON lines `{"simplified", "prompt"}`.

Every loader checks each row and raises `DataFormatError` naming the file, the row (1-based line
for JSON lines, index for a JSON array) and the field, so a bad row in a 200k-row file is found
without a debugger.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

INSTRUCTPIX2PIX_FIELDS = ("input", "edit", "output")
INSTRUCTPE_FIELDS = (
    "source_prompt",
    "instruction",
    "beautified_source_prompt",
    "beautified_target_prompt",
)
PB_FIELDS = ("simplified", "prompt")
# Mini-world metadata that InstructPix2Pix rows lack (None there).
TRIPLET_METADATA = ("kind", "added", "removed")


class DataFormatError(ValueError):
    """A data file or row that does not have the expected layout."""


def detect_json_layout(path: str | Path) -> str:
    """'json-array' when the file's first non-blank character is '[', else 'jsonl'."""
    return _layout(_read_text(Path(path)))


def _layout(text: str) -> str:
    return "json-array" if text.lstrip().startswith("[") else "jsonl"


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{path}: not UTF-8 text (byte {exc.start})") from exc


def _records(path: Path, layout: str | None, allow_empty: bool = False) -> list[tuple[str, Any]]:
    """(where, value) for every row; `where` names the file and the row for error messages.
    ``layout`` None: the file's own (``detect_json_layout``).

    JSON lines are split on "\n" only: `str.splitlines` would also break inside a string at
    U+2028, U+0085 and other characters that JSON leaves unescaped.
    """
    text = _read_text(path)
    if layout is None:
        layout = _layout(text)
        logger.info("%s: reading as %s", path, layout)
    records: list[tuple[str, Any]] = []
    if layout == "json-array":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataFormatError(
                f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
            ) from exc
        if not isinstance(data, list):
            raise DataFormatError(f"{path}: expected a JSON array of rows, got {type(data).__name__}")
        records = [(f"{path}: row {index} (array index)", row) for index, row in enumerate(data)]
    else:
        for number, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataFormatError(
                    f"{path}: line {number}: invalid JSON at column {exc.colno}: {exc.msg}"
                ) from exc
            records.append((f"{path}: line {number}", value))
    if not records and not allow_empty:
        raise DataFormatError(f"{path}: no rows")
    return records


def _check_row(where: str, row: Any, fields: Iterable[str]) -> dict[str, Any]:
    """The row as a dict, after checking that each field is a non-empty string."""
    if not isinstance(row, Mapping):
        raise DataFormatError(f"{where}: expected a JSON object, got {type(row).__name__}")
    for name in fields:
        if name not in row:
            raise DataFormatError(f"{where}: missing field {name!r}")
        value = row[name]
        if not isinstance(value, str):
            raise DataFormatError(
                f"{where}: field {name!r} must be a string, got {type(value).__name__}"
            )
        if not value.strip():
            raise DataFormatError(f"{where}: field {name!r} is empty")
    return dict(row)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file of objects, blank lines skipped."""
    path = Path(path)
    return [_check_row(where, row, ()) for where, row in _records(path, "jsonl")]


def write_jsonl(rows: Iterable[Mapping[str, Any]], path: str | Path) -> Path:
    """One JSON object per line, UTF-8 as is (prompts carry non-ASCII text)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def _check_keywords(where: str, row: dict[str, Any]) -> dict[str, Any]:
    """Mini-world metadata when present, None when absent (InstructPix2Pix has none)."""
    kind = row.setdefault("kind", None)
    if kind is not None and not isinstance(kind, str):
        raise DataFormatError(f"{where}: field 'kind' must be a string or null")
    for name in ("added", "removed"):
        value = row.setdefault(name, None)
        if value is not None and not (
            isinstance(value, list) and all(isinstance(word, str) for word in value)
        ):
            raise DataFormatError(f"{where}: field {name!r} must be a list of strings or null")
    return row


def load_instructpix2pix_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Edit triplets (x_o, i, y_o); extra columns such as `caption` and `url` are kept."""
    path = Path(path)
    return [
        _check_keywords(where, _check_row(where, row, INSTRUCTPIX2PIX_FIELDS))
        for where, row in _records(path, "jsonl")
    ]


def load_instructpe_json(path: str | Path, allow_empty: bool = False) -> list[dict[str, Any]]:
    """InstructPE rows (x, i, y) from a JSON array or JSON lines; extra columns are kept.
    ``allow_empty``: a file without rows gives [] instead of an error."""
    return [_check_row(where, row, INSTRUCTPE_FIELDS)
            for where, row in _records(Path(path), None, allow_empty)]


def load_pb_pairs(path: str | Path) -> list[dict[str, Any]]:
    """<simplified, high-quality> prompt pairs for the PB model, from JSON lines."""
    path = Path(path)
    return [_check_row(where, row, PB_FIELDS) for where, row in _records(path, "jsonl")]


def save_instructpe(rows: Iterable[Mapping[str, Any]], path: str | Path) -> Path:
    """Write InstructPE with the released field names first, as a JSON array of one row a line."""
    path = Path(path)
    checked = []
    for index, row in enumerate(rows):
        row = _check_row(f"InstructPE row {index} to write to {path}", row, INSTRUCTPE_FIELDS)
        ordered = {name: row[name] for name in INSTRUCTPE_FIELDS}
        ordered.update((key, value) for key, value in row.items() if key not in ordered)
        checked.append(json.dumps(ordered, ensure_ascii=False))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("[\n" + ",\n".join(checked) + "\n]\n", encoding="utf-8")
    return path
