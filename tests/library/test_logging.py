from __future__ import annotations

import json
import logging

from codeprm.serving.logging import JsonFormatter


def test_log_lines_are_json_with_extra_fields() -> None:
    record = logging.LogRecord("codeprm.x", logging.WARNING, __file__, 1, "ran %d", (3,), None)
    record.request_id = "abc"
    line = json.loads(JsonFormatter("executor").format(record))
    assert line["msg"] == "ran 3"
    assert line["level"] == "warning"
    assert line["service"] == "executor"
    assert line["request_id"] == "abc"
    assert line["ts"].endswith("Z")


def test_exceptions_are_logged_in_one_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    text = JsonFormatter("svc").format(record)
    assert "\n" not in text
    assert "ValueError: boom" in json.loads(text)["exc"]
