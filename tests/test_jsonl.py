"""The append-only JSONL helper behind every resumable cache (teacher, PB outputs, labels)."""

from __future__ import annotations

import logging

import pytest

from diffchat.jsonl import JsonlError, JsonlLog, read_rows


def test_reopen_reads_what_was_written(tmp_path):
    path = tmp_path / "sub" / "log.jsonl"
    with JsonlLog(path) as log:
        assert log.rows == [] and not path.exists()  # created on the first append
        log.append([{"k": 1, "text": "café"}])
        log.append([{"k": 2}, {"k": 3}])
    assert JsonlLog(path).rows == read_rows(path) == [{"k": 1, "text": "café"}, {"k": 2}, {"k": 3}]
    assert read_rows(tmp_path / "missing.jsonl") == []


def test_torn_tail_is_cut_off_and_appending_continues_on_a_clean_line(tmp_path, caplog):
    path = tmp_path / "log.jsonl"
    path.write_text('{"k": 1}\n{"k": 2}\n{"k": 3, "te')  # a crash in the middle of a write
    with caplog.at_level(logging.WARNING):
        assert read_rows(path) == [{"k": 1}, {"k": 2}]
    assert "partial last line" in caplog.text
    assert path.read_text().endswith('"te')  # reading alone changes nothing
    caplog.clear()
    with caplog.at_level(logging.WARNING), JsonlLog(path) as log:
        assert log.rows == [{"k": 1}, {"k": 2}]
        assert path.read_text() == '{"k": 1}\n{"k": 2}\n'
        log.append([{"k": 3}])
    assert "partial last line" in caplog.text and str(path) in caplog.text
    assert read_rows(path) == [{"k": 1}, {"k": 2}, {"k": 3}]


def test_a_complete_last_row_without_its_newline_is_kept(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"k": 1}\n{"k": 2}')
    with JsonlLog(path) as log:
        assert log.rows == [{"k": 1}, {"k": 2}]
        log.append([{"k": 3}])
    assert path.read_text().splitlines() == ['{"k": 1}', '{"k": 2}', '{"k": 3}']


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"k": 1}\nnonsense\n{"k": 3}\n', "line 2: not JSON"),
        ('{"k": 1}\n\n[1, 2]\n', "line 3: not a JSON object"),
        ('{"k": 1}\n{"j": 2}\n', "line 2: missing field 'k'"),
        ('{"k": 1}\n{"j": 2}', "line 2: missing field 'k'"),  # complete, so not a torn tail
    ],
)
def test_a_bad_line_is_an_error_naming_the_file_and_line(tmp_path, text, message):
    path = tmp_path / "log.jsonl"
    path.write_text(text)
    for open_ in (read_rows, JsonlLog):
        with pytest.raises(JsonlError, match=message) as err:
            open_(path, required=("k",))
        assert str(path) in str(err.value)
    assert path.read_text() == text  # left as it was, for a person to look at
