"""TFRecord framing with masked CRC-32C, the container format of event files.

Each record on disk is::

    uint64 length            little-endian
    uint32 masked_crc32c(length bytes)
    byte   data[length]
    uint32 masked_crc32c(data)

with ``masked(crc) = ((crc >> 15) | (crc << 17)) + 0xA282EAD8  (mod 2**32)`` over
CRC-32C (Castagnoli). The CRC itself runs in C (``google-crc32c``); this module only
does the framing, and caches the 12-byte header of each record length it has seen,
because summary events of one run come in a handful of sizes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

import google_crc32c

__all__ = ["frame_parts", "frame_record", "frame_records", "masked_crc32c"]

_crc = google_crc32c.value
_extend = google_crc32c.extend
_pack_len = struct.Struct("<Q").pack
_pack_crc = struct.Struct("<I").pack
_MASK_DELTA = 0xA282EAD8
_HEADER_CACHE_LIMIT = 4096
_header_cache: dict[int, bytes] = {}


def masked_crc32c(data: bytes | bytearray | memoryview) -> int:
    """The masked CRC-32C that TFRecord stores after the length and after the data."""
    crc = _crc(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def _header(length: int) -> bytes:
    header = _header_cache.get(length)
    if header is None:
        raw = _pack_len(length)
        header = raw + _pack_crc(masked_crc32c(raw))
        if len(_header_cache) < _HEADER_CACHE_LIMIT:
            _header_cache[length] = header
    return header


def frame_record(data: bytes) -> bytes:
    """One framed record around ``data``."""
    crc = _crc(data)
    return b"".join(
        (
            _header(len(data)),
            data,
            _pack_crc((((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF),
        )
    )


def frame_records(payloads: Iterable[bytes], out: list[bytes]) -> None:
    """Append the framing of each payload to ``out`` (header, data, crc as parts).

    The caller joins ``out`` once, so a batch costs one allocation instead of one
    per record.
    """
    append = out.append
    cache_get = _header_cache.get
    for data in payloads:
        n = len(data)
        header = cache_get(n)
        if header is None:
            header = _header(n)
        crc = _crc(data)
        append(header)
        append(data)
        append(_pack_crc((((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF))


def frame_parts(parts: tuple[bytes, ...], out: list[bytes]) -> None:
    """Append the framing of one record whose data is ``parts`` joined, without joining.

    For large payloads: the CRC runs over the parts in turn and the parts go to ``out``
    as they are, so the payload is never copied into a whole event (and the engine
    writes a large part as its own chunk, without copying it at all).
    """
    crc = size = 0
    for part in parts:
        crc = _extend(crc, part)
        size += len(part)
    out.append(_header(size))
    out.extend(parts)
    out.append(_pack_crc((((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF))
