"""Structured logs: one JSON object a line, with the fields passed as ``extra``."""

from __future__ import annotations

import json
import logging

from knot_rt.logs import JsonFormatter


def test_json_lines_carry_level_logger_message_extras_and_exceptions() -> None:
    formatter = JsonFormatter()
    record = logging.makeLogRecord({
        "name": "actors.supervisor", "levelno": logging.ERROR, "levelname": "ERROR",
        "msg": "station %s restarted", "args": ("station:7",), "actor_kind": "station", "child_id": "station:7",
    })
    try:
        raise RuntimeError("bad frame")
    except RuntimeError:
        import sys

        record.exc_info = sys.exc_info()
    line = json.loads(formatter.format(record))
    assert line["level"] == "error" and line["logger"] == "actors.supervisor"
    assert line["message"] == "station station:7 restarted"
    assert (line["actor_kind"], line["child_id"]) == ("station", "station:7")
    assert "RuntimeError: bad frame" in line["exception"]
    assert "T" in line["time"]
