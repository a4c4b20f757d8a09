"""Checks on downloaded image bytes before anything decodes them in full.

The header gives the dimensions, so a decompression bomb (a tiny file declaring a huge image)
is refused before a decoder allocates it; a JPEG/PNG/WebP cut short is refused instead of
being stored with a grey band where the missing data was.
"""
from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

# We enforce our own cap below; PIL's own warning would only be noise.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class ImageRejected(ValueError):
    def __init__(self, reason: str, detail: str):
        self.reason = reason
        super().__init__(f"counteranimal:{reason}: {detail}")


def inspect(data: bytes, max_pixels: int) -> tuple[int, int, str]:
    """Return (width, height, format) from the header, or raise ImageRejected."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height, fmt = img.width, img.height, (img.format or "").upper()
    except Image.DecompressionBombError as exc:
        raise ImageRejected("too_many_pixels", str(exc)) from None
    except UnidentifiedImageError:    # its message names only a memory address; the first bytes say more
        raise ImageRejected("not_an_image", f"{len(data)} bytes that no image decoder recognises "
                                            f"(they start {data[:16]!r})") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageRejected("not_an_image", f"{len(data)} bytes that no image decoder recognises ({exc})") from None
    if width * height > max_pixels:
        raise ImageRejected("too_many_pixels", f"{width}x{height} is over the cap of {max_pixels} pixels")
    if not is_complete(data, fmt):
        raise ImageRejected("truncated", f"{fmt} data ends before its end marker ({len(data)} bytes)")
    return width, height, fmt


def is_complete(data: bytes, fmt: str) -> bool:
    # Padding after the end marker (zeros, newlines) is harmless; look for the marker before it.
    tail = data.rstrip(b"\x00\r\n\t ")[-1024:]
    if fmt == "JPEG":
        return b"\xff\xd9" in tail                     # EOI marker (some files carry trailing bytes)
    if fmt == "PNG":
        return b"IEND" in tail
    if fmt == "WEBP":
        declared = int.from_bytes(data[4:8], "little") + 8   # RIFF size field
        return len(data) >= declared
    return True


EXIF_ORIENTATION = 0x0112


def upright(data: bytes) -> bytes | None:
    """The image re-encoded (PNG, lossless) as it is meant to be seen when its EXIF orientation says
    the pixels are stored rotated or mirrored (phone photos); None when they are stored upright.

    img2dataset decodes with OpenCV's IMREAD_UNCHANGED, which ignores the orientation: without this
    a portrait photo would be stored, scored and shown to annotators on its side."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            orientation = img.getexif().get(EXIF_ORIENTATION, 1)
            if not isinstance(orientation, int) or not 2 <= orientation <= 8:
                return None
            from PIL import ImageOps

            turned = ImageOps.exif_transpose(img)
            if turned.mode not in ("RGB", "RGBA", "L", "LA"):
                turned = turned.convert("RGBA" if "A" in turned.mode else "RGB")
            buf = io.BytesIO()
            turned.save(buf, "PNG", compress_level=1)
            return buf.getvalue()
    except Exception:   # noqa: BLE001 - unreadable EXIF: keep the bytes as they are; decoding decides
        return None
