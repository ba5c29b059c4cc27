"""What listings share: filters (globs, time bounds) and streamed exports (CSV or JSON lines), read page
by page so memory stays flat."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi.responses import StreamingResponse

Format = Literal["csv", "jsonl"]
PAGE = 1000
# An export's 200 in the OpenAPI document (a stream has no JSON schema: each line is one listed row).
EXPORT_CONTENT: dict[str, Any] = {
    "text/csv": {"schema": {"type": "string", "description": "RFC 4180 CSV with a header row."}},
    "application/x-ndjson": {"schema": {"type": "string", "description": "One JSON object per line: the "
                                        "listing's fields (and, for decisions, the signed `certificate`)."}},
}


def glob_to_like(pattern: str) -> str:
    """A `*` glob as a LIKE pattern with `\\` as escape (`*` any run of characters; LIKE's own wildcards
    escaped)."""
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


def utc_bound(moment: datetime | None) -> datetime | None:
    """A query's time bound in UTC (one written without an offset is taken as UTC)."""
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def csv_line(values: Sequence[Any]) -> str:
    """One CSV record (RFC 4180 quoting)."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(values)
    return out.getvalue()


def export(fetch: Callable[[Any | None], Awaitable[Sequence[Any]]], key: Callable[[Any], Any],
           render: Callable[[Any], dict[str, Any]], columns: Sequence[str], format: Format,
           name: str) -> StreamingResponse:
    """Stream every row `fetch(after)` yields page by page (`after` = `key` of the last row, None first):
    CSV of `columns` of `render(row)`, or one JSON object per line."""

    async def lines() -> AsyncIterator[str]:
        if format == "csv":
            yield csv_line(columns)
        after = None
        while True:
            rows = await fetch(after)
            for row in rows:
                item = render(row)
                if format == "csv":
                    yield csv_line([" ".join(v) if isinstance(v, list) else _cell(v) for v in
                                    (item.get(c) for c in columns)])
                else:
                    yield json.dumps(item, separators=(",", ":"), ensure_ascii=False) + "\n"
            if len(rows) < PAGE:
                return
            after = key(rows[-1])

    media = "text/csv; charset=utf-8" if format == "csv" else "application/x-ndjson"
    return StreamingResponse(lines(), media_type=media,
                             headers={"content-disposition": f'attachment; filename="{name}.{format}"'})


def _cell(value: Any) -> Any:
    return json.dumps(value, separators=(",", ":"), sort_keys=True) if isinstance(value, dict) else value
