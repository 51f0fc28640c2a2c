"""Image I/O: bit depth, channels, alpha, RGB order, corrupt files, listing, tensor conversion; photo
metadata (EXIF orientation applied on read, ICC profile and EXIF carried to the output)."""
from __future__ import annotations

import logging
import struct
import zlib

import cv2
import numpy as np
import pytest
import torch

from amcfd.data.imageio import (
    IMAGE_EXTENSIONS,
    ImageReadError,
    list_images,
    read_image,
    read_image_raw,
    to_image,
    to_tensor,
    write_image,
)


def levels(shape, peak, seed=0):
    """Random image whose values are exact quantisation levels k/peak."""
    rng = np.random.default_rng(seed)
    return (rng.integers(0, peak + 1, size=shape) / peak).astype(np.float32)


def test_8bit_rgb_png_round_trip_is_exact(tmp_path):
    img = levels((9, 11, 3), 255)
    write_image(tmp_path / "a.png", img)
    back, info = read_image(tmp_path / "a.png")
    assert back.dtype == np.float32 and back.shape == (9, 11, 3)
    assert info["bit_depth"] == 8 and info["channels"] == 3 and info["alpha"] is None
    np.testing.assert_array_equal(back, img)


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_16bit_is_kept(tmp_path, ext):
    img = levels((8, 10, 3), 65535)
    write_image(tmp_path / f"a{ext}", img, bit_depth=16)
    back, info = read_image(tmp_path / f"a{ext}")
    assert info["bit_depth"] == 16
    np.testing.assert_array_equal(back, img)
    assert len(np.unique(np.round(back * 65535) % 257)) > 1   # not 8-bit values in disguise


def test_gray_stays_one_channel(tmp_path):
    img = levels((7, 5, 1), 255)
    write_image(tmp_path / "g.png", img)
    back, info = read_image(tmp_path / "g.png")
    assert back.shape == (7, 5, 1) and info["channels"] == 1
    np.testing.assert_array_equal(back, img)
    write_image(tmp_path / "g2.png", img[:, :, 0])            # HxW accepted too
    np.testing.assert_array_equal(read_image(tmp_path / "g2.png")[0], img)


def test_alpha_is_split_off_and_reattached(tmp_path):
    img, alpha = levels((6, 6, 3), 255, 1), levels((6, 6), 255, 2)
    write_image(tmp_path / "rgba.png", img, alpha=alpha)
    back, info = read_image(tmp_path / "rgba.png")
    assert back.shape == (6, 6, 3) and info["channels"] == 4
    np.testing.assert_array_equal(back, img)
    np.testing.assert_array_equal(info["alpha"], alpha)


def test_rgb_order_not_bgr(tmp_path):
    bgr = np.zeros((4, 4, 3), np.uint8)
    bgr[..., 2] = 255                                         # red in OpenCV's BGR order
    cv2.imwrite(str(tmp_path / "red.png"), bgr)
    img, _ = read_image(tmp_path / "red.png")
    assert img[..., 0].min() == 1.0 and img[..., 1:].max() == 0.0
    write_image(tmp_path / "red2.png", img)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "red2.png")), bgr)


def test_jpeg_reads_close_and_rejects_16bit(tmp_path):
    img = np.tile(np.linspace(0, 1, 32, dtype=np.float32)[None, :, None], (32, 1, 3))
    write_image(tmp_path / "a.jpg", img)
    back, info = read_image(tmp_path / "a.jpg")
    assert info["bit_depth"] == 8 and np.abs(back - img).max() < 0.05
    with pytest.raises(ValueError, match="16"):
        write_image(tmp_path / "b.jpg", img, bit_depth=16)


def test_write_rounds_clips_and_rejects_nan(tmp_path):
    img = np.array([[[-0.5, 0.5 / 255 + 1e-4, 2.0]]], np.float32)
    write_image(tmp_path / "c.png", img)
    np.testing.assert_array_equal(read_image(tmp_path / "c.png")[0] * 255, [[[0, 1, 255]]])
    with pytest.raises(ValueError, match="NaN"):
        write_image(tmp_path / "n.png", np.full((2, 2, 3), np.nan, np.float32))


def test_write_creates_folders_and_leaves_no_temp_files(tmp_path):
    out = tmp_path / "deep" / "er" / "x.png"
    write_image(out, levels((3, 3, 3), 255))
    assert out.exists() and [p.name for p in out.parent.iterdir()] == ["x.png"]


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_truncated_file_error_names_the_file(tmp_path, ext):
    good = tmp_path / f"good{ext}"
    write_image(good, levels((64, 64, 3), 255))
    data = good.read_bytes()
    bad = tmp_path / f"truncated{ext}"
    bad.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ImageReadError, match=f"truncated{ext}"):
        read_image(bad)


def test_garbage_empty_and_missing_files_name_the_file(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"this is not an image at all")
    (tmp_path / "empty.png").write_bytes(b"")
    for name in ("junk.png", "empty.png", "missing.png"):
        with pytest.raises(ImageReadError, match=name):
            read_image(tmp_path / name)
    assert issubclass(ImageReadError, ValueError)


def test_list_images_sorted_filtered_recursive(tmp_path):
    for name in ("b.png", "a.JPG", "c.txt", ".hidden.png", "sub/d.tif"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["a.JPG", "b.png"]
    assert [p.name for p in list_images(tmp_path, recursive=True)] == ["a.JPG", "b.png", "d.tif"]
    assert list_images(tmp_path / "b.png") == [tmp_path / "b.png"]
    assert ".png" in IMAGE_EXTENSIONS
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_images(tmp_path / "nowhere")


def test_tensor_conversion_round_trip():
    img = levels((5, 7, 3), 255)
    t = to_tensor(img)
    assert t.shape == (3, 5, 7) and t.dtype == torch.float32
    np.testing.assert_array_equal(to_image(t), img)
    np.testing.assert_array_equal(to_image(t[None]), img)
    assert to_tensor(img[:, :, 0]).shape == (1, 5, 7)


# --- Photo metadata. The files are built here byte by byte, independently of amcfd's parser. ---------------

# What a viewer does to the stored pixels for each EXIF orientation (the EXIF specification's wording).
UPRIGHT = {
    1: lambda a: a,
    2: np.fliplr,                                   # mirror horizontal
    3: lambda a: np.rot90(a, 2),                    # rotate 180
    4: np.flipud,                                   # mirror vertical
    5: lambda a: np.rot90(np.fliplr(a), 1),         # mirror horizontal, rotate 270 CW
    6: lambda a: np.rot90(a, -1),                   # rotate 90 CW
    7: lambda a: np.rot90(np.fliplr(a), -1),        # mirror horizontal, rotate 90 CW
    8: lambda a: np.rot90(a, 1),                    # rotate 270 CW
}
# Where the stored top-left pixel is seen (row 0 / column 0 per the specification: 5 = left-top, 6 = right-top...).
CORNER = {1: "tl", 2: "tr", 3: "br", 4: "bl", 5: "tl", 6: "tr", 7: "br", 8: "bl"}
MAKE = b"AMCFD test camera\0"


def tiff_structure(entries, e="<", tail=b""):
    """IFD0 at offset 8 with entries (tag, type, count, value bytes), long values after it, then ``tail``;
    a value None is the offset of ``tail`` (StripOffsets), a dict a sub-IFD's entries."""
    def pack(entries, at):
        head = at + 2 + 12 * len(entries) + 4
        fields, extra = struct.pack(e + "H", len(entries)), b""
        for tag, typ, count, value in sorted(entries):
            if isinstance(value, list):                   # sub-IFD
                value = pack(value, head + len(extra))
                fields += struct.pack(e + "HHII", tag, 4, 1, head + len(extra))
                extra += value
            elif len(value) <= 4:
                fields += struct.pack(e + "HHI", tag, typ, count) + value.ljust(4, b"\0")
            else:
                fields += struct.pack(e + "HHII", tag, typ, count, head + len(extra))
                extra += value + b"\0" * (len(value) % 2)
        return fields + b"\0\0\0\0" + extra

    mark = b"II*\0" if e == "<" else b"MM\0*"
    tail_at = 8 + len(pack([(t, ty, c, b"\0" * 4 if v is None else v) for t, ty, c, v in entries], 8))
    entries = [(t, ty, c, struct.pack(e + "I", tail_at) if v is None else v) for t, ty, c, v in entries]
    return mark + struct.pack(e + "I", 8) + pack(entries, 8) + tail


def exif_block(orientation=None, e="<", exposure=None):
    entries = [(271, 2, len(MAKE), MAKE)]
    if orientation is not None:
        entries.append((274, 3, 1, struct.pack(e + "H", orientation)))
    if exposure is not None:                               # Exif sub-IFD: ExposureTime, a rational
        entries.append((34665, 4, 1, [(33434, 5, 1, struct.pack(e + "II", *exposure))]))
    return tiff_structure(entries, e)


def ifd(block, offset=None):
    """{tag: (type, count, value bytes)} of IFD0 (or the IFD at ``offset``) of a TIFF structure."""
    e = "<" if block[:2] == b"II" else ">"
    offset = struct.unpack_from(e + "I", block, 4)[0] if offset is None else offset
    out = {}
    for i in range(struct.unpack_from(e + "H", block, offset)[0]):
        tag, typ, count = struct.unpack_from(e + "HHI", block, offset + 2 + 12 * i)
        size = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 7: 1}[typ] * count
        at = offset + 10 + 12 * i if size <= 4 else struct.unpack_from(e + "I", block, offset + 10 + 12 * i)[0]
        out[tag] = (typ, count, block[at:at + size])
    return out


def orientation_of(block):
    e = "<" if block[:2] == b"II" else ">"
    entry = ifd(block).get(274)
    return struct.unpack(e + "H", entry[2])[0] if entry else None


def dummy_icc(size=132):
    """An ICC profile header that libpng accepts (size, class, colour space, PCS, signature), no tags."""
    head = struct.pack(">I4s4sI4s4s4s", size, b"none", b"\x04\x30\0\0", 0, b"mntr", b"RGB ", b"XYZ ")
    head = head.ljust(36, b"\0") + b"acsp"
    body = bytes(np.random.default_rng(size).integers(0, 256, size - 132, dtype=np.uint8))
    return head.ljust(128, b"\0") + b"\0\0\0\0" + body


def jpeg_segment(marker, payload):
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def with_jpeg_segments(jpeg, *segments):
    return jpeg[:2] + b"".join(segments) + jpeg[2:]


def png_chunk(kind, payload):
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def with_png_chunks(png, *chunks):
    at = 8 + 25                                            # signature, IHDR
    return png[:at] + b"".join(chunks) + png[at:]


def png_chunks(data):
    pos, out = 8, {}
    while pos < len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        out[kind] = data[pos + 8:pos + 8 + length]
        pos += 12 + length
    return out


def encoded(ext, raw):
    ok, buf = cv2.imencode(ext, raw)
    assert ok
    return buf.tobytes()


def photo(h=12, w=20, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_jpeg_exif_orientation_is_applied(tmp_path, orientation):
    plain = encoded(".jpg", photo())
    stored = cv2.imdecode(np.frombuffer(plain, np.uint8), cv2.IMREAD_UNCHANGED)[:, :, ::-1]
    e = "<" if orientation % 2 else ">"
    exif = exif_block(orientation, e)
    (tmp_path / "p.jpg").write_bytes(with_jpeg_segments(plain, jpeg_segment(0xE1, b"Exif\0\0" + exif)))
    raw, info = read_image_raw(tmp_path / "p.jpg")
    np.testing.assert_array_equal(raw, UPRIGHT[orientation](stored))
    assert raw.shape[:2] == ((12, 20) if orientation < 5 else (20, 12))
    assert info["orientation"] == orientation
    assert orientation_of(info["exif"]) == 1 and ifd(info["exif"])[271][2] == MAKE
    assert len(info["exif"]) == len(exif)                  # patched in place: maker-note offsets stay valid


def tiff_file(img, orientation, e="<"):
    """Uncompressed strip TIFF (gray or RGB, 8 or 16 bits) with an Orientation tag."""
    h, w, c = img.shape
    bits = struct.pack(e + "H" * c, *[img.dtype.itemsize * 8] * c)
    entries = [(256, 3, 1, struct.pack(e + "H", w)), (257, 3, 1, struct.pack(e + "H", h)), (258, 3, c, bits),
               (259, 3, 1, struct.pack(e + "H", 1)), (262, 3, 1, struct.pack(e + "H", 2 if c == 3 else 1)),
               (273, 4, 1, None), (274, 3, 1, struct.pack(e + "H", orientation)),
               (277, 3, 1, struct.pack(e + "H", c)), (278, 3, 1, struct.pack(e + "H", h)),
               (279, 4, 1, struct.pack(e + "I", img.nbytes))]
    return tiff_structure(entries, e, img.astype(img.dtype.newbyteorder(e)).tobytes())


@pytest.mark.parametrize("orientation", range(1, 9))
def test_tiff_orientation_is_applied_once(tmp_path, orientation):
    """OpenCV's TIFF decoder applies the tag itself, even with IMREAD_UNCHANGED: not twice."""
    rng = np.random.default_rng(orientation)
    for img, e in ((rng.integers(0, 65536, (5, 7, 3), dtype=np.uint16), ">"),
                   (rng.integers(0, 256, (5, 7, 1), dtype=np.uint8), "<")):
        (tmp_path / "p.tif").write_bytes(tiff_file(img, orientation, e))
        raw, info = read_image_raw(tmp_path / "p.tif")
        assert raw.dtype == img.dtype and info["orientation"] == orientation
        np.testing.assert_array_equal(raw, UPRIGHT[orientation](img))


def png_with_orientation(tmp_path, orientation, rgba):
    (tmp_path / "p.png").write_bytes(with_png_chunks(encoded(".png", rgba[:, :, [2, 1, 0, 3]]),
                                                     png_chunk(b"eXIf", exif_block(orientation, ">"))))
    return tmp_path / "p.png"


@pytest.mark.parametrize("orientation", range(1, 9))
def test_png_exif_orientation_moves_the_corner_and_alpha(tmp_path, orientation):
    rgba = np.zeros((6, 10, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)                          # stored top-left: red, opaque; the rest transparent
    img, info = read_image(png_with_orientation(tmp_path, orientation, rgba))
    h, w = img.shape[:2]
    assert (h, w) == ((6, 10) if orientation < 5 else (10, 6))
    row, col = {"tl": (0, 0), "tr": (0, w - 1), "br": (h - 1, w - 1), "bl": (h - 1, 0)}[CORNER[orientation]]
    assert img[row, col, 0] == 1.0 and img[..., 0].sum() == 1.0
    np.testing.assert_array_equal(info["alpha"], img[..., 0])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_agrees_with_pillow(tmp_path, orientation):
    """Cross-check with Pillow's exif_transpose where Pillow happens to be installed (not a dependency)."""
    image_ops = pytest.importorskip("PIL.ImageOps")
    from PIL import Image

    rgba = np.random.default_rng(orientation).integers(0, 256, (6, 10, 4), dtype=np.uint8)
    path = png_with_orientation(tmp_path, orientation, rgba)
    with Image.open(path) as im:
        expected = np.asarray(image_ops.exif_transpose(im))
    img, info = read_image(path)
    np.testing.assert_array_equal(np.round(img * 255), expected[..., :3])
    np.testing.assert_array_equal(np.round(info["alpha"] * 255), expected[..., 3])


@pytest.mark.parametrize("source", ["jpg", "png"])
def test_icc_and_exif_are_carried_to_the_png_output(tmp_path, source):
    icc, exif = dummy_icc(), exif_block(6, "<", exposure=(1, 250))
    if source == "jpg":
        data = with_jpeg_segments(encoded(".jpg", photo()), jpeg_segment(0xE1, b"Exif\0\0" + exif),
                                  jpeg_segment(0xE2, b"ICC_PROFILE\0\x01\x01" + icc))
    else:
        data = with_png_chunks(encoded(".png", photo()), png_chunk(b"iCCP", b"cam\0\0" + zlib.compress(icc)),
                               png_chunk(b"eXIf", exif))
    (tmp_path / f"in.{source}").write_bytes(data)
    img, info = read_image(tmp_path / f"in.{source}")
    assert info["icc"] == icc and info["orientation"] == 6 and img.shape == (20, 12, 3)

    out = write_image(tmp_path / "out.png", img, icc=info["icc"], exif=info["exif"])
    chunks = png_chunks(out.read_bytes())
    assert zlib.decompress(chunks[b"iCCP"].split(b"\0", 1)[1][1:]) == icc
    assert orientation_of(chunks[b"eXIf"]) == 1 and ifd(chunks[b"eXIf"])[271][2] == MAKE
    back, back_info = read_image(out)
    np.testing.assert_array_equal(back, img)               # upright as written, not rotated again
    assert back_info["orientation"] == 1 and back_info["icc"] == icc


def test_large_icc_profile_spans_jpeg_segments(tmp_path):
    icc, exif = dummy_icc(150_000), exif_block(8, ">")
    out = write_image(tmp_path / "out.jpg", photo() / 255.0, icc=icc, exif=exif)
    data = out.read_bytes()
    assert data.count(b"ICC_PROFILE\0") == 3 and data[2:4] == b"\xff\xe0"       # JFIF APP0 still first
    img, info = read_image(out)
    assert info["icc"] == icc and info["orientation"] == 1 and orientation_of(info["exif"]) == 1
    assert img.shape == (12, 20, 3)


def test_tiff_output_carries_icc_and_exif(tmp_path):
    """ICC in tag 34675; the EXIF block's Make and Exif sub-IFD, converted from big- to little-endian."""
    icc, img = dummy_icc(300), levels((8, 10, 3), 65535)
    out = write_image(tmp_path / "out.tif", img, bit_depth=16, icc=icc, exif=exif_block(3, ">", exposure=(1, 250)))
    data = out.read_bytes()
    tags = ifd(data)
    assert tags[34675][2] == icc and tags[271][2] == MAKE and 274 not in tags
    sub = ifd(data, struct.unpack("<I", tags[34665][2])[0])
    assert struct.unpack("<II", sub[33434][2]) == (1, 250)
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    back, info = read_image(out)
    np.testing.assert_array_equal(back, img)
    assert info["icc"] == icc and info["orientation"] == 1
    assert orientation_of(info["exif"]) == 1 and ifd(info["exif"])[271][2] == MAKE


@pytest.mark.parametrize("ext", [".tif", ".png"])
def test_16bit_file_written_back_is_identical(tmp_path, ext):
    stored = np.random.default_rng(3).integers(0, 65536, (9, 13, 3), dtype=np.uint16)    # BGR, as cv2 writes
    (tmp_path / f"in{ext}").write_bytes(encoded(ext, stored))
    img, info = read_image(tmp_path / f"in{ext}")
    write_image(tmp_path / f"out{ext}", img, bit_depth=info["bit_depth"], alpha=info["alpha"])
    back = cv2.imdecode(np.fromfile(tmp_path / f"out{ext}", np.uint8), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, stored)


def test_broken_metadata_is_skipped_with_a_warning(tmp_path, caplog):
    jpeg = with_jpeg_segments(encoded(".jpg", photo()), jpeg_segment(0xE1, b"Exif\0\0not a tiff"))
    png = with_png_chunks(encoded(".png", photo()), png_chunk(b"iCCP", b"cam\0\0not zlib"),
                          png_chunk(b"eXIf", exif_block(6)[:20]))          # truncated inside IFD0
    (tmp_path / "a.jpg").write_bytes(jpeg)
    (tmp_path / "b.png").write_bytes(png)
    with caplog.at_level(logging.WARNING, logger="amcfd"):
        for name in ("a.jpg", "b.png"):
            img, info = read_image(tmp_path / name)
            assert img.shape == (12, 20, 3) and info["orientation"] == 1
            assert info["icc"] is None and info["exif"] is None
    assert "a.jpg" in caplog.text and "b.png" in caplog.text


def test_formats_without_metadata_warn_and_write(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="amcfd"):
        write_image(tmp_path / "a.bmp", photo() / 255.0, icc=dummy_icc(), exif=exif_block(1))
    assert "a.bmp" in caplog.text and read_image(tmp_path / "a.bmp")[0].shape == (12, 20, 3)
