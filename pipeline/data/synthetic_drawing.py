"""Drawing primitives of the demo dataset (:mod:`pipeline.data.synthetic`): smooth noise, colours, the
shared texture families, ellipses and the class-specific head shapes, all on (H, W) coordinate grids."""
from __future__ import annotations

import colorsys

import numpy as np

from pipeline.errors import ConfigError

NUM_TEXTURES = 4


def smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Bilinearly upsampled uniform noise on a (cells+1)^2 lattice: a smooth field in [0, 1]."""
    lattice = rng.random((cells + 1, cells + 1))
    ys = np.linspace(0, cells, height, endpoint=False)
    xs = np.linspace(0, cells, width, endpoint=False)
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = lattice[y0][:, x0] * (1 - fx) + lattice[y0][:, x0 + 1] * fx
    bottom = lattice[y0 + 1][:, x0] * (1 - fx) + lattice[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def random_colour(rng: np.random.Generator, hue: float | None = None, saturation=(0.0, 1.0), value=(0.2, 1.0)):
    h = rng.random() if hue is None else hue % 1.0
    rgb = colorsys.hsv_to_rgb(h, rng.uniform(*saturation), rng.uniform(*value))
    return np.array(rgb) * 255.0


def texture_pattern(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, scale: float) -> np.ndarray:
    """A pattern in [0, 1] from one of the shared texture families (stripes, checker, dots, blotches)."""
    kind = int(rng.integers(NUM_TEXTURES))
    angle = rng.uniform(0, np.pi)
    u = xx * np.cos(angle) + yy * np.sin(angle)
    v = -xx * np.sin(angle) + yy * np.cos(angle)
    period = rng.uniform(0.045, 0.11) * scale
    if kind == 0:  # stripes
        return (np.sin(2 * np.pi * u / period + rng.uniform(0, 2 * np.pi)) > 0).astype(np.float64)
    if kind == 1:  # checker
        return ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float64)
    if kind == 2:  # dots on a lattice
        du = (u / period) % 1.0 - 0.5
        dv = (v / period) % 1.0 - 0.5
        return (du**2 + dv**2 < rng.uniform(0.06, 0.16)).astype(np.float64)
    height, width = yy.shape
    noise = smooth_noise(rng, height, width, cells=max(2, int(round(max(height, width) / period / 1.5))))
    return (noise > 0.5).astype(np.float64)


def paint(canvas: np.ndarray, region: np.ndarray, pattern: np.ndarray, colour_a, colour_b) -> None:
    """Fill ``region`` of the (H, W, 3) canvas with the two-colour ``pattern``."""
    p = pattern[region][:, None]
    canvas[region] = colour_a * (1 - p) + colour_b * p


def ellipse(yy, xx, cy, cx, a, b, angle) -> np.ndarray:
    u = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
    v = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


def head_masks(shape: str, yy, xx, cy, cx, radius, angle) -> tuple[np.ndarray, np.ndarray]:
    """(silhouette, marking) of a head centred at (cy, cx) pointing along ``angle``.

    The marking (drawn in a second colour) is what tells the ring head from the disc head."""
    u = ((xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)) / radius
    v = (-(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)) / radius
    r2 = u**2 + v**2
    if shape == "disc":
        silhouette = r2 <= 1.0
    elif shape == "square":
        silhouette = np.maximum(np.abs(u), np.abs(v)) <= 0.85
    elif shape == "triangle":
        silhouette = (u >= -0.8) & (np.abs(v) <= 1.0 * (1.1 - u) / 1.9)
    elif shape == "ring":
        silhouette = r2 <= 1.0
        return silhouette, r2 <= 0.5**2
    elif shape == "cross":
        silhouette = ((np.abs(u) <= 0.33) | (np.abs(v) <= 0.33)) & (np.maximum(np.abs(u), np.abs(v)) <= 1.0)
    else:
        raise ConfigError(f"unknown head shape {shape!r}")
    return silhouette, np.zeros_like(silhouette)
