"""The wire's codec, sans-IO: request lines decoded in two steps, error replies, framing.

The envelope is decoded first, with ``params`` kept raw, and then the raw params with the
decoder of the method's own Struct (see :data:`~supervisord_agents.protocol.METHODS`), so
an unknown method is reported as such and wrong types name the method's field. Input that
nests deeper than the decoder walks is a typed error too, never a dropped connection.
:class:`LineBuffer` frames a byte stream into lines and refuses one past the line cap.
Page cursors are opaque to clients: :func:`cursor` and :func:`read_cursor`.
"""

from __future__ import annotations

import base64
from typing import Any, Final

import msgspec

from .errors import BadRequest, InvalidParams, SupervisorError, TooLarge, UnknownMethod
from .protocol import MAX_DATA_DEPTH, MAX_LINE, METHODS, ErrorBody, Params, Reply, Request

_request_decoder: Final = msgspec.json.Decoder(Request)
_param_decoders: Final[dict[str, msgspec.json.Decoder[Params]]] = {}  # each made when first needed


def decode_request(line: bytes) -> Request:
    """Decode one request line. Raises BadRequest."""
    try:
        return _request_decoder.decode(line)
    except (msgspec.DecodeError, UnicodeDecodeError) as e:  # msgspec reports bad UTF-8 in a string so
        raise BadRequest(f"malformed request: {e}") from None
    except RecursionError:
        raise BadRequest("malformed request: it nests too deep") from None


def decode_params(request: Request) -> Params:
    """Decode a request's params with its method's schema. Raises UnknownMethod, InvalidParams.
    (The method itself is ``METHODS[request.method]`` once this returned.)"""
    decoder = _param_decoders.get(request.method)
    if decoder is None:
        method = METHODS.get(request.method)
        if method is None:
            raise UnknownMethod(f"unknown method {request.method!r}", data={"method": request.method})
        decoder = _param_decoders[request.method] = msgspec.json.Decoder(method.params)
    try:
        return decoder.decode(request.params)
    except msgspec.ValidationError as e:
        raise InvalidParams(f"{request.method}: {e}", data={"method": request.method}) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        raise BadRequest(f"{request.method}: malformed params: {e}") from None
    except RecursionError:
        raise InvalidParams(f"{request.method}: params nest too deep (a finding's `data` may nest at most "
                            f"{MAX_DATA_DEPTH} levels deep)", data={"method": request.method}) from None


def error_reply(request_id: int | None, error: SupervisorError) -> Reply:
    return Reply(id=request_id, error=ErrorBody(code=error.code.value, message=error.message, data=error.data))


class LineBuffer:
    """Split a byte stream into lines, refusing any line longer than ``max_line``.

    Sans-IO: feed it whatever the socket returned, get back the complete lines (without
    their newline). A partial line that grows past the cap raises TooLarge, after which
    the connection should be closed: there is no way to find the next message boundary
    without reading the rest of the oversized one.
    """

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        if b"\n" not in data:
            self._check()
            return []
        *lines, rest = self._buf.split(b"\n")
        self._buf = bytearray(rest)
        self._check()
        for line in lines:
            if len(line) > self.max_line:
                raise TooLarge(f"line of {len(line)} bytes exceeds the cap of {self.max_line}")
        return [bytes(line) for line in lines if line.strip()]

    def _check(self) -> None:
        if len(self._buf) > self.max_line:
            raise TooLarge(f"line exceeds the cap of {self.max_line} bytes")

    @property
    def pending(self) -> int:
        return len(self._buf)


# --- page cursors -----------------------------------------------------------------------


def cursor(kind: str, *key: float | str | int) -> str:
    """An opaque cursor: the key a list continues after, and which list it belongs to."""
    return base64.urlsafe_b64encode(msgspec.json.encode([kind, *key])).rstrip(b"=").decode()


def read_cursor(kind: str, text: str, *types: type) -> tuple[Any, ...]:
    """The key of a cursor made by :func:`cursor` for the list ``kind``. Raises InvalidParams."""
    try:
        value = msgspec.json.decode(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, msgspec.DecodeError):
        value = None
    if (
        not isinstance(value, list) or len(value) != len(types) + 1 or value[0] != kind
        or not all(isinstance(v, t) and not isinstance(v, bool) for v, t in zip(value[1:], types, strict=True))
    ):
        raise InvalidParams(f"not a cursor of {kind}: pass back a page's `next` unchanged")
    return tuple(value[1:])
