"""Loaders of the real sources: the released layouts, and errors that name file, row and field."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from diffchat.data.loaders import (
    INSTRUCTPE_FIELDS,
    DataFormatError,
    detect_json_layout,
    load_instructpe_json,
    load_instructpix2pix_jsonl,
    load_pb_pairs,
    read_jsonl,
    save_instructpe,
    write_jsonl,
)

FIXTURES = Path(__file__).parent / "fixtures"


def test_instructpix2pix_rows_keep_extras_and_lack_metadata():
    rows = load_instructpix2pix_jsonl(FIXTURES / "instructpix2pix_sample.jsonl")
    assert len(rows) == 4  # the blank line is skipped
    assert rows[0]["input"] == "A digital painting of a landscape"
    assert rows[0]["edit"] == "make it a painting"
    assert rows[0]["url"].startswith("https://")
    assert all(row["kind"] is None and row["added"] is None for row in rows)


def test_instructpix2pix_loader_reads_miniworld_metadata(tmp_path):
    row = {"input": "a cat", "edit": "add a hat", "output": "a cat with a hat",
           "kind": "add", "added": ["hat"], "removed": []}
    rows = load_instructpix2pix_jsonl(write_jsonl([row], tmp_path / "t.jsonl"))
    assert rows == [row]


@pytest.mark.parametrize(
    ("name", "layout"),
    [("instructpe_sample.json", "json-array"), ("instructpe_sample.jsonl", "jsonl")],
)
def test_instructpe_both_layouts_load_the_same_rows(name, layout, caplog):
    path = FIXTURES / name
    assert detect_json_layout(path) == layout
    with caplog.at_level(logging.INFO, logger="diffchat.data.loaders"):
        rows = load_instructpe_json(path)
    assert layout in caplog.text
    assert [row["instruction"] for row in rows] == [
        "make it a painting", "give him a crown", "make it snow"
    ]
    assert rows[1]["target_prompt"] == "a cute boy wearing a crown"  # extra column kept
    assert rows == load_instructpe_json(FIXTURES / "instructpe_sample.json")


def test_pb_pairs_load():
    rows = load_pb_pairs(FIXTURES / "pb_pairs_sample.jsonl")
    assert rows[0]["simplified"] == "a cute boy"
    assert rows[0]["prompt"].startswith("A portrait of an adorable cute boy")


def test_save_instructpe_round_trips_in_released_field_order(tmp_path):
    rows = load_instructpe_json(FIXTURES / "instructpe_sample.json")
    reordered = [dict(reversed(list(row.items()))) for row in rows]
    path = save_instructpe(reordered, tmp_path / "out" / "InstructPE_test.json")
    text = path.read_text(encoding="utf-8")
    assert "café" in text  # ensure_ascii=False
    data = json.loads(text)
    assert isinstance(data, list)
    assert list(data[1])[:4] == list(INSTRUCTPE_FIELDS)
    assert load_instructpe_json(path) == rows


def test_save_instructpe_rejects_a_bad_row(tmp_path):
    with pytest.raises(DataFormatError, match=r"row 1 .*'instruction'"):
        save_instructpe([
            {name: "x" for name in INSTRUCTPE_FIELDS},
            {"source_prompt": "a", "beautified_source_prompt": "b",
             "beautified_target_prompt": "c"},
        ], tmp_path / "x.json")


def test_write_and_read_jsonl(tmp_path):
    rows = [{"a": "é", "b": [1, 2]}, {"a": "x"}]
    path = write_jsonl(rows, tmp_path / "sub" / "rows.jsonl")
    assert "é" in path.read_text(encoding="utf-8")
    assert read_jsonl(path) == rows


GOOD_TRIPLET = {"input": "a cat", "edit": "add a hat", "output": "a cat with a hat"}
GOOD_PB = {"simplified": "a cat", "prompt": "a cat, 8k"}
GOOD_PE = {name: "a cat" for name in INSTRUCTPE_FIELDS}


def _jsonl(tmp_path: Path, lines: list[str], name: str = "bad.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


BAD_ROWS = [
    pytest.param("missing", "missing field", id="missing"),
    pytest.param(3, "must be a string, got int", id="wrong-type"),
    pytest.param("   ", "is empty", id="empty"),
]


@pytest.mark.parametrize(
    ("loader", "good", "field"),
    [
        (load_instructpix2pix_jsonl, GOOD_TRIPLET, "edit"),
        (load_pb_pairs, GOOD_PB, "prompt"),
        (load_instructpe_json, GOOD_PE, "beautified_target_prompt"),
    ],
)
@pytest.mark.parametrize(("value", "message"), BAD_ROWS)
def test_jsonl_bad_row_names_file_line_and_field(tmp_path, loader, good, field, value, message):
    bad = dict(good)
    if value == "missing":
        del bad[field]
    else:
        bad[field] = value
    path = _jsonl(tmp_path, [json.dumps(good), "", json.dumps(bad)])
    with pytest.raises(DataFormatError) as error:
        loader(path)
    text = str(error.value)
    assert str(path) in text and "line 3" in text and repr(field) in text and message in text


@pytest.mark.parametrize(
    "loader", [load_instructpix2pix_jsonl, load_pb_pairs, load_instructpe_json, read_jsonl]
)
def test_invalid_json_line_is_named(tmp_path, loader):
    path = _jsonl(tmp_path, [json.dumps(GOOD_PE | GOOD_PB | GOOD_TRIPLET), '{"input": "a cat",'])
    with pytest.raises(DataFormatError, match=r"bad\.jsonl: line 2: invalid JSON"):
        loader(path)


def test_row_that_is_not_an_object(tmp_path):
    path = _jsonl(tmp_path, [json.dumps(GOOD_PB), json.dumps(["a cat", "a cat, 8k"])])
    with pytest.raises(DataFormatError, match=r"line 2: expected a JSON object, got list"):
        load_pb_pairs(path)


def test_json_array_bad_row_names_index_and_field(tmp_path):
    bad = dict(GOOD_PE, instruction=None)
    path = tmp_path / "InstructPE_train.json"
    path.write_text(json.dumps([GOOD_PE, GOOD_PE, bad], indent=1), encoding="utf-8")
    with pytest.raises(DataFormatError) as error:
        load_instructpe_json(path)
    text = str(error.value)
    assert str(path) in text and "row 2 (array index)" in text and "'instruction'" in text
    assert "got NoneType" in text


def test_json_array_syntax_error_names_line(tmp_path):
    path = tmp_path / "InstructPE_test.json"
    path.write_text("[\n" + json.dumps(GOOD_PE) + ",\n{oops}\n]\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"InstructPE_test\.json: invalid JSON at line 3"):
        load_instructpe_json(path)


def test_pretty_printed_array_with_leading_blank_lines(tmp_path):
    path = tmp_path / "InstructPE_train.json"
    path.write_text("\n  " + json.dumps([GOOD_PE, GOOD_PE], indent=4), encoding="utf-8")
    assert detect_json_layout(path) == "json-array"
    assert load_instructpe_json(path) == [GOOD_PE, GOOD_PE]


@pytest.mark.parametrize("content", ["", "\n\n", "[]"])
def test_empty_file_is_an_error(tmp_path, content):
    path = tmp_path / "empty.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataFormatError, match="empty.json: no rows"):
        load_instructpe_json(path)


def test_non_utf8_file_is_named(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes('{"simplified": "caf\u00e9", "prompt": "x"}\n'.encode("latin-1"))
    with pytest.raises(DataFormatError, match=r"latin1\.jsonl: not UTF-8"):
        load_pb_pairs(path)


def test_hold_out_keeps_both_splits_non_empty():
    from diffchat.data.collect import hold_out

    rows = list(range(30))
    assert hold_out(rows, n_train=10, n_test=5, what="f") == (list(range(5, 15)), list(range(5)))
    # no more rows than the test split asks for: a tenth is held out, the rest trains
    assert hold_out(rows, n_train=5000, n_test=1000, what="f") == (list(range(3, 30)), [0, 1, 2])
    assert hold_out([0, 1], n_train=5000, n_test=1000, what="f") == ([1], [0])
    with pytest.raises(ValueError, match="pairs.jsonl: 1 row"):
        hold_out([0], n_train=5, n_test=5, what="pairs.jsonl")


def test_paper_data_stage_names_a_missing_file(tmp_path, monkeypatch):
    from diffchat import pipeline
    from diffchat.profiles import PAPER

    monkeypatch.setenv("DIFFCHAT_IP2P_JSONL", str(tmp_path / "absent.jsonl"))
    monkeypatch.setenv("DIFFCHAT_PB_PAIRS", str(FIXTURES / "pb_pairs_sample.jsonl"))
    with pytest.raises(FileNotFoundError, match=r"\$DIFFCHAT_IP2P_JSONL names .*absent.jsonl"):
        pipeline.run("data", PAPER, tmp_path / "runs")
    monkeypatch.delenv("DIFFCHAT_IP2P_JSONL")
    with pytest.raises(RuntimeError, match="set DIFFCHAT_IP2P_JSONL"):
        pipeline.run("data", PAPER, tmp_path / "runs")
