"""Readings as CSV or NDJSON, oldest first, streamed in chunks with constant memory.

One code path for ``tswarm export`` and ``GET /api/readings``. No aiohttp here.
"""
from __future__ import annotations

import csv
import io
import json
from typing import Iterator, Optional

from .journal import Journal
from .timefmt import rfc3339

FORMATS = ("csv", "ndjson")
CSV_HEADER = ("time", "node", "temperature", "humidity")
CONTENT_TYPES = {"csv": "text/csv; charset=utf-8", "ndjson": "application/x-ndjson"}


def export_chunks(
    journal: Journal,
    *,
    fmt: str = "csv",
    node: Optional[str] = None,
    start_ns: Optional[int] = None,
    stop_ns: Optional[int] = None,
    header: bool = True,
) -> Iterator[str]:
    """Yield text chunks of the export; each chunk holds up to a few thousand rows."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "csv":
        if header:
            yield ",".join(CSV_HEADER) + "\n"
        for rows in journal.iter_readings(node=node, start_ns=start_ns, stop_ns=stop_ns):
            buffer = io.StringIO()
            csv.writer(buffer, lineterminator="\n").writerows((rfc3339(ts), name, t, h) for ts, name, t, h in rows)
            yield buffer.getvalue()
    else:
        dumps = json.dumps
        for rows in journal.iter_readings(node=node, start_ns=start_ns, stop_ns=stop_ns):
            yield "".join(
                dumps({"time": rfc3339(ts), "node": name, "temperature": t, "humidity": h}) + "\n"
                for ts, name, t, h in rows
            )
