"""One logging setup for every service: level from the settings, JSON lines on request."""

from __future__ import annotations

import json
import logging
import logging.config

from framebus.services.common.logs import JsonLines, logging_config
from framebus.services.common.settings import Settings


def test_json_format_writes_one_object_per_line_with_the_exception() -> None:
    formatter = JsonLines()
    try:
        raise ValueError("broken")
    except ValueError:
        import sys

        record = logging.LogRecord("framebus.x", logging.ERROR, __file__, 1, "failed on %s", ("r-1",), sys.exc_info())
    line = json.loads(formatter.format(record))
    assert line["level"] == "ERROR" and line["logger"] == "framebus.x" and line["message"] == "failed on r-1"
    assert "ValueError: broken" in line["exception"] and line["time"].endswith("+00:00")


def test_the_configured_level_and_format_reach_every_service_logger(capsys) -> None:
    logging.config.dictConfig(logging_config(Settings(log_level="WARNING", log_format="json")))
    try:
        logging.getLogger("framebus.services.generator.worker").info("not shown at WARNING")
        logging.getLogger("framebus.services.notifier.service").warning("shown")
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert [line["message"] for line in lines] == ["shown"]
    finally:
        logging.config.dictConfig(logging_config(Settings()))
