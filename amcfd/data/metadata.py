"""Photo metadata in image file bytes: EXIF orientation, ICC profile, EXIF block (used by ``imageio``).

Read (``read_metadata``): the EXIF orientation (JPEG APP1, PNG eXIf, a TIFF's own IFD0), the ICC profile
(JPEG APP2, PNG iCCP, TIFF tag 34675) and the EXIF block (its orientation reset to 1).
Written (``embed_metadata``): PNG iCCP + eXIf chunks, JPEG APP2 + APP1 segments, TIFF tags (ICC, the
descriptive IFD0 tags and the Exif/GPS sub-IFDs of the EXIF block). Metadata that does not parse is
skipped with a warning.

EXIF is a TIFF structure, as is a TIFF file: a byte-order mark ("II*\0" little, "MM\0*" big endian), the
offset of IFD0, and IFDs of 12-byte entries (tag, type, count, the value if it fits in 4 bytes, else its
offset); offsets count from the start of the structure.
"""
from __future__ import annotations

import logging
import struct
import zlib
from pathlib import Path
from typing import Callable

import numpy as np

log = logging.getLogger("amcfd")

_ORIENTATION_TAG, _ICC_TAG, _EXIF_IFD, _GPS_IFD, _INTEROP_IFD = 274, 34675, 34665, 34853, 40965
_SUB_IFDS = (_EXIF_IFD, _GPS_IFD, _INTEROP_IFD)
_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}  # bytes a value
# IFD0 tags that describe the photo, not its pixel layout (description, make, model, software, date and
# time, artist, copyright): carried between TIFF files and EXIF blocks, with the Exif and GPS sub-IFDs.
_DESCRIPTIVE_TAGS = (270, 271, 272, 305, 306, 315, 33432)
# EXIF orientation -> (flip rows, flip columns, then transpose): the stored pixels made upright.
_ORIENTATIONS = {1: (False, False, False), 2: (False, True, False), 3: (True, True, False),
                 4: (True, False, False), 5: (False, False, True), 6: (True, False, True),
                 7: (True, True, True), 8: (False, True, True)}
_EXIF_HEADER, _ICC_HEADER = b"Exif\0\0", b"ICC_PROFILE\0"
_JPEG_PAYLOAD_MAX = 65533                      # bytes in one JPEG marker segment after its length field
_BAD_METADATA = (ValueError, struct.error, zlib.error, IndexError, KeyError)


def apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Stored HxW[xC] pixels -> upright, for EXIF orientation 1-8 (anything else: unchanged); contiguous."""
    flip_rows, flip_cols, transpose = _ORIENTATIONS.get(orientation, _ORIENTATIONS[1])
    if flip_rows:
        arr = arr[::-1]
    if flip_cols:
        arr = arr[:, ::-1]
    if transpose:
        arr = arr.swapaxes(0, 1)
    return np.ascontiguousarray(arr)


def _tiff_endian(tiff) -> str:
    head = bytes(tiff[:4])
    if head not in (b"II*\0", b"MM\0*"):
        raise ValueError("not a TIFF structure (no byte-order mark)")
    return "<" if head == b"II*\0" else ">"


def _ifd0_at(tiff, e: str) -> int:
    return struct.unpack_from(e + "I", tiff, 4)[0]


def _ifd_fields(tiff, offset: int, e: str) -> list[tuple[int, int, int, int]]:
    """(tag, type, count, position of the value-or-offset field) of each entry of the IFD at ``offset``."""
    (n,) = struct.unpack_from(e + "H", tiff, offset)
    return [struct.unpack_from(e + "HHI", tiff, offset + 2 + 12 * i) + (offset + 10 + 12 * i,) for i in range(n)]


def _read_ifd(tiff, offset: int, e: str, depth: int = 0) -> dict:
    """An IFD as {tag: (type, count, value bytes)}; Exif/GPS/Interop sub-IFDs as nested dicts."""
    entries = {}
    for tag, typ, count, field in _ifd_fields(tiff, offset, e):
        if tag in _SUB_IFDS:
            if depth < 2 and typ in (4, 13):
                entries[tag] = _read_ifd(tiff, struct.unpack_from(e + "I", tiff, field)[0], e, depth + 1)
        elif typ in _TYPE_SIZES:
            size = _TYPE_SIZES[typ] * count
            start = field if size <= 4 else struct.unpack_from(e + "I", tiff, field)[0]
            if start + size > len(tiff):
                raise ValueError(f"TIFF tag {tag}: value past the end of the data")
            entries[tag] = (typ, count, bytes(tiff[start:start + size]))
    return entries


def _pack_ifd(entries: dict, e: str, base: int) -> bytes:
    """``entries`` (as ``_read_ifd`` gives them) as an IFD at offset ``base`` (even), followed by its long
    values and sub-IFDs; no next IFD."""
    tags = sorted(entries)
    fields, extra = [struct.pack(e + "H", len(tags))], bytearray()
    end = base + 2 + 12 * len(tags) + 4
    for tag in tags:
        entry, at = entries[tag], end + len(extra)
        if isinstance(entry, dict):
            fields.append(struct.pack(e + "HHII", tag, 4, 1, at))
            extra += _pack_ifd(entry, e, at)
            continue
        typ, count, value = entry
        if len(value) <= 4:
            fields.append(struct.pack(e + "HHI", tag, typ, count) + value.ljust(4, b"\0"))
        else:
            fields.append(struct.pack(e + "HHII", tag, typ, count, at))
            extra += value + b"\0" * (len(value) % 2)          # the next value starts on an even offset
    return b"".join(fields) + b"\0\0\0\0" + bytes(extra)


def _swap_byte_order(entries: dict) -> dict:
    """The entries for the other byte order: multi-byte values reversed unit by unit (rationals: each half)."""
    out = {}
    for tag, entry in entries.items():
        if isinstance(entry, dict):
            out[tag] = _swap_byte_order(entry)
            continue
        typ, count, value = entry
        unit = 4 if typ in (5, 10) else _TYPE_SIZES[typ]
        if unit > 1:
            value = b"".join(value[i:i + unit][::-1] for i in range(0, len(value), unit))
        out[tag] = (typ, count, value)
    return out


def _exif_block(entries: dict, e: str) -> bytes:
    return (b"II*\0" if e == "<" else b"MM\0*") + struct.pack(e + "I", 8) + _pack_ifd(entries, e, 8)


def _orientation_field(tiff, e: str) -> tuple[int, int, str] | None:
    """(orientation, position of its value, struct format) in IFD0 of a TIFF structure; None without one."""
    for tag, typ, count, field in _ifd_fields(tiff, _ifd0_at(tiff, e), e):
        if tag == _ORIENTATION_TAG and typ in (3, 4) and count == 1:
            fmt = e + ("H" if typ == 3 else "I")
            return struct.unpack_from(fmt, tiff, field)[0], field, fmt
    return None


def _upright_exif(exif) -> bytes:
    """A copy of an EXIF block with orientation 1 (the same length: offsets inside stay valid)."""
    e = _tiff_endian(exif)
    found = _orientation_field(exif, e)
    out = bytearray(exif)
    if found is not None and found[0] != 1:
        struct.pack_into(found[2], out, found[1], 1)
    return bytes(out)


def _jpeg_segments(data):
    """(marker, payload start, payload end) of each marker segment before a JPEG's first scan."""
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:                                      # fill byte
            pos += 1
            continue
        if marker in (0xDA, 0xD9):                              # start of scan, end of image
            return
        (length,) = struct.unpack_from(">H", data, pos + 2)
        yield marker, pos + 4, pos + 2 + length
        pos += 2 + length


def _png_chunks(data):
    """(type, data start, data end) of each PNG chunk; its CRC follows at data end."""
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        yield kind, pos + 8, pos + 8 + length
        if kind == b"IEND":
            return
        pos += 12 + length


def _icc_profile(data) -> bytes | None:
    """The ICC profile of a JPEG (APP2 segments, in sequence order), PNG (iCCP) or TIFF file (tag 34675)."""
    if data.startswith(b"\xff\xd8"):
        parts = {data[start + 12]: bytes(data[start + 14:end])   # after the header: sequence number (from 1), count
                 for marker, start, end in _jpeg_segments(data)
                 if marker == 0xE2 and data[start:start + 12] == _ICC_HEADER}
        return b"".join(parts[k] for k in sorted(parts)) or None
    if data.startswith(b"\x89PNG"):
        for kind, start, end in _png_chunks(data):
            if kind == b"iCCP":                                 # name, 0, compression method 0, zlib data
                return zlib.decompress(data[data.index(b"\0", start, end) + 2:end])
        return None
    if data[:4] in (b"II*\0", b"MM\0*"):
        e = _tiff_endian(data)
        icc = _read_ifd(data, _ifd0_at(data, e), e).get(_ICC_TAG)
        return icc[2] if icc else None
    return None


def _exif_location(data) -> tuple[int, int, int | None] | None:
    """Where the TIFF structure holding a file's orientation is: (start, end, position of the PNG CRC that
    covers it or None). A JPEG's first APP1 EXIF segment, a PNG's eXIf chunk, a TIFF file itself."""
    if data.startswith(b"\xff\xd8"):
        for marker, start, end in _jpeg_segments(data):
            if marker == 0xE1 and data[start:start + 6] == _EXIF_HEADER:
                return start + 6, end, None
    elif data.startswith(b"\x89PNG"):
        for kind, start, end in _png_chunks(data):
            if kind == b"eXIf":
                return start, end, end
    elif data[:4] in (b"II*\0", b"MM\0*"):
        return 0, len(data), None
    return None


def _tiff_file_exif(data, e: str) -> bytes | None:
    """An EXIF block of a TIFF file's descriptive IFD0 tags and Exif/GPS sub-IFDs; None when it has none."""
    ifd0 = _read_ifd(data, _ifd0_at(data, e), e)
    entries = {tag: v for tag, v in ifd0.items() if tag in (*_DESCRIPTIVE_TAGS, _EXIF_IFD, _GPS_IFD)}
    if not entries:
        return None
    entries[_ORIENTATION_TAG] = (3, 1, struct.pack(e + "H", 1))
    return _exif_block(entries, e)


def _tolerant(what: str, path: Path, fn: Callable, *args):
    """``fn(*args)``, or None with a warning when the metadata it parses is broken."""
    try:
        return fn(*args)
    except _BAD_METADATA as exc:
        log.warning("%s: %s not readable, ignored (%s)", path, what, exc)
        return None


def read_metadata(data: bytes, path: Path) -> tuple[dict, bytes]:
    """``{'orientation', 'icc', 'exif'}`` of an image file's bytes, and the bytes to decode: those with the
    orientation set to 1, so that the decoder returns the stored pixels whether it applies the tag or not
    (OpenCV's TIFF decoder does, even with IMREAD_UNCHANGED). Metadata that does not parse is left out with
    a warning; the orientation, the ICC profile and the EXIF block each on their own."""
    meta = {"orientation": 1, "icc": _tolerant("ICC profile", path, _icc_profile, data), "exif": None}
    where = _tolerant("EXIF", path, _exif_location, data)
    if where is None:
        return meta, data
    start, end, crc_at = where
    tiff = memoryview(data)[start:end]
    e = _tolerant("EXIF", path, _tiff_endian, tiff)
    if e is None:
        return meta, data
    if start == 0:                                              # a TIFF file: its own tags, re-packed
        meta["exif"] = _tolerant("EXIF", path, _tiff_file_exif, data, e)
    else:
        meta["exif"] = _tolerant("EXIF", path, _upright_exif, tiff)
    found = _tolerant("EXIF orientation", path, _orientation_field, tiff, e)
    if found is None or found[0] not in _ORIENTATIONS or found[0] == 1:
        return meta, data
    meta["orientation"] = found[0]
    data = bytearray(data)
    struct.pack_into(found[2], data, start + found[1], 1)
    if crc_at is not None:                                      # PNG: the chunk's CRC covers its type and data
        struct.pack_into(">I", data, crc_at, zlib.crc32(data[start - 4:crc_at]))
    return meta, data


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _jpeg_segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def _png_with(png: bytes, icc: bytes | None, exif: bytes | None) -> bytes:
    chunks = _png_chunk(b"iCCP", b"ICC profile\0\0" + zlib.compress(icc)) if icc else b""
    chunks += _png_chunk(b"eXIf", exif) if exif else b""
    at = 8 + 12 + struct.unpack_from(">I", png, 8)[0]          # after the signature and IHDR
    return png[:at] + chunks + png[at:]


def _jpeg_with(jpeg: bytes, icc: bytes | None, exif: bytes | None, path: Path) -> bytes:
    segments = b""
    if exif and len(_EXIF_HEADER + exif) > _JPEG_PAYLOAD_MAX:
        log.warning("%s: EXIF block of %d bytes does not fit a JPEG segment; not written", path, len(exif))
    elif exif:
        segments += _jpeg_segment(0xE1, _EXIF_HEADER + exif)
    room = _JPEG_PAYLOAD_MAX - len(_ICC_HEADER) - 2
    parts = [icc[i:i + room] for i in range(0, len(icc or b""), room)]
    if len(parts) > 255:
        log.warning("%s: ICC profile of %d bytes is too large for JPEG; not written", path, len(icc))
    else:
        segments += b"".join(_jpeg_segment(0xE2, _ICC_HEADER + bytes([k + 1, len(parts)]) + part)
                             for k, part in enumerate(parts))
    at = 4 + struct.unpack_from(">H", jpeg, 4)[0] if jpeg[2:4] == b"\xff\xe0" else 2    # after SOI and JFIF APP0
    return jpeg[:at] + segments + jpeg[at:]


def _tiff_with(tif: bytes, icc: bytes | None, exif: bytes | None) -> bytes:
    """The TIFF with a new IFD0 appended (the old one's entries, plus the ICC profile and the EXIF block's
    descriptive tags and sub-IFDs); the pixel data stays where it is."""
    e = _tiff_endian(tif)
    entries = _read_ifd(tif, _ifd0_at(tif, e), e)
    if icc:
        entries.setdefault(_ICC_TAG, (7, len(icc), icc))
    if exif:
        xe = _tiff_endian(exif)
        tree = _read_ifd(exif, _ifd0_at(exif, xe), xe)
        tree = tree if xe == e else _swap_byte_order(tree)
        for tag in (*_DESCRIPTIVE_TAGS, _EXIF_IFD, _GPS_IFD):
            if tag in tree:
                entries.setdefault(tag, tree[tag])
    base = len(tif) + len(tif) % 2
    return tif[:4] + struct.pack(e + "I", base) + tif[8:] + b"\0" * (len(tif) % 2) + _pack_ifd(entries, e, base)


def embed_metadata(encoded: bytes, ext: str, icc: bytes | None, exif: bytes | None, path: Path) -> bytes:
    """Encoded image bytes with the ICC profile and EXIF (orientation 1) added where the format holds them;
    metadata that does not parse is left out with a warning."""
    if not icc and not exif:
        return encoded
    if ext not in (".png", ".jpg", ".jpeg", ".tif", ".tiff"):
        log.warning("%s: %s files are written without ICC profile and EXIF", path, ext)
        return encoded
    icc = bytes(icc) if icc else None
    try:
        if exif:
            exif = _upright_exif(bytes(exif)[6:] if bytes(exif[:6]) == _EXIF_HEADER else bytes(exif))
        if ext == ".png":
            return _png_with(encoded, icc, exif)
        if ext in (".tif", ".tiff"):
            return _tiff_with(encoded, icc, exif)
        return _jpeg_with(encoded, icc, exif, path)
    except _BAD_METADATA as exc:
        log.warning("%s: ICC profile / EXIF not written (%s)", path, exc)
        return encoded
