"""Read one multichannel image of the user's own data as ``(K, H, W)``.

Three layouts (``channel-ssl import-images``, docs/own-data.md):

- **one file, channels on an axis**: a multi-page TIFF (one page per channel), a ``(C, H, W)``
  or ``(H, W, C)`` TIFF / OME-TIFF, an RGB(A) PNG, or a ``.npy`` array. Singleton axes are
  dropped first. The channel axis is, in this order: ``channel_axis`` when given (an index into
  the array after the singleton axes are dropped), the ``C`` (or ``S``, samples) axis an
  OME-/ImageJ-TIFF names, otherwise the smallest axis, if it holds at most
  :data:`MAX_AUTO_CHANNELS` planes and no other axis is as small.
- **channels side by side** (``channel_width``): one 2-D image whose width is K times
  ``channel_width``; channel k is columns ``k*W .. (k+1)*W - 1``.
- **one file per channel** (several paths): each file is one 2-D plane.

Only 2-D planes per channel: a Z-stack or a time series (a third non-channel axis) is refused
with the shape found. Every failure raises :class:`ImageError`, whose message says what was
wrong with the file (the caller adds the table row).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

MAX_AUTO_CHANNELS = 16
TIFF_SUFFIXES = (".tif", ".tiff")


class ImageError(Exception):
    """A file that cannot be turned into ``(K, H, W)``; the message names the problem."""


def _read_tiff(path: Path) -> tuple[np.ndarray, str | None]:
    """The first series of a TIFF and its axes string (``'CYX'``, ``'IYX'``, ...), if known."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        array = series.asarray()
        axes = series.axes if len(series.axes) == array.ndim else None
    return np.asarray(array), axes


def read_array(path: str | os.PathLike) -> tuple[np.ndarray, str | None]:
    """The pixels of one file and, for TIFFs, the axes it declares. ImageError if unreadable."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in TIFF_SUFFIXES:
            return _read_tiff(path)
        if suffix == ".npy":
            return np.load(path, allow_pickle=False), None
        from PIL import Image

        with Image.open(path) as image:
            if image.mode in ("P", "PA"):  # palette indices are not intensities
                image = image.convert("RGBA" if image.mode == "PA" else "RGB")
            return np.asarray(image), None
    except ImageError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file, named to the user
        raise ImageError(f"cannot read it ({type(exc).__name__}: {exc})") from exc


def _squeeze(array: np.ndarray, axes: str | None) -> tuple[np.ndarray, str | None]:
    keep = [i for i, n in enumerate(array.shape) if n != 1]
    if len(keep) == array.ndim:
        return array, axes
    squeezed = array.reshape([array.shape[i] for i in keep])
    return squeezed, None if axes is None else "".join(axes[i] for i in keep)


def _grey_plane(array: np.ndarray, what: str) -> np.ndarray:
    """A 2-D plane; an RGB(A) image whose colour planes are equal counts as grey."""
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        colour = array[..., :3]
        if np.array_equal(colour[..., 0], colour[..., 1]) and np.array_equal(
            colour[..., 0], colour[..., 2]
        ):
            return colour[..., 0]
    if array.ndim != 2:
        raise ImageError(f"{what} must be a single 2-D plane; it has shape {array.shape}")
    return array


def channel_axis_of(shape: tuple[int, ...], axes: str | None, channel_axis: int | None) -> int:
    """Which axis of a 3-D ``shape`` holds the channels (module docstring); ImageError if unsure."""
    if channel_axis is not None:
        if not -3 <= channel_axis < 3:
            raise ImageError(f"--channel-axis {channel_axis} is not an axis of shape {shape}")
        return channel_axis % 3
    if axes is not None:
        for name in ("C", "S"):
            if axes.count(name) == 1:
                return axes.index(name)
    smallest = int(np.argmin(shape))
    if shape[smallest] > MAX_AUTO_CHANNELS or sorted(shape)[1] == shape[smallest]:
        raise ImageError(
            f"cannot tell which axis of shape {shape} holds the channels (the smallest axis "
            f"must be the only one of at most {MAX_AUTO_CHANNELS}); give --channel-axis"
        )
    return smallest


def to_channels(
    array: np.ndarray,
    axes: str | None = None,
    channel_axis: int | None = None,
    channel_width: int | None = None,
) -> np.ndarray:
    """One file's pixels -> ``(K, H, W)`` (module docstring); ImageError if not possible."""
    array, axes = _squeeze(np.asarray(array), axes)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ImageError(f"pixel type {array.dtype} is not a number")
    if channel_width is not None:
        plane = _grey_plane(array, "an image with channels side by side")
        height, width = plane.shape
        if channel_width < 1 or width % channel_width:
            raise ImageError(
                f"its width {width} is not a multiple of --channel-width {channel_width}"
            )
        return np.stack(np.split(plane, width // channel_width, axis=1))
    if array.ndim == 2:
        return array[None]
    if array.ndim != 3:
        raise ImageError(
            f"shape {array.shape}{f' (axes {axes})' if axes else ''} has {array.ndim} "
            "non-singleton axes; expected channels + a 2-D plane (no Z-stacks or time series)"
        )
    axis = channel_axis_of(array.shape, axes, channel_axis)
    return np.moveaxis(array, axis, 0)


def read_image(
    paths: list[Path],
    channel_axis: int | None = None,
    channel_width: int | None = None,
) -> np.ndarray:
    """``(K, H, W)`` from one file (channels on an axis or side by side) or one file per channel."""
    if len(paths) == 1:
        array, axes = read_array(paths[0])
        return to_channels(array, axes, channel_axis, channel_width)
    planes = []
    for path in paths:
        array, axes = read_array(path)
        array, _ = _squeeze(np.asarray(array), axes)
        try:
            planes.append(_grey_plane(array, "each file of a one-file-per-channel image"))
        except ImageError as exc:
            raise ImageError(f"{path}: {exc}") from exc
    shapes = {p.shape for p in planes}
    if len(shapes) > 1:
        raise ImageError(f"its channel files differ in size: {[p.shape for p in planes]}")
    return np.stack(planes)
