"""The demo's drawing code, shared by every demo generator: primitives and the CHAMMI cells.

Float32 images in [0, 1] on an (H, W) pixel grid. :func:`stable_rng` seeds a generator from
ints and strings, stably across processes; :func:`blur` (edge padding) and
:func:`blur_reflect` (reflect padding, the JUMP-CP demo's) are the two Gaussian blurs, kept
apart because each demo's bytes depend on its own; :func:`unit_to_uint8` quantises [0, 1] to
uint8. :func:`render_allen`, :func:`render_hpa` and :func:`render_cp` draw one cell of each
CHAMMI dataset (docs/paper.md section 3 describes what each factor changes); the demo CHAMMI
(:mod:`channel_ssl.data.demo.chammi`) and the demo copies of the sources CHAMMI was cut from
(HPA, WTC, OpenCell, Cell Painting) draw their cells with them, so the same factors look alike
in both. One module because the three cell renderers share every primitive; it is a little
over 500 lines for that reason.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

# ---- drawing primitives (float32 images in [0, 1] on an (H, W) pixel grid) ---------------


@dataclass(frozen=True)
class Ellipse:
    cy: float
    cx: float
    ry: float
    rx: float
    theta: float = 0.0  # rotation of the rx axis from the x axis, radians

    def radius(self, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        """Normalised elliptical radius: < 1 inside, 1 on the outline."""
        c, s = math.cos(self.theta), math.sin(self.theta)
        dy, dx = yy - self.cy, xx - self.cx
        u = c * dx + s * dy
        v = -s * dx + c * dy
        return np.sqrt((u / self.rx) ** 2 + (v / self.ry) ** 2)

    def point(self, rho: np.ndarray, angle: np.ndarray) -> np.ndarray:
        """Points at normalised radius ``rho`` and polar ``angle``; returns (n, 2) as (y, x)."""
        u = rho * self.rx * np.cos(angle)
        v = rho * self.ry * np.sin(angle)
        c, s = math.cos(self.theta), math.sin(self.theta)
        return np.stack([self.cy + s * u + c * v, self.cx + c * u - s * v], axis=1)


def _inside(r: np.ndarray, edge: float = 0.12) -> np.ndarray:
    """Soft indicator of r < 1 (sigmoid edge), so shapes are anti-aliased."""
    return 1.0 / (1.0 + np.exp(np.clip((r - 1.0) / edge, -30, 30)))


def _ring(r: np.ndarray, width: float = 0.1) -> np.ndarray:
    return np.exp(-(((r - 1.0) / width) ** 2))


def _spots(yy, xx, centres: np.ndarray, sigma: float, amps) -> np.ndarray:
    """Sum of isotropic Gaussian spots at ``centres`` (n, 2) with amplitudes ``amps``."""
    if len(centres) == 0:
        return np.zeros_like(yy)
    amps = np.broadcast_to(np.asarray(amps, dtype=np.float32), (len(centres),))
    d2 = (yy[None] - centres[:, 0, None, None]) ** 2 + (xx[None] - centres[:, 1, None, None]) ** 2
    return np.einsum("n,nhw->hw", amps, np.exp(-d2 / (2 * sigma**2)))


def _segments(yy, xx, p0: np.ndarray, p1: np.ndarray, width: float) -> np.ndarray:
    """Brightest of line segments p0[i] -> p1[i] ((n, 2) each, as (y, x)) drawn with a Gaussian profile."""
    if len(p0) == 0:
        return np.zeros_like(yy)
    d = p1 - p0
    length2 = np.maximum((d**2).sum(1), 1e-6)
    py = yy[None] - p0[:, 0, None, None]
    px = xx[None] - p0[:, 1, None, None]
    t = np.clip(
        (py * d[:, 0, None, None] + px * d[:, 1, None, None]) / length2[:, None, None], 0, 1
    )
    dist2 = (py - t * d[:, 0, None, None]) ** 2 + (px - t * d[:, 1, None, None]) ** 2
    return np.exp(-dist2 / (2 * width**2)).max(0)


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of the last two axes (edge padding); identity for sigma < 0.1."""
    if sigma < 0.1:
        return image
    radius = max(1, int(math.ceil(2.5 * sigma)))
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-(offsets**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    out = image
    for axis in (-2, -1):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="edge")
        n = out.shape[axis]
        acc = np.zeros_like(out)
        for k, w in zip(offsets, kernel, strict=True):
            acc += w * np.take(padded, np.arange(radius + k, radius + k + n), axis=axis)
        out = acc
    return out


def blur_reflect(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur (reflect padding)."""
    radius = max(1, int(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k /= k.sum()
    padded = np.pad(image, radius, mode="reflect")
    rows = np.apply_along_axis(lambda r: np.convolve(r, k, mode="valid"), 1, padded)
    return np.apply_along_axis(lambda c: np.convolve(c, k, mode="valid"), 0, rows)


def _smooth_noise(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    """Smooth random texture in [0, 1]."""
    field_ = blur(rng.standard_normal(shape).astype(np.float32), sigma)
    lo, hi = field_.min(), field_.max()
    return (field_ - lo) / max(hi - lo, 1e-6)


def _grid(shape) -> tuple[np.ndarray, np.ndarray]:
    h, w = shape
    return np.meshgrid(
        np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij"
    )


def _points_in(rng, ellipse: Ellipse, n: int, rmin: float, rmax: float) -> np.ndarray:
    """``n`` uniform points in the elliptical annulus rmin <= r <= rmax; (n, 2) as (y, x)."""
    rho = np.sqrt(rng.uniform(rmin**2, rmax**2, n))
    return ellipse.point(rho, rng.uniform(0, 2 * np.pi, n))


def unit_to_uint8(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


@dataclass(frozen=True)
class Acquisition:
    """Batch effect of one plate/source/image: out = (gain * blur(img) + offset) ** gamma + noise."""

    gain: tuple[float, ...]
    offset: tuple[float, ...]
    blur: float
    gamma: float
    noise: float

    def apply(self, rng: np.random.Generator, stack: np.ndarray) -> np.ndarray:
        out = blur(stack, self.blur)
        gain = np.asarray(self.gain, dtype=np.float32)[:, None, None]
        offset = np.asarray(self.offset, dtype=np.float32)[:, None, None]
        out = np.clip(gain * out + offset, 0.0, 1.0) ** self.gamma
        return out + rng.normal(0.0, self.noise, out.shape).astype(np.float32)


def stable_rng(*keys) -> np.random.Generator:
    """Generator seeded from ints and strings (strings via crc32: stable across processes)."""
    ints = [k if isinstance(k, int) else zlib.crc32(str(k).encode()) for k in keys]
    return np.random.default_rng(np.random.SeedSequence(ints))


# ---- Allen (WTC-11) ----------------------------------------------------------------------


def render_allen(rng, stage: str, structure: str, shape) -> np.ndarray:
    """One WTC-11 cell: (3, H, W) float, channels nucleus, membrane, protein."""
    h, w = shape
    yy, xx = _grid(shape)
    cy, cx = h / 2 + rng.normal(0, 0.7), w / 2 + rng.normal(0, 1.0)
    axis = rng.uniform(-0.35, 0.35)  # division axis, close to the long image axis
    ca, sa = math.cos(axis), math.sin(axis)
    scale = min(h / 24, w / 36)
    cells: list[Ellipse] = []
    nuclei: list[Ellipse] = []
    nucleus = np.zeros(shape, np.float32)

    def along(d):  # point at signed distance d along the division axis
        return cy + sa * d, cx + ca * d

    if stage == "M0":
        cell = Ellipse(cy, cx, rng.uniform(7, 9) * scale, rng.uniform(11, 14) * scale, axis)
        nuc = Ellipse(cy, cx, cell.ry * 0.55, cell.rx * 0.5, axis + rng.normal(0, 0.2))
        cells, nuclei = [cell], [nuc]
        nucleus = _inside(nuc.radius(yy, xx)) * (0.42 + 0.18 * _smooth_noise(rng, shape, 1.5))
    elif stage in ("M1M2", "M3", "M4M5"):
        r = rng.uniform(8, 9.5) * scale  # mitotic cells round up
        cell = Ellipse(cy, cx, r, r * rng.uniform(1.0, 1.12), axis)
        cells = [cell]
        if stage == "M1M2":  # condensing chromosomes: bright granules in a round nucleus
            nuc = Ellipse(cy, cx, 0.5 * r, 0.5 * r)
            nuclei = [nuc]
            granules = _points_in(rng, nuc, int(rng.integers(9, 15)), 0.0, 0.9)
            nucleus = 0.25 * _inside(nuc.radius(yy, xx)) + _spots(yy, xx, granules, 0.7, 0.55)
        else:
            offsets = [0.0] if stage == "M3" else [-1, 1]
            gap = 0.0 if stage == "M3" else rng.uniform(2.5, 4.0) * scale
            for o in offsets:
                py, px = along(o * gap)
                plate = Ellipse(py, px, 0.55 * r, 1.1 * scale, axis)  # plate across the axis
                nuclei.append(plate)
                nucleus = np.maximum(nucleus, 0.9 * _inside(plate.radius(yy, xx), 0.2))
    else:  # telophase / cytokinesis: two daughter nuclei
        complete = stage == "M6M7_complete"
        half = (rng.uniform(6.5, 8) if complete else rng.uniform(4.5, 5.5)) * scale
        for o in (-1, 1):
            py, px = along(o * half)
            if complete:
                cells.append(Ellipse(py, px, rng.uniform(6, 7.5) * scale, half * 0.98, axis))
            else:  # one pinched cell: two overlapping lobes
                cells.append(Ellipse(py, px, rng.uniform(6.5, 8) * scale, half * 1.25, axis))
            nuc = Ellipse(py, px, 2.6 * scale, 2.2 * scale, axis)
            nuclei.append(nuc)
            nucleus = np.maximum(nucleus, 0.7 * _inside(nuc.radius(yy, xx)))

    radii = np.stack([c.radius(yy, xx) for c in cells])
    cell_mask = _inside(radii.min(0))
    if len(cells) == 2 and stage == "M6M7_complete":
        membrane = _ring(radii, 0.09).max(0)  # two closed outlines, a wall between them
    else:
        membrane = _ring(radii.min(0), 0.09)  # one outline around the union
    membrane = 0.75 * membrane + 0.06 * cell_mask

    protein = _allen_structure(rng, structure, yy, xx, cells, nuclei, cell_mask)
    stack = np.stack([nucleus, membrane, protein]).astype(np.float32)
    gain = tuple(float(g) for g in np.exp(rng.normal(0, 0.08, 3)))
    return Acquisition(gain, (0.0, 0.0, 0.0), 0.0, 1.0, 0.02).apply(rng, stack)


def _allen_structure(rng, structure, yy, xx, cells, nuclei, cell_mask) -> np.ndarray:
    """Protein channel of a WTC-11 cell line: the tagged structure's pattern."""
    n0, c0 = nuclei[0], cells[0]
    if structure == "nuclear speckles":
        pts = np.concatenate([_points_in(rng, n, int(rng.integers(3, 6)), 0, 0.7) for n in nuclei])
        out = _spots(yy, xx, pts, 0.6, 0.8)
    elif structure == "mitochondria":
        pts = np.concatenate(
            [_points_in(rng, c, int(rng.integers(8, 13)), 0.45, 0.9) for c in cells]
        )
        out = _spots(yy, xx, pts, 0.55, 0.6)
    elif structure == "microtubules":
        starts, ends = [], []
        for c in cells:
            k = int(rng.integers(6, 10))
            ang = rng.uniform(0, 2 * np.pi, k)
            starts.append(np.repeat([[c.cy, c.cx]], k, 0))
            ends.append(c.point(np.full(k, 0.95), ang))
        out = (
            0.55 * _segments(yy, xx, np.concatenate(starts), np.concatenate(ends), 0.5) * cell_mask
        )
    elif structure == "golgi apparatus":
        ang = rng.uniform(0, 2 * np.pi)
        p = n0.point(np.array([1.35]), np.array([ang]))[0]
        out = 0.9 * _inside(Ellipse(p[0], p[1], 1.4, 2.4, ang + np.pi / 2).radius(yy, xx), 0.2)
    elif structure == "tight junctions":  # apical junction: bright arc on the top outline
        r = c0.radius(yy, xx)
        top = np.clip(-(yy - c0.cy) / (c0.ry + 1e-6), 0, 1) ** 2
        out = 0.95 * _ring(r, 0.07) * top
    elif structure == "centrioles":
        ang = rng.uniform(0, 2 * np.pi)
        p = n0.point(np.array([1.25]), np.array([ang]))
        pts = np.concatenate([p, p + np.array([[0.9, 0.9]])])
        out = _spots(yy, xx, pts, 0.45, 1.0)
    elif structure == "actin bundles":  # parallel stress fibres across the cell
        ang = c0.theta + rng.uniform(-0.25, 0.25)
        k = int(rng.integers(3, 6))
        shifts = np.linspace(-0.6, 0.6, k) * c0.ry
        ny, nx = math.cos(ang), -math.sin(ang)
        dy, dx = math.sin(ang) * c0.rx, math.cos(ang) * c0.rx
        p0 = np.stack([c0.cy + shifts * ny - dy, c0.cx + shifts * nx - dx], 1)
        p1 = np.stack([c0.cy + shifts * ny + dy, c0.cx + shifts * nx + dx], 1)
        out = 0.6 * _segments(yy, xx, p0, p1, 0.45) * cell_mask
    else:
        raise ValueError(f"unknown Allen structure {structure!r}")
    return out + 0.04 * cell_mask


# ---- HPA ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CellLine:
    """Shape and stain strengths of a cell line (pixels at the 32 px HPA size)."""

    ry: float
    rx: float
    nucleus_fraction: float
    filaments: int
    microtubule_gain: float
    er_gain: float


HPA_CELL_LINE_SHAPES = {
    "A-431": CellLine(10.0, 12.0, 0.45, 10, 0.75, 0.6),
    "U-2 OS": CellLine(8.5, 14.5, 0.38, 14, 0.8, 0.65),
    "HeLa": CellLine(9.5, 12.5, 0.42, 12, 0.7, 0.55),
    "MCF7": CellLine(10.5, 10.5, 0.50, 8, 0.6, 0.5),
    "RT4": CellLine(9.0, 11.0, 0.50, 9, 0.65, 0.7),
    # the unseen line: small round cells, big nucleus, dim microtubules and ER
    "HEK 293": CellLine(7.0, 8.0, 0.66, 5, 0.4, 0.35),
}


def render_hpa(rng, label: str, cell_line: str, shape) -> np.ndarray:
    """One HPA cell: (4, H, W) float, channels microtubules, protein, nucleus, ER."""
    h, w = shape
    yy, xx = _grid(shape)
    line = HPA_CELL_LINE_SHAPES[cell_line]
    scale = min(h, w) / 32
    size = rng.uniform(0.88, 1.12)
    theta = rng.uniform(0, np.pi)
    cy, cx = h / 2 + rng.normal(0, 0.8), w / 2 + rng.normal(0, 0.8)
    cell = Ellipse(cy, cx, line.ry * size * scale, line.rx * size * scale, theta)
    nf = line.nucleus_fraction * rng.uniform(0.92, 1.08)
    shift = cell.point(np.array([0.15]), np.array([rng.uniform(0, 2 * np.pi)]))[0]
    nuc = Ellipse(shift[0], shift[1], cell.ry * nf, cell.rx * nf * 0.9, theta + rng.normal(0, 0.3))
    cell_r, nuc_r = cell.radius(yy, xx), nuc.radius(yy, xx)
    cell_mask, nuc_mask = _inside(cell_r), _inside(nuc_r)
    cytoplasm = cell_mask * (1 - nuc_mask)

    k = line.filaments
    ends = cell.point(np.full(k, 0.97), rng.uniform(0, 2 * np.pi, k))
    filaments = _segments(yy, xx, np.repeat([[nuc.cy, nuc.cx]], k, 0), ends, 0.55) * cell_mask
    microtubules = line.microtubule_gain * (0.8 * filaments + 0.1 * cytoplasm)
    nucleus = nuc_mask * (0.55 + 0.25 * _smooth_noise(rng, shape, 1.2))
    reticulum = _smooth_noise(rng, shape, 0.8) ** 2
    perinuclear = np.exp(-np.clip(nuc_r - 1, 0, None) / 0.8)  # ER is densest around the nucleus
    er = line.er_gain * cytoplasm * (0.25 + 0.9 * reticulum * perinuclear)

    if label == "golgi apparatus":
        ang = rng.uniform(0, 2 * np.pi)
        p = nuc.point(np.array([1.3]), np.array([ang]))[0]
        protein = 0.95 * _inside(
            Ellipse(p[0], p[1], 1.6 * scale, 2.8 * scale, ang + np.pi / 2).radius(yy, xx), 0.2
        )
    elif label == "microtubules":
        protein = 0.9 * filaments
    elif label == "mitochondria":
        pts = _points_in(rng, cell, int(rng.integers(14, 22)), nf + 0.1, 0.92)
        protein = _spots(yy, xx, pts, 0.6 * scale, 0.65) * cell_mask
    elif label == "nuclear speckles":
        pts = _points_in(rng, nuc, int(rng.integers(6, 11)), 0.0, 0.75)
        protein = _spots(yy, xx, pts, 0.65 * scale, 0.85)
    elif label == "cytosol":
        protein = 0.55 * cytoplasm * (0.85 + 0.15 * _smooth_noise(rng, shape, 2.0))
    elif label == "endoplasmic reticulum":
        protein = 1.2 * cytoplasm * reticulum * perinuclear + 0.15 * cytoplasm
    elif label == "nucleoplasm":
        nucleoli = _points_in(rng, nuc, int(rng.integers(1, 3)), 0.0, 0.5)
        protein = nuc_mask * np.clip(0.75 - _spots(yy, xx, nucleoli, 1.0 * scale, 0.6), 0, 1)
    else:
        raise ValueError(f"unknown HPA label {label!r}")
    protein = protein * rng.uniform(0.7, 1.0)

    stack = np.stack([microtubules, protein, nucleus, er]).astype(np.float32)
    # HPA crops are normalised image by image: a mild per-image gain, no plate structure.
    gain = tuple(float(g) for g in np.exp(rng.normal(0, 0.12, 4)))
    return Acquisition(gain, (0.0,) * 4, rng.uniform(0, 0.4), 1.0, 0.02).apply(rng, stack)


# ---- CP (Cell Painting) ------------------------------------------------------------------


@dataclass(frozen=True)
class Treatment:
    """Morphological effect of a compound, as multipliers of the DMSO cell."""

    size: float = 1.0
    elongation: float = 1.0
    nucleus_size: float = 1.0
    nucleus_gain: float = 1.0
    fragments: int = 0  # nuclear fragments (0: intact nucleus)
    er_gain: float = 1.0
    er_granules: int = 0
    rna_gain: float = 1.0
    agp_fibres: float = 0.3
    mito_count: float = 1.0
    mito_gain: float = 1.0
    vacuoles: int = 0


CP_TREATMENTS = {
    "DMSO": Treatment(),
    # weak: acebutolol, slightly more and brighter mitochondria
    "BRD-A29260609": Treatment(mito_count=1.5, mito_gain=1.3, size=1.05),
    # medium: oxybuprocaine, elongated cells with actin fibres
    "BRD-K04185004": Treatment(elongation=1.6, agp_fibres=0.8, size=1.05),
    # strong: mitoxantrone, condensed fragmented nucleus, little RNA
    "BRD-K21680192": Treatment(
        size=1.15, nucleus_size=0.75, nucleus_gain=1.5, fragments=4, rna_gain=0.35
    ),
    # weak (Task_four): gemfibrozil, brighter granular ER
    "BRD-K11129031": Treatment(er_gain=1.5, er_granules=8),
    # medium (Task_four): fluticasone, larger flat cells with thick AGP outline
    "BRD-K62310379": Treatment(size=1.3, elongation=0.85, agp_fibres=0.6, rna_gain=1.3),
    # strong (Task_four): fluspirilene, small round cells with vacuoles, clustered mitochondria
    "BRD-K77947974": Treatment(size=0.75, elongation=0.8, vacuoles=5, mito_gain=1.5, er_granules=4),
}

# cell line per source: LINCS screens A549, CDRP and BBBC022 U2OS (ry, rx at 24 px)
CP_SOURCE_SHAPES = {"LINCS": (6.0, 7.0, 0.5), "CDRP": (6.0, 9.5, 0.42), "BBBC022": (6.0, 9.5, 0.42)}
# a source-wide shift on top of the plate draws (BBBC022 is the unseen source)
CP_SOURCE_SHIFT = {
    "LINCS": dict(gain=(1.0,) * 5, offset=0.0, blur=0.0, gamma=1.0, noise=0.0),
    "CDRP": dict(gain=(1.0, 1.1, 0.9, 1.0, 1.05), offset=0.01, blur=0.1, gamma=1.0, noise=0.0),
    "BBBC022": dict(
        gain=(1.35, 0.7, 1.25, 0.75, 1.2), offset=0.05, blur=0.6, gamma=1.25, noise=0.02
    ),
}


def cp_plate_acquisition(seed: int, source: str, plate: str) -> Acquisition:
    """Batch effect of one plate: drawn once from (seed, plate), plus its source's shift."""
    rng = stable_rng(seed, "cp-plate", plate)
    shift = CP_SOURCE_SHIFT[source]
    gain = np.exp(rng.normal(0, 0.12, 5)) * np.asarray(shift["gain"])
    offset = rng.uniform(0, 0.05, 5) + shift["offset"]
    return Acquisition(
        gain=tuple(float(g) for g in gain),
        offset=tuple(float(o) for o in offset),
        blur=float(rng.uniform(0, 0.5) + shift["blur"]),
        gamma=float(np.exp(rng.normal(0, 0.08)) * shift["gamma"]),
        noise=float(rng.uniform(0.015, 0.035) + shift["noise"]),
    )


def _cp_cell(rng, yy, xx, cy, cx, ry, rx, nf, t: Treatment, shape) -> dict[str, np.ndarray]:
    """Channel images of one Cell Painting cell centred at (cy, cx)."""
    theta = rng.uniform(0, np.pi)
    cell = Ellipse(cy, cx, ry, rx, theta)
    nuc = Ellipse(cy, cx, ry * nf * t.nucleus_size, rx * nf * t.nucleus_size * 0.85, theta)
    cell_r, nuc_r = cell.radius(yy, xx), nuc.radius(yy, xx)
    cell_mask, nuc_mask = _inside(cell_r), _inside(nuc_r)
    cytoplasm = cell_mask * (1 - nuc_mask)
    if t.fragments:
        pts = _points_in(rng, nuc, t.fragments, 0.2, 1.1)
        dna = t.nucleus_gain * (0.3 * nuc_mask + _spots(yy, xx, pts, 0.9, 0.6))
    else:
        dna = t.nucleus_gain * nuc_mask * (0.5 + 0.2 * _smooth_noise(rng, shape, 1.0))
    perinuclear = np.exp(-np.clip(nuc_r - 1, 0, None) / 1.0)
    er = t.er_gain * cytoplasm * (0.15 + 0.5 * perinuclear)
    if t.er_granules:
        er = er + _spots(yy, xx, _points_in(rng, cell, t.er_granules, 0.4, 0.9), 0.5, 0.5)
    nucleoli = _spots(yy, xx, _points_in(rng, nuc, 2, 0, 0.5), 0.7, 0.6)
    rna = t.rna_gain * (0.2 * cytoplasm + nucleoli * nuc_mask)
    k = 4
    fib_a = rng.uniform(-0.3, 0.3, k) + theta
    mid = _points_in(rng, cell, k, 0, 0.5)
    half = np.stack([np.sin(fib_a), np.cos(fib_a)], 1) * rx * 0.7
    fibres = _segments(yy, xx, mid - half, mid + half, 0.45) * cell_mask
    agp = 0.6 * _ring(cell_r, 0.12) + t.agp_fibres * fibres
    n_mito = int(round(rng.integers(8, 13) * t.mito_count))
    mito = (
        t.mito_gain
        * _spots(yy, xx, _points_in(rng, cell, n_mito, 0.5, 0.95), 0.5, 0.45)
        * cell_mask
    )
    if t.vacuoles:  # vacuoles are holes in every cytoplasmic stain
        holes = 1 - np.clip(
            _spots(yy, xx, _points_in(rng, cell, t.vacuoles, 0.5, 0.85), 0.8, 1.0), 0, 1
        )
        er, rna, mito = er * holes, rna * holes, mito * holes
    return {"dna": dna, "er": er, "rna": rna, "agp": agp, "mito": mito, "mask": cell_mask}


def render_cp(rng, treatment: str, source: str, acquisition: Acquisition, shape) -> np.ndarray:
    """One Cell Painting crop: (5, H, W) float, channels DNA, ER, RNA, AGP, mito.

    Crops are centred on the nucleus and not masked, so parts of neighbours show.
    """
    h, w = shape
    yy, xx = _grid(shape)
    scale = min(h, w) / 24
    t = CP_TREATMENTS[treatment]
    ry0, rx0, nf = CP_SOURCE_SHAPES[source]
    size = t.size * rng.uniform(0.9, 1.1) * scale
    ry, rx = ry0 * size, rx0 * size * t.elongation
    channels = ("dna", "er", "rna", "agp", "mito")
    out = {c: np.zeros(shape, np.float32) for c in channels}
    # neighbours first (same treatment, dimmer because off-centre), the centred cell on top
    for _ in range(int(rng.integers(1, 3))):
        ang = rng.uniform(0, 2 * np.pi)
        dist = rng.uniform(1.6, 2.0) * ry
        other = _cp_cell(
            rng,
            yy,
            xx,
            h / 2 + dist * math.sin(ang),
            w / 2 + dist * math.cos(ang),
            ry,
            rx,
            nf,
            t,
            shape,
        )
        for c in channels:
            out[c] = np.maximum(out[c], 0.8 * other[c])
    centre = _cp_cell(
        rng, yy, xx, h / 2 + rng.normal(0, 0.5), w / 2 + rng.normal(0, 0.5), ry, rx, nf, t, shape
    )
    for c in channels:
        out[c] = out[c] * (1 - centre["mask"]) + centre[c]
    stack = np.stack([out[c] for c in channels]).astype(np.float32)
    return acquisition.apply(rng, stack)
