"""Uploaded pictures, shared by the chat images (ROUTES row 10) and the maintenance pictures (row 60).

Only what is generic lives here: the limits, recognising a picture by its content, cleaning it, and the random
public id of its URL. Where a picture is stored and who may see it belong to its owner
(``support.images`` for the chat, ``maintenance.pictures`` for maintenances); the route-side helpers (reading the
file part off the event loop, the response headers) are in ``web.media``.

What an upload goes through, in order:

1. Size: at most ``MAX_IMAGE_BYTES`` (10 MiB) of file data, else 413 code 6. An upload route's request body may be
   that plus a little multipart overhead (``MAX_UPLOAD_BODY``, declared per route with
   ``web.request.allow_larger_body``; every other route keeps the app's 1 MiB).
2. Kind, by content only: the first bytes must be a JPEG, PNG or WebP signature, and Pillow must open the data as
   that same format (``formats=``, so Pillow never tries its other decoders). The file name and the declared
   content type are never read. Anything else: 415 code 23.
3. Decompression bombs: the pixel count is read from the header, before any decoding, and refused above
   ``MAX_PIXELS`` (413 code 6: too large, in pixels rather than bytes). Pillow's own global bomb check
   stays on behind it, and its limits on PNG text chunks refuse a zlib bomb hidden there (400 code 2).
4. Decoding: a truncated or corrupt image fails here, 400 code 2.
5. Cleaning: the EXIF orientation is applied (``ImageOps.exif_transpose``), then the pixels are copied into a new
   image (``Image.frombytes``) that carries no ``info`` at all, and encoded again in the same format. So EXIF
   (GPS included), XMP, IPTC, PNG text chunks, comments and the ICC profile are all gone: dropping ICC may shift the
   colours of a wide-gamut photo slightly, the price of an output that provably carries nothing but pixels. Only
   the first frame of an animated PNG or WebP is kept. JPEG is re-encoded at quality 90 (one more generation of
   loss), PNG losslessly, WebP at quality 90 (lossy, even from a lossless source).

Steps 2-5 are CPU work: they run in a worker thread (``trio.to_thread.run_sync``), at most ``DECODERS`` at a
time for the whole process (chat and maintenance uploads share the budget), so the event loop keeps serving while
a large photo is decoded and a burst of uploads cannot hold more than a few decoded images in memory
(``MAX_PIXELS`` RGBA is ~200 MB each).
"""

from __future__ import annotations

import re
import secrets
import warnings
from dataclasses import dataclass
from io import BytesIO

import trio
from PIL import Image, ImageOps

from protocols.errors import ErrorCode

from .errors import ApiError

MAX_IMAGE_BYTES = 10 * 1024 * 1024
# The request body of an upload route: the image and its multipart framing (boundaries, part headers).
MAX_UPLOAD_BODY = MAX_IMAGE_BYTES + 64 * 1024
# 50 megapixels: any phone photo (a 48 MP sensor's 8000x6000 included); a 10 MiB file claiming more is refused
# before it is decoded.
MAX_PIXELS = 50_000_000
DECODERS = trio.CapacityLimiter(2)
# Pillow warns from 89 MP and refuses from 178 MP (its global check, left on); ours refuses from 50 MP, right after
# the header is read, so its warning would only be noise. Set once at import: ``warnings`` filters are
# process-wide and not thread-safe to change per call.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

# Pillow's format name -> the content type stored and served.
CONTENT_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
_SAVE_OPTIONS: dict[str, dict[str, object]] = {
    "JPEG": {"quality": 90},
    "PNG": {},
    "WEBP": {"quality": 90},
}


@dataclass(frozen=True, slots=True)
class CleanImage:
    data: bytes
    content_type: str
    width: int
    height: int


def sniff(data: bytes) -> str | None:
    """The Pillow format name of ``data`` by its signature, or None: JPEG, PNG and WebP only."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def unsupported() -> ApiError:
    return ApiError(ErrorCode.UNSUPPORTED_MEDIA_TYPE, "unsupported image: send a JPEG, PNG or WebP picture")


def too_large() -> ApiError:
    return ApiError(ErrorCode.PAYLOAD_TOO_LARGE, f"image too large: at most {MAX_IMAGE_BYTES} bytes")


def _too_many_pixels() -> ApiError:
    return ApiError(ErrorCode.PAYLOAD_TOO_LARGE, f"image too large: at most {MAX_PIXELS} pixels")


def _corrupt() -> ApiError:
    return ApiError(ErrorCode.INVALID_INPUT, "invalid input: the image could not be decoded")


def _plain_mode(image: Image.Image, kind: str) -> str:
    """The mode the cleaned image is written in: one the format stores without extra info (no palette)."""
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if kind == "JPEG":
        return "L" if image.mode in ("1", "L") else "RGB"
    if image.mode in ("1", "L") and not has_alpha:
        return "L"
    return "RGBA" if has_alpha else "RGB"


def clean_image(data: bytes) -> CleanImage:
    """Check, decode and re-encode ``data`` without any metadata (blocking: run it in a thread).

    Raises ApiError: 413/6 too many bytes or pixels, 415/23 not a JPEG, PNG or WebP, 400/2 undecodable.
    """
    if len(data) > MAX_IMAGE_BYTES:
        raise too_large()
    kind = sniff(data)
    if kind is None:
        raise unsupported()
    try:
        with Image.open(BytesIO(data), formats=[kind]) as opened:
            if opened.width * opened.height > MAX_PIXELS:
                raise _too_many_pixels()
            opened.load()
            upright = ImageOps.exif_transpose(opened)
            mode = _plain_mode(upright, kind)
            pixels = upright.convert(mode) if upright.mode != mode else upright
            clean = Image.frombytes(mode, pixels.size, pixels.tobytes())
    except ApiError:
        raise
    except Image.DecompressionBombError:
        raise _too_many_pixels() from None
    except MemoryError:
        raise
    except Exception:
        # Pillow's ways of saying "truncated or corrupt" are many (OSError, SyntaxError, ValueError, struct.error,
        # EOFError, IndexError, an unidentifiable body...), and a hostile file may find others: the signature said
        # JPEG, PNG or WebP, so whatever fails to decode is a corrupt one.
        raise _corrupt() from None
    out = BytesIO()
    clean.save(out, format=kind, **_SAVE_OPTIONS[kind])
    return CleanImage(out.getvalue(), CONTENT_TYPES[kind], clean.width, clean.height)


async def prepare(data: bytes) -> CleanImage:
    """``clean_image`` in a worker thread (at most ``DECODERS`` at once); the loop stays free meanwhile."""
    if len(data) > MAX_IMAGE_BYTES:  # no thread for what is refused anyway
        raise too_large()
    if sniff(data) is None:
        raise unsupported()
    return await trio.to_thread.run_sync(clean_image, data, limiter=DECODERS)


def new_public_id() -> str:
    """A picture's id in its URL: 128 random bits, URL-safe (22 characters); guessing one is hopeless. Never the
    row id, so a URL tells nothing of how many pictures exist."""
    return secrets.token_urlsafe(16)


_PUBLIC_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def is_public_id(text: str) -> bool:
    """Could ``text`` be a picture's public id (URL-safe base64, what ``new_public_id`` writes)? Anything else
    (NUL, other characters) names no picture and is never sent to the database."""
    return _PUBLIC_ID.fullmatch(text) is not None
