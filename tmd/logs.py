"""
The log as JSON lines, for log collectors: C{twistd -n tmd --log-format json}.

twistd sets up logging before tmd's services exist; its C{--logger} option names a
callable that makes the log observer. tmd's options set it to L{json_observer}, so
twistd still owns the logging (start, buffered early events, standard output
redirected into the log); only the format changes.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from twisted.logger import FileLogObserver, ILogObserver, LogEvent, formatEvent
from twisted.python.failure import Failure

from tmd.wire import timestamp

SCALARS = (str, int, float, bool, type(None))
LEGACY_KEYS = frozenset({"format", "isError", "system", "time", "message", "why"})
"""What twisted.python.log's bridge adds to events, in place: nothing new."""


def json_observer() -> ILogObserver:
    """For twistd's C{--logger}: one JSON object per line on standard output."""
    return FileLogObserver(sys.stdout, json_line)


def json_line(event: LogEvent) -> str:
    """
    C{event} as one line of JSON: C{time}, C{level}, C{namespace} and C{text} (as the
    text log says it), the failure's C{traceback} if any, then the event's own fields
    that are plain values (objects appear only as the text shows them).
    """
    level = event.get("log_level")
    record: dict[str, Any] = {
        "time": timestamp(int(event.get("log_time", 0) * 1000)),
        "level": level.name if level is not None else None,
        "namespace": event.get("log_namespace"),
        "text": formatEvent(event),
    }
    failure = event.get("log_failure")
    if isinstance(failure, Failure):
        record["traceback"] = failure.getTraceback()
    for key, value in event.items():
        if key.startswith("log_") or key in record or key in LEGACY_KEYS:
            continue
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, SCALARS):
            record[key] = value
    return json.dumps(record) + "\n"
