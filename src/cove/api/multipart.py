"""multipart/form-data, incrementally: parsing uploads, writing download parts.

Bodies are never held whole: :class:`UploadParser` turns each chunk of a
request body into events as it arrives, and :func:`part_head` writes the
header of one download part ahead of its streamed bytes.
"""

from __future__ import annotations

from urllib.parse import quote

from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

# Events: ("part", field name), ("data", bytes), ("end", None).
MAX_PART_HEADERS = 16 * 1024
Event = tuple[str, bytes | str | None]


class UploadParser:
    """A streaming parser of one multipart body."""

    def __init__(self, content_type: str) -> None:
        kind, options = parse_options_header(content_type)
        if kind != b"multipart/form-data" or not options.get(b"boundary"):
            raise ValueError("not a multipart/form-data body")
        self._events: list[Event] = []
        self._headers: dict[bytes, bytes] = {}
        self._header_bytes = 0
        self._field = bytearray()
        self._value = bytearray()
        self._parser = MultipartParser(options[b"boundary"], callbacks={
            "on_part_begin": self._part_begin,
            "on_header_field": lambda d, s, e: self._grow(self._field, d[s:e]),
            "on_header_value": lambda d, s, e: self._grow(self._value, d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": lambda d, s, e: self._events.append(("data", bytes(d[s:e]))),
            "on_part_end": lambda: self._events.append(("end", None)),
        })

    def feed(self, chunk: bytes) -> list[Event]:
        """The events in ``chunk`` (the body's next bytes).

        Raises:
            ValueError: the body is not valid multipart.
        """
        self._parser.write(chunk)
        events, self._events = self._events, []
        return events

    def finish(self) -> None:
        """Check that the body ended with its closing boundary.

        Raises:
            ValueError: the body was cut short.
        """
        self._parser.finalize()
        if self._parser.state != MultipartState.END:
            raise ValueError("the multipart body ended before its closing boundary")

    def _part_begin(self) -> None:
        self._headers.clear()
        self._header_bytes = 0

    def _grow(self, buffer: bytearray, data: bytes) -> None:
        """Collect a part's header bytes: at most MAX_PART_HEADERS of them per part."""
        self._header_bytes += len(data)
        if self._header_bytes > MAX_PART_HEADERS:
            raise ValueError(f"a part's headers are longer than {MAX_PART_HEADERS} bytes")
        buffer.extend(data)

    def _header_end(self) -> None:
        self._headers[bytes(self._field).lower()] = bytes(self._value)
        self._field.clear()
        self._value.clear()

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = params.get(b"name", b"").decode(errors="replace")
        self._events.append(("part", name))


def _plain(text: str) -> bool:
    return text.isascii() and text.isprintable() and '"' not in text and "\\" not in text


def disposition(name: str | None, filename: str) -> str:
    """A Content-Disposition naming ``filename`` exactly (RFC 5987 when it must): a
    form part called ``name``, or (``None``) an attachment."""
    head = f'form-data; name="{name}"' if name is not None else "attachment"
    if _plain(filename):
        return f'{head}; filename="{filename}"'
    fallback = "".join(c if _plain(c) else "_" for c in filename)
    return f"{head}; filename=\"{fallback}\"; filename*=utf-8''{quote(filename, safe='')}"


def part_head(boundary: str, name: str, filename: str, content_type: str,
              length: int | None = None) -> bytes:
    """The boundary and headers that open one part."""
    lines = [f"--{boundary}", f"Content-Disposition: {disposition(name, filename)}",
             f"Content-Type: {content_type}"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def closing(boundary: str) -> bytes:
    return f"--{boundary}--\r\n".encode()
