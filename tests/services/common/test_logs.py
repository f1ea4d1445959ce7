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


def test_a_client_repeating_itself_during_an_outage_is_held_to_one_line_per_interval() -> None:
    import logging

    from framebus.services.common.logs import RepeatLimiter

    limiter = RepeatLimiter(every_s=10.0)

    def record(name: str, at: float, msg: str = "Unable connect to node with id %s: %s") -> logging.LogRecord:
        made = logging.LogRecord(name, logging.ERROR, __file__, 1, msg, (1, "refused"), None)
        made.created = at
        return made

    passed = [limiter.filter(record("aiokafka", t / 100)) for t in range(0, 3000)]  # 30 s at 100 lines/s
    assert sum(passed) == 3
    late = record("aiokafka", 31.0)
    assert limiter.filter(late) and "more like it" in late.getMessage()
    assert limiter.filter(record("aiokafka", 31.1, "another message")), "other messages pass"
    assert all(limiter.filter(record("framebus.services.scheduler", t / 100)) for t in range(100)), \
        "our own lines are never held back"
