"""Log lines of a service, as text or JSON, each with the correlation id and the trace and span ids of its call."""

from __future__ import annotations

import json
import logging

from protomesh._context import correlation_id
from protomesh._tracing import log_ids

LOG_FORMAT = "%(asctime)s.%(msecs)03d %(levelname)s %(name)s %(message)s"
LOG_DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"
# The access log writes the correlation id into its message already (`cid=...`).
_ACCESS_LOGGER = "protomesh.access"


def _call_fields(record: logging.LogRecord) -> dict[str, str]:
    """cid, trace_id and span_id of the call the record was logged in (none outside a call)."""
    fields: dict[str, str] = {}
    cid = correlation_id()
    if cid is not None:
        fields["cid"] = cid
    ids = log_ids()
    if ids is not None:
        fields["trace_id"], fields["span_id"] = ids
    return fields


class TextFormatter(logging.Formatter):
    """time level logger message [cid=… trace_id=… span_id=…], always one line (tracebacks included), so log
    shippers never split a record."""

    def __init__(self) -> None:
        super().__init__(LOG_FORMAT, LOG_DATE_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = _call_fields(record)
        if record.name == _ACCESS_LOGGER:
            fields.pop("cid", None)
        if fields:
            text += " " + " ".join(f"{key}={value}" for key, value in fields.items())
        return text.replace("\n", "\\n") if "\n" in text else text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the call's ids, and the traceback if any."""

    def __init__(self) -> None:
        super().__init__(datefmt=LOG_DATE_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": f"{self.formatTime(record, LOG_DATE_FORMAT)}.{int(record.msecs):03d}",
            "level": record.levelname, "logger": record.name, "message": record.getMessage(), **_call_fields(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def formatter(*, json_logs: bool) -> logging.Formatter:
    return JsonFormatter() if json_logs else TextFormatter()
