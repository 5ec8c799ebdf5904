"""Images for ``bitconvert predict``: decoded and fitted to the model with bounded memory, without TensorFlow.

Decoding: Pillow, JPEG, PNG, WebP, GIF (first frame) or BMP, into RGB (grey,
palette, RGBA and CMYK are converted; 16-bit grey keeps its precision, 16-bit
colour PNGs are read at 8 bits a channel). Only a regular file is read
(:mod:`convert.fsutil`), and its header is checked before its pixels are
decoded: more than ``max_pixels`` is refused with one line. A JPEG larger
than needed is decoded at a reduced DCT scale (1/2, 1/4 or 1/8, libjpeg's
own), the smallest that keeps its shorter side at least twice the model's
resolution, so a 50-megapixel photo costs a few megabytes, not 150.

Fitting: an image already ``res x res`` is used as it is. Any other keeps its
aspect ratio: its shorter side is resized to ``res`` (bilinear, antialiased
when shrinking), then the centre ``res x res`` is cropped. Only the pixels of
that crop are computed, with the sampling positions and triangle weights of
TensorFlow's ``tf.image.resize(..., antialias=True)`` (``ScaleAndTranslate``),
so the result equals resize-then-crop while a 20000 x 1 strip costs no more
than its crop (the full resize would be 3.2 million x 160 pixels: 6 GB).
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np

from ..errors import ImageError
from ..fsutil import open_regular

#: The formats predict decodes (Pillow's names).
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
#: Refused above this many decoded pixels (after a JPEG's DCT scaling): a decoded
#: image costs up to 7 bytes a pixel (Pillow's RGBX buffer and the array).
MAX_PIXELS = 100_000_000
_NAMES = "a JPEG, PNG, WebP, GIF or BMP image"


def _open(path: Path, size: int, max_pixels: int):
    """The Pillow image, header read and checked, a JPEG's draft scale set; pixels not yet decoded."""
    from PIL import Image

    f = open_regular(path, ImageError)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit is checked below
            image = Image.open(f, formats=FORMATS)
    except Image.DecompressionBombError:
        f.close()
        raise ImageError(f"{path}: more than {max_pixels / 1e6:.0f} megapixels; downscale it first") from None
    except (OSError, ValueError, SyntaxError):  # Pillow's UnidentifiedImageError is an OSError
        f.close()
        raise ImageError(f"{path}: not {_NAMES} (or a damaged one)") from None
    if image.format == "JPEG" and min(image.size) >= 4 * size:
        w, h = image.size
        keep = 2 * size / min(w, h)
        image.draft("RGB", (math.ceil(w * keep), math.ceil(h * keep)))
    w, h = image.size
    if w * h > max_pixels:
        image.close()
        raise ImageError(
            f"{path}: {w} x {h} pixels is more than predict decodes ({max_pixels / 1e6:.0f} megapixels); downscale it first"
        )
    return image


def check_image(path: str | os.PathLike, size: int, max_pixels: int = MAX_PIXELS) -> None:
    """Raise :class:`ImageError` unless ``path`` is a readable image of an accepted format and size (header only)."""
    _open(Path(path), size, max_pixels).close()


def decode(path: str | os.PathLike, size: int, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, float]:
    """``(pixels, full_scale)``: an ``[h, w, 3]`` uint8 or uint16 array and the value of white (255 or 65535)."""
    path = Path(path)
    image = _open(path, size, max_pixels)
    try:
        with image:
            image.seek(0)  # a GIF's (or animated WebP's) first frame
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                grey = np.asarray(image).astype(np.uint16)
                return np.repeat(grey[..., None], 3, axis=2), 65535.0
            return np.asarray(image.convert("RGB")), 255.0
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageError(f"{path}: a damaged image ({' '.join(str(exc).split())[:120]})") from None


def _spans(in_size: int, scale: float, first: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Source indices ``[count, K]`` and normalised triangle weights for output pixels ``first..first+count-1``.

    The rule of TensorFlow's ScaleAndTranslate (antialias on, translation 0):
    output pixel ``x`` samples the source at ``(x + 0.5) / scale``; the kernel
    is stretched by ``1 / scale`` when shrinking.
    """
    kernel_scale = max(1.0 / scale, 1.0)
    radius = kernel_scale  # the triangle kernel's radius is 1
    width = min(2 * math.ceil(radius) + 1, in_size)
    sample = (np.arange(first, first + count, dtype=np.float64) + 0.5) / scale
    start = np.clip(np.ceil(sample - radius - 0.5), 0, in_size - 1).astype(np.int64)
    end = np.clip(np.floor(sample + radius - 0.5), 0, in_size - 1).astype(np.int64) + 1
    index = start[:, None] + np.arange(width)[None, :]
    inside = index < end[:, None]
    index = np.minimum(index, in_size - 1)
    weight = np.where(inside, np.maximum(0.0, 1.0 - np.abs(index + 0.5 - sample[:, None]) / kernel_scale), 0.0)
    total = weight.sum(axis=1, keepdims=True)
    weight = np.divide(weight, total, out=np.zeros_like(weight), where=total > 0)
    return index, weight.astype(np.float32)


def _apply(pixels: np.ndarray, index: np.ndarray, weight: np.ndarray, axis: int) -> np.ndarray:
    """Resample ``pixels`` along ``axis`` (0 or 1) with per-output taps; float32 out, one tap at a time."""
    shape = list(pixels.shape)
    shape[axis] = index.shape[0]
    out = np.zeros(shape, np.float32)
    w_shape = (-1, 1, 1) if axis == 0 else (1, -1, 1)
    for k in range(index.shape[1]):
        out += weight[:, k].reshape(w_shape) * np.take(pixels, index[:, k], axis=axis).astype(np.float32)
    return out


def fit(pixels: np.ndarray, size: int, white: float = 255.0) -> np.ndarray:
    """``[size, size, 3]`` float32 in [0, 1]: unchanged at ``size x size``, else shorter side to ``size`` and centre crop."""
    h, w = pixels.shape[:2]
    if (h, w) == (size, size):
        return pixels.astype(np.float32) / np.float32(white)
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    rows, row_w = _spans(h, nh / h, (nh - size) // 2, size)
    cols, col_w = _spans(w, nw / w, (nw - size) // 2, size)
    r0, c0 = int(rows.min()), int(cols.min())
    source = pixels[r0 : int(rows.max()) + 1, c0 : int(cols.max()) + 1]  # a view: only what the crop reads
    out = _apply(_apply(source, rows - r0, row_w, 0), cols - c0, col_w, 1)
    return np.clip(out / np.float32(white), 0.0, 1.0)


def load(path: str | os.PathLike, size: int, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """``path`` decoded and fitted: ``[size, size, 3]`` float32 in [0, 1]."""
    pixels, white = decode(path, size, max_pixels)
    return fit(pixels, size, white)
