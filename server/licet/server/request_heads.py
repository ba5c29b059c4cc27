"""Bounded request heads: the HTTP protocol `licet serve` runs, refusing a request whose head (the
request target and the header fields) is too large or has too many fields before it is read in full
and before the application sees it.

uvicorn's httptools protocol reads a head of any size (a multi-megabyte header is buffered, parsed
and handed to the application). Its h11 protocol has a buffer limit, but answers 400 and parses
about 2.5 times slower; so this is the httptools protocol with two counts added: the bytes received
while a head is incomplete (so an endless header is cut off after the limit, not buffered), and the
target and fields as they are parsed (their size and number). Either over its limit is answered
`431 headers_too_large` with the error document, and the connection is closed.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from licet.server.errors import error_body

# Bytes a head takes on the wire beyond its target and fields' names and values: the request line's
# method, version and spaces (and the blank line) here, ": " and CRLF per field below. The incomplete
# head's byte count allows them, so the two counts agree on what fits.
REQUEST_LINE_ALLOWANCE = 64
FIELD_ALLOWANCE = 4


class _HeadRefused(Exception):
    """Raised inside a parser callback to stop parsing a refused head."""


class BoundedHeadProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with `max_header_bytes` (request target plus header names and
    values) and `max_headers` (header fields) per request."""

    def __init__(self, *args: Any, max_header_bytes: int, max_headers: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_header_bytes, self.max_headers = max_header_bytes, max_headers
        self._max_received = max_header_bytes + REQUEST_LINE_ALLOWANCE + FIELD_ALLOWANCE * max_headers
        self._received = 0  # bytes received since the current head began, while it is incomplete
        self._parsed = 0  # bytes of the current head's target and fields, as parsed
        self._in_body = False  # between the end of a head and the end of its message
        self._refused = False

    def data_received(self, data: bytes) -> None:
        if not self._in_body:
            self._received += len(data)
        super().data_received(data)
        # Still no end of the head: refuse it before buffering more (the parser keeps a header's
        # value in memory until the field ends).
        if not self._in_body and not self._refused and self._received > self._max_received:
            self._refuse(f"the request head is longer than {self.max_header_bytes} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._parsed = 0

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value))
        if len(self.headers) >= self.max_headers:
            self._refuse(f"the request has more than {self.max_headers} header fields")
            raise _HeadRefused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_body, self._received = True, 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        # uvicorn answers a parser error (which a callback's exception is) with 400: a refused head
        # was answered already.
        if not self._refused:
            super().send_400_response(msg)

    def _count(self, size: int) -> None:
        self._parsed += size
        if self._parsed > self.max_header_bytes:
            self._refuse(f"the request head is longer than {self.max_header_bytes} bytes")
            raise _HeadRefused

    def _refuse(self, why: str) -> None:
        """Answer 431 with the error document and close the connection."""
        self._refused = True
        logging.getLogger("uvicorn.error").warning("refused a request: %s (431)", why)
        body = json.dumps(error_body("headers_too_large", f"{why}: send less in headers (a smaller cookie, "
                                     "fewer fields)")).encode()
        self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
                             b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body))
        self.transport.close()


def protocol(max_header_bytes: int, max_headers: int) -> Callable[..., BoundedHeadProtocol]:
    """What `uvicorn.run(http=...)` takes to run `BoundedHeadProtocol` with these limits (a partial of
    a module-level class: worker processes receive it pickled)."""
    return functools.partial(BoundedHeadProtocol, max_header_bytes=max_header_bytes, max_headers=max_headers)
