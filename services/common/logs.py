"""One logging setup for every service: the level from ``FRAMEBUS_LOG_LEVEL``, plain lines or,
with ``FRAMEBUS_LOG_FORMAT=json``, one JSON object per line (what log collectors ingest)."""

from __future__ import annotations

import json
import logging
import logging.config
from datetime import UTC, datetime

from framebus.services.common.settings import Settings


class JsonLines(logging.Formatter):
    """A record as one JSON object: time, level, logger, message, and the exception if any."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
                "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def logging_config(settings: Settings) -> dict:
    """A ``logging.config.dictConfig`` for stderr at the configured level and format."""
    formatter = ({"()": JsonLines} if settings.log_format == "json"
                 else {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"})
    return {"version": 1, "disable_existing_loggers": False,
            "formatters": {"framebus": formatter},
            "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "framebus",
                                    "stream": "ext://sys.stderr"}},
            "root": {"level": settings.log_level, "handlers": ["stderr"]},
            # Third-party chatter stays at WARNING unless asked for by DEBUG.
            "loggers": {name: {"level": "DEBUG" if settings.log_level == "DEBUG" else "WARNING"}
                        for name in ("aiokafka", "kafka", "botocore", "urllib3", "httpx", "faust", "mode")}}


def setup_logging(settings: Settings) -> None:
    logging.config.dictConfig(logging_config(settings))
