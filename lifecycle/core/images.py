"""The one image-decoding path: bytes or a file in, an RGB uint8 array of the model's size out.

featurize (training data), serve (``/predict``) and predict (batch CSV) all call
:func:`load_array` (:func:`decode_image` then :func:`resize_to_array`), so a model sees the
same pixels in production as in training: EXIF orientation applied, the first frame of an animation,
every mode (grayscale, palette, RGBA, CMYK, 16-bit) made RGB, transparency composited on
white, then one resize. The pixel count is checked from the header, before decoding, so a
decompression bomb is refused without allocating it.

A JPEG much larger than the model's size (a 400-pixel photo for a 64-pixel model) is decoded
at 1/2, 1/4 or 1/8 scale by libjpeg itself (Pillow's ``Image.draft``), which skips most of
the inverse DCT and colour conversion: about twice as fast on Kaggle-sized photos. The
reduced image keeps at least :data:`DRAFT_MARGIN` times the model's size on each side, so
the final resize still averages over several source pixels per output pixel; images
smaller than that (every image of the embedded default data) are decoded exactly as before.
preprocess checks that an image decodes with :func:`check_image`, at the smallest scale:
the whole compressed stream is still read, so truncated and corrupt files fail as they
would at full size.

A refusal is an :class:`ImageDecodeError` whose subclass, and ``reason``, names the fault:
an empty file, not an image, an unsupported format (an image Pillow knows but outside
:data:`SUPPORTED_FORMATS`), truncated or corrupt data, or over the pixel limit. preprocess
counts its dropped rows under those reasons, and predict its skipped files.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# ImageNet statistics: the convention every torchvision backbone was built for, recorded
# in each model's sidecar so that serving normalises exactly as training did.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The reduced decode keeps each side at least this many times the model's input side.
DRAFT_MARGIN = 2

# Larger than any photo a phone takes (about 50 megapixels), far below what exhausts memory:
# the default of predict.max_pixels (core/schema.py) and of the service's SERVE_MAX_PIXELS.
DEFAULT_MAX_PIXELS = 64_000_000


# What Pillow may decode here: the formats of the file names ingest accepts (``.jpg`` ...
# ``.tiff``). MPO is the multi-picture JPEG many phones write. A file Pillow identifies as
# anything else (an icon, a Photoshop file, a PPM named ``.jpg``) is an unsupported format.
SUPPORTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "BMP", "DIB", "GIF", "WEBP", "TIFF"})


class ImageDecodeError(ValueError):
    """The bytes are not an image this pipeline can use; the message says why.

    ``reason`` names the fault in one word, the same one preprocess counts its dropped rows
    under; each subclass is one fault.
    """

    reason = "unreadable_image"


class EmptyImageError(ImageDecodeError):
    """The file has no bytes at all."""

    reason = "empty_file"


class NotAnImageError(ImageDecodeError):
    """No image format recognises the bytes (text, random bytes, an SVG)."""

    reason = "not_an_image"


class UnsupportedFormatError(ImageDecodeError):
    """An image, but of a format outside :data:`SUPPORTED_FORMATS`."""

    reason = "unsupported_format"


class TruncatedImageError(ImageDecodeError):
    """The header is fine but the image data ends early."""

    reason = "truncated_image"


class CorruptImageError(ImageDecodeError):
    """The header is fine but the image data does not decode."""

    reason = "corrupt_image"


class ImageTooLargeError(ImageDecodeError):
    """The header declares more pixels than allowed; refused before any pixel is decoded."""

    reason = "over_pixel_limit"


def read_header(source: bytes | Path) -> tuple[int, int, str, str]:
    """Width, height, mode and format from the header alone (no pixel decoding)."""
    with _open(source) as image:
        return image.width, image.height, image.mode, image.format or "unknown"


def decode_image(source: bytes | Path, max_pixels: int = DEFAULT_MAX_PIXELS,
                 reduce_to: int | None = None) -> Image.Image:
    """Decode ``source`` into an RGB image, or raise :class:`ImageDecodeError`.

    ``reduce_to``: the smallest side the caller needs; a JPEG with both sides at least twice
    that is decoded at the smallest of 1/2, 1/4, 1/8 scale that keeps both sides at or above
    it (other formats ignore it). None decodes at full size.
    """
    with _open(source) as image:
        if image.width * image.height > max_pixels:
            raise ImageTooLargeError(
                f"image is {image.width}x{image.height} pixels, over the limit of {max_pixels}"
            )
        try:
            image.seek(0)
            if reduce_to:
                image.draft(None, (reduce_to, reduce_to))
            image.load()
            image = ImageOps.exif_transpose(image)
            return to_rgb(image)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
            if "truncated" in str(error).lower():
                raise TruncatedImageError(f"image data is truncated: the file ends early ({error})") from None
            raise CorruptImageError(f"image data is corrupt ({error})") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; transparency is composited on a white background."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        low, high = float(pixels.min()), float(pixels.max())
        scaled = (pixels - low) * (255.0 / (high - low)) if high > low else np.zeros_like(pixels)
        image = Image.fromarray(scaled.round().astype(np.uint8), mode="L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def resize_to_array(image: Image.Image, size: int) -> np.ndarray:
    """Resize to ``size`` x ``size`` (bilinear, antialiased) as a uint8 array (H, W, 3)."""
    resized = image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
    return np.asarray(resized, dtype=np.uint8).copy()


def load_array(source: bytes | Path, size: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """:func:`decode_image` (reduced to :data:`DRAFT_MARGIN` x ``size``) then :func:`resize_to_array`."""
    return resize_to_array(decode_image(source, max_pixels=max_pixels, reduce_to=DRAFT_MARGIN * size), size)


def check_image(source: bytes | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int, str, str]:
    """Width, height, mode and format from the header, once the image has been shown to decode.

    Decodes at the smallest scale the format allows (a JPEG at 1/8): every compressed byte
    is still read, so a truncated or corrupt file raises :class:`ImageDecodeError` as a
    full decode would, at a fraction of the cost.
    """
    header = read_header(source)
    decode_image(source, max_pixels=max_pixels, reduce_to=1)
    return header


def _open(source: bytes | Path) -> Image.Image:
    stream = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else Path(source)
    if isinstance(stream, io.BytesIO) and not source:
        raise EmptyImageError("the file is empty")
    try:
        with warnings.catch_warnings():
            # We enforce our own pixel cap before decoding; Pillow's warning adds nothing.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(stream)
    except Image.DecompressionBombError as error:
        raise ImageTooLargeError(f"image is too large to decode safely ({error})") from None
    except FileNotFoundError:
        raise ImageDecodeError("the file does not exist") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        if isinstance(stream, Path) and _is_empty(stream):
            raise EmptyImageError("the file is empty") from None
        kind = _signature(stream)
        if kind:
            raise CorruptImageError(f"starts like a {kind} file, but its header is cut short or corrupt") from None
        raise NotAnImageError(f"not a recognised image format ({type(error).__name__})") from None
    if image.format not in SUPPORTED_FORMATS:
        image.close()
        raise UnsupportedFormatError(
            f"a {image.format} image, not one of the supported formats ({', '.join(sorted(SUPPORTED_FORMATS))})"
        )
    return image


# The first bytes of each supported format: a file that starts like one but does not open is a
# damaged image, not a file of some other kind.
_SIGNATURES = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
               (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))  # not BMP's two letters "BM": text starts so too


def _signature(stream: io.BytesIO | Path) -> str | None:
    try:
        if isinstance(stream, Path):
            with open(stream, "rb") as file:
                head = file.read(12)
        else:
            head = stream.getvalue()[:12]
    except OSError:
        return None
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return next((kind for magic, kind in _SIGNATURES if head.startswith(magic)), None)


def _is_empty(path: Path) -> bool:
    try:
        return path.stat().st_size == 0
    except OSError:
        return False
