# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Deterministic drawing of textured shapes on textured backgrounds.

Pure numpy; used by :class:`~ehm_mm.datasets.SyntheticShapes`. Every
function takes an explicit :class:`numpy.random.Generator`, so one sample is
a pure function of its seed.
"""
import colorsys
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np

#: Shape classes, in label order. Each maps normalised coordinates
#: ``(u, v)`` (the shape's own frame, unit radius) to an inside mask.
SHAPE_CLASSES: Tuple[str, ...] = ('circle', 'square', 'triangle', 'cross',
                                  'ring', 'star')

OBJECT_TEXTURES: Tuple[str, ...] = ('dots', 'checker', 'stripes', 'grid',
                                    'waves', 'solid')
#: With ``class_appearance``, class ``i`` is filled with texture family
#: ``OBJECT_TEXTURES[i]`` in colours around hue ``i / 6`` (random angle,
#: frequency, jittered hue, saturation and brightness), the way real
#: categories have typical surfaces; otherwise both are random.
#: Background styles use other textures than the objects, so that the
#: object's texture family stays a cue of its class.
BACKGROUND_STYLES: Tuple[str, ...] = ('noise', 'speckle', 'clutter')


def _circle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u**2 + v**2 <= 1.0


def _square(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.maximum(np.abs(u), np.abs(v)) <= 0.8


def _triangle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # Equilateral, vertices (0, 1) and (+-0.87, -0.5).
    return (v >= -0.5) & (v <= 1.0 - np.sqrt(3.0) * np.abs(u))


def _cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    au, av = np.abs(u), np.abs(v)
    return ((au <= 0.32) & (av <= 0.95)) | ((av <= 0.32) & (au <= 0.95))


def _ring(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    r2 = u**2 + v**2
    return (r2 <= 1.0) & (r2 >= 0.5**2)


def _star(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    r = np.sqrt(u**2 + v**2)
    theta = np.arctan2(v, u)
    return r <= 0.55 + 0.45 * np.cos(5.0 * theta)


_SHAPE_FUNCS: Dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    'circle': _circle,
    'square': _square,
    'triangle': _triangle,
    'cross': _cross,
    'ring': _ring,
    'star': _star,
}


def _grid(size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(y, x)`` in ``[0, 1)``, each ``[S, S]``."""
    coords = (np.arange(size, dtype=np.float64) + 0.5) / size
    return np.meshgrid(coords, coords, indexing='ij')


def _random_color(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.0, 1.0, size=3)


def _hue_colors(rng: np.random.Generator,
                hue: float) -> Tuple[np.ndarray, np.ndarray]:
    """A dark and a bright colour around ``hue`` (+-0.08), in random order."""
    colors = []
    for low, high in ((0.2, 0.5), (0.7, 1.0)):
        h = (hue + rng.uniform(-0.08, 0.08)) % 1.0
        colors.append(
            np.array(
                colorsys.hsv_to_rgb(h, rng.uniform(0.45, 1.0),
                                    rng.uniform(low, high))))
    if rng.uniform() < 0.5:
        colors.reverse()
    return colors[0], colors[1]


def _two_tone(pattern: np.ndarray,
              rng: np.random.Generator,
              hue: Optional[float] = None) -> np.ndarray:
    """Blend two colours by ``pattern`` in [0, 1] -> ``[S, S, 3]``.

    The colours are uniform random, or around ``hue`` when it is given.
    """
    if hue is None:
        c0, c1 = _random_color(rng), _random_color(rng)
    else:
        c0, c1 = _hue_colors(rng, hue)
    return c0 + (c1 - c0) * pattern[..., None]


def _smooth_noise(size: int, rng: np.random.Generator,
                  cells: int) -> np.ndarray:
    """Bilinearly upsampled uniform noise in [0, 1], ``[S, S]``."""
    coarse = rng.uniform(0.0, 1.0, size=(cells + 1, cells + 1))
    pos = (np.arange(size) + 0.5) / size * cells
    i0 = np.clip(np.floor(pos).astype(int), 0, cells - 1)
    frac = pos - i0
    top = (coarse[i0][:, i0] * (1 - frac)[None, :] +
           coarse[i0][:, i0 + 1] * frac[None, :])
    bottom = (coarse[i0 + 1][:, i0] * (1 - frac)[None, :] +
              coarse[i0 + 1][:, i0 + 1] * frac[None, :])
    return top * (1 - frac)[:, None] + bottom * frac[:, None]


def draw_texture(kind: str,
                 size: int,
                 rng: np.random.Generator,
                 hue: Optional[float] = None) -> np.ndarray:
    """Draw a full-frame two-colour texture.

    Args:
        kind (str): One of ``'stripes'``, ``'checker'``, ``'dots'``,
            ``'grid'``, ``'waves'``, ``'solid'``, ``'noise'`` or
            ``'speckle'``.
        size (int): Side length S in pixels.
        rng (numpy.random.Generator): Source of randomness.
        hue (float, optional): Draw both colours around this hue in
            [0, 1). Defaults to None (uniform random colours).

    Returns:
        numpy.ndarray: Float RGB texture in [0, 1], shape ``[S, S, 3]``.
    """
    y, x = _grid(size)
    angle = rng.uniform(0.0, np.pi)
    xr = x * np.cos(angle) + y * np.sin(angle)
    yr = -x * np.sin(angle) + y * np.cos(angle)
    if kind == 'stripes':
        freq = rng.uniform(3.0, 8.0)
        pattern = (np.sin(2 * np.pi * freq * xr) > 0).astype(np.float64)
    elif kind == 'checker':
        freq = rng.uniform(2.0, 6.0)
        pattern = ((np.floor(xr * freq) + np.floor(yr * freq)) % 2)
    elif kind == 'dots':
        freq = rng.uniform(3.0, 7.0)
        fx, fy = xr * freq % 1.0 - 0.5, yr * freq % 1.0 - 0.5
        pattern = (fx**2 + fy**2 <= 0.3**2).astype(np.float64)
    elif kind == 'grid':
        freq = rng.uniform(3.0, 6.0)
        fx, fy = xr * freq % 1.0, yr * freq % 1.0
        pattern = ((fx < 0.2) | (fy < 0.2)).astype(np.float64)
    elif kind == 'waves':
        freq = rng.uniform(2.0, 5.0)
        pattern = 0.5 + 0.5 * np.sin(2 * np.pi * freq * xr +
                                     2.0 * np.sin(2 * np.pi * 2 * yr))
    elif kind == 'solid':
        pattern = 0.15 * _smooth_noise(size, rng, cells=4)
    elif kind == 'noise':
        pattern = _smooth_noise(size, rng, cells=int(rng.integers(3, 9)))
    elif kind == 'speckle':
        pattern = 0.6 * _smooth_noise(size, rng, cells=4) + 0.4 * rng.uniform(
            0.0, 1.0, size=(size, size))
    else:
        raise ValueError(f'unknown texture kind {kind!r}')
    return _two_tone(pattern, rng, hue)


def draw_shape(shape: str, size: int, center: Tuple[float, float],
               radius: float, angle: float) -> np.ndarray:
    """Rasterise one shape.

    Args:
        shape (str): A name in :data:`SHAPE_CLASSES`.
        size (int): Side length S of the canvas in pixels.
        center (tuple[float, float]): ``(y, x)`` of the centre, in [0, 1].
        radius (float): Radius relative to the canvas side.
        angle (float): Rotation in radians.

    Returns:
        numpy.ndarray: Boolean mask ``[S, S]``, True inside the shape.
    """
    if shape not in _SHAPE_FUNCS:
        raise ValueError(
            f'unknown shape {shape!r}, expected one of {SHAPE_CLASSES}')
    y, x = _grid(size)
    dy, dx = (y - center[0]) / radius, (x - center[1]) / radius
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    # Image rows grow downwards; flip v so that "up" means up.
    return _SHAPE_FUNCS[shape](u, -v)


def draw_background(style: str, size: int,
                    rng: np.random.Generator) -> np.ndarray:
    """Draw a textured or cluttered background ``[S, S, 3]`` in [0, 1].

    ``'clutter'`` is a noise texture covered with 4 to 9 small shapes of
    random classes and colours (distractors, never part of the object mask).

    Args:
        style (str): One of :data:`BACKGROUND_STYLES`.
        size (int): Side length S in pixels.
        rng (numpy.random.Generator): Source of randomness.

    Returns:
        numpy.ndarray: Float RGB background, shape ``[S, S, 3]``.
    """
    if style not in BACKGROUND_STYLES:
        raise ValueError(f'unknown background style {style!r}, expected '
                         f'one of {BACKGROUND_STYLES}')
    if style != 'clutter':
        return draw_texture(style, size, rng)
    canvas = draw_texture('noise', size, rng)
    for _ in range(int(rng.integers(4, 10))):
        shape = SHAPE_CLASSES[int(rng.integers(len(SHAPE_CLASSES)))]
        inside = draw_shape(
            shape,
            size,
            center=tuple(rng.uniform(0.0, 1.0, size=2)),
            radius=float(rng.uniform(0.05, 0.12)),
            angle=float(rng.uniform(0.0, 2 * np.pi)))
        canvas[inside] = _random_color(rng)
    return canvas


#: Range of the object radius, relative to the image side (the shipped
#: datasets' default): objects cover about 18% of the image.
DEFAULT_OBJECT_RADIUS: Tuple[float, float] = (0.22, 0.36)


#: Area of each shape at unit radius (analytic): circle pi, square
#: 1.6**2, equilateral triangle 3 sqrt(3) / 4, cross 2 * 0.64 * 1.9 -
#: 0.64**2, ring 0.75 pi, star pi (0.55**2 + 0.45**2 / 2).
SHAPE_UNIT_AREAS: Dict[str, float] = {
    'circle': np.pi,
    'square': 1.6**2,
    'triangle': 3.0 * np.sqrt(3.0) / 4.0,
    'cross': 2 * 0.64 * 1.9 - 0.64**2,
    'ring': 0.75 * np.pi,
    'star': np.pi * (0.55**2 + 0.45**2 / 2.0),
}
#: With ``equal_area``, every shape at radius ``r`` is scaled to this area
#: times ``r**2``.
EQUAL_AREA: float = 2.0


def check_object_radius(object_radius: Sequence[float]) -> Tuple[float, float]:
    """Validate an object radius range ``(low, high)``.

    Args:
        object_radius (Sequence[float]): Radius range relative to the image
            side, ``0 < low <= high <= 0.5`` (the object's centre is drawn
            in ``[high, 1 - high]`` of the image, so it stays inside).

    Returns:
        tuple[float, float]: ``(low, high)`` as floats.
    """
    try:
        low, high = (float(v) for v in object_radius)
    except (TypeError, ValueError):
        raise ValueError('object_radius must be two numbers (low, high), '
                         f'got {object_radius!r}') from None
    if not 0.0 < low <= high <= 0.5:
        raise ValueError('object_radius must satisfy 0 < low <= high <= '
                         f'0.5, got {object_radius!r}')
    return low, high


def render_sample(
    label: int,
    size: int,
    rng: np.random.Generator,
    class_appearance: bool = True,
    object_radius: Sequence[float] = DEFAULT_OBJECT_RADIUS,
    equal_area: bool = False,
) -> Tuple[np.ndarray, np.ndarray]:
    """Render one image: a textured object of class ``label`` on a
    textured or cluttered background.

    Args:
        label (int): Index into :data:`SHAPE_CLASSES`.
        size (int): Side length S in pixels.
        rng (numpy.random.Generator): Source of randomness.
        class_appearance (bool): Fill the object with its class's texture
            family and hue range (see :data:`OBJECT_TEXTURES`) instead of
            random ones. Defaults to True.
        object_radius (Sequence[float]): Range ``(low, high)`` of the
            object's radius relative to the image side (see
            :func:`check_object_radius`). Defaults to
            :data:`DEFAULT_OBJECT_RADIUS`.
        equal_area (bool): Scale each shape's radius by
            ``sqrt(EQUAL_AREA / SHAPE_UNIT_AREAS[shape])``, so that all
            classes have the same expected area (size is then no cue of the
            class); the scaled radius must stay <= 0.5. Defaults to False.

    Returns:
        tuple[numpy.ndarray, numpy.ndarray]: The RGB image ``[S, S, 3]``
        (uint8) and the object mask ``[S, S]`` (uint8, 1 = object).
    """
    if not 0 <= label < len(SHAPE_CLASSES):
        raise ValueError(f'label must be in [0, {len(SHAPE_CLASSES)}), '
                         f'got {label}')
    low, high = check_object_radius(object_radius)
    style = BACKGROUND_STYLES[int(rng.integers(len(BACKGROUND_STYLES)))]
    image = draw_background(style, size, rng)
    radius = float(rng.uniform(low, high))
    if equal_area:
        radius *= float(
            np.sqrt(EQUAL_AREA / SHAPE_UNIT_AREAS[SHAPE_CLASSES[label]]))
        if radius > 0.5:
            raise ValueError(
                f'object_radius {tuple(object_radius)} with equal_area gives '
                f'a {SHAPE_CLASSES[label]} of radius {radius:.3f} > 0.5; '
                'lower the range')
    center = tuple(rng.uniform(radius, 1.0 - radius, size=2))
    inside = draw_shape(SHAPE_CLASSES[label], size, center, radius,
                        float(rng.uniform(0.0, 2 * np.pi)))
    family = int(rng.integers(len(OBJECT_TEXTURES)))
    if class_appearance:
        texture = draw_texture(OBJECT_TEXTURES[label], size, rng,
                               label / len(SHAPE_CLASSES))
    else:
        texture = draw_texture(OBJECT_TEXTURES[family], size, rng)
    image = np.where(inside[..., None], texture, image)
    image = np.clip(image + rng.normal(0.0, 0.02, size=image.shape), 0, 1)
    return ((image * 255.0).round().astype(np.uint8),
            inside.astype(np.uint8))
