# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Draw patch hierarchies and token masks over images (numpy + cv2)."""
import colorsys
from typing import List, Sequence, Tuple

import cv2
import numpy as np

_GOLDEN = 0.6180339887498949


def node_palette(num_nodes: int) -> np.ndarray:
    """Distinct, deterministic colours for node ids.

    Args:
        num_nodes (int): Number of colours.

    Returns:
        numpy.ndarray: ``[num_nodes, 3]`` uint8 RGB colours.
    """
    colors = [
        colorsys.hsv_to_rgb((i * _GOLDEN) % 1.0, 0.65 + 0.3 * (i % 2), 0.95)
        for i in range(num_nodes)
    ]
    return (np.asarray(colors).reshape(-1, 3) * 255).round().astype(np.uint8)


def upsample_labels(labels: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a patch label map to pixels.

    Args:
        labels (numpy.ndarray): ``[h, w]`` patch labels.
        size (tuple[int, int]): Output ``(H, W)``.

    Returns:
        numpy.ndarray: ``[H, W]`` labels.
    """
    h, w = labels.shape
    rows = np.arange(size[0]) * h // size[0]
    cols = np.arange(size[1]) * w // size[1]
    return labels[rows[:, None], cols[None, :]]


def label_boundaries(labels: np.ndarray) -> np.ndarray:
    """Pixels whose right or lower neighbour has another label.

    Args:
        labels (numpy.ndarray): ``[H, W]`` labels.

    Returns:
        numpy.ndarray: ``[H, W]`` bool.
    """
    edge = np.zeros(labels.shape, dtype=bool)
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
    return edge


def draw_partition(image: np.ndarray,
                   labels: np.ndarray,
                   alpha: float = 0.5) -> np.ndarray:
    """Tint every node of a partition with its own colour and outline it.

    Args:
        image (numpy.ndarray): ``[H, W, 3]`` uint8 RGB image.
        labels (numpy.ndarray): ``[h, w]`` node id of every patch.
        alpha (float): Weight of the node colour. Defaults to 0.5.

    Returns:
        numpy.ndarray: ``[H, W, 3]`` uint8 RGB drawing.
    """
    pixels = upsample_labels(labels, image.shape[:2])
    colors = node_palette(int(labels.max()) + 1)[pixels]
    out = (1 - alpha) * image.astype(np.float64) + alpha * colors
    out[label_boundaries(pixels)] = 255
    return out.round().astype(np.uint8)


def draw_mask(image: np.ndarray,
              mask: np.ndarray,
              labels: np.ndarray = None) -> np.ndarray:
    """Grey out masked patches (MAE style), optionally outlining nodes.

    Args:
        image (numpy.ndarray): ``[H, W, 3]`` uint8 RGB image.
        mask (numpy.ndarray): ``[h, w]``, nonzero = masked.
        labels (numpy.ndarray, optional): ``[h, w]`` node ids whose
            boundaries are drawn. Defaults to None.

    Returns:
        numpy.ndarray: ``[H, W, 3]`` uint8 RGB drawing.
    """
    masked = upsample_labels(mask != 0, image.shape[:2])
    out = image.astype(np.float64)
    out[masked] = 0.25 * out[masked] + 0.75 * 128
    if labels is not None:
        out[label_boundaries(upsample_labels(labels, image.shape[:2]))] = 255
    return out.round().astype(np.uint8)


def put_title(panel: np.ndarray, text: str) -> np.ndarray:
    """Write a small title in the top-left corner of a panel.

    White letters with a 1-pixel black outline, so the title reads on any
    background. The outline is the letters' own mask dilated: OpenCV
    spaces thicker letters wider, so drawing the text again thicker (as
    this function once did) overprints it with a second, offset copy.

    Args:
        panel (numpy.ndarray): ``[H, W, 3]`` uint8 RGB panel.
        text (str): The title.

    Returns:
        numpy.ndarray: A copy with the title.
    """
    scale = max(panel.shape[0] / 320.0, 0.3)
    org = (3, int(14 * scale / 0.45))
    letters = np.zeros(panel.shape[:2], dtype=np.uint8)
    cv2.putText(letters, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, 255, 1,
                cv2.LINE_AA)
    outline = cv2.dilate(letters, np.ones((3, 3), dtype=np.uint8))
    out = panel.astype(np.float64)
    out *= 1 - outline[..., None] / 255.0  # black outline
    alpha = letters[..., None] / 255.0
    out = out * (1 - alpha) + 255 * alpha  # white letters
    return out.round().astype(np.uint8)


def partition_panel(image: np.ndarray, ancestors: np.ndarray,
                    level: int) -> np.ndarray:
    """The partition at one level, titled with its node count.

    Args:
        image (numpy.ndarray): ``[H, W, 3]`` uint8 RGB image.
        ancestors (numpy.ndarray): ``[L, h, w]`` ancestor ids per level.
        level (int): The level to draw.

    Returns:
        numpy.ndarray: ``[H, W, 3]`` uint8 panel.
    """
    nodes = len(np.unique(ancestors[level]))
    return put_title(
        draw_partition(image, ancestors[level]),
        f'level {level}: {nodes} nodes')


def hierarchy_row(image: np.ndarray,
                  ancestors: np.ndarray,
                  mask: np.ndarray,
                  depth: int,
                  levels: Sequence[int],
                  min_size: int = 128) -> np.ndarray:
    """One row of panels for one image.

    Panels: the image, the partition at each level of ``levels`` that the
    tree has (deeper levels are clipped to its top level), and the mask
    with the boundaries of the nodes at the mask's depth.

    Args:
        image (numpy.ndarray): ``[H, W, 3]`` uint8 RGB image.
        ancestors (numpy.ndarray): ``[L, h, w]`` ancestor ids per level.
        mask (numpy.ndarray): ``[h, w]``, nonzero = masked.
        depth (int): The level the mask was cut at.
        levels (Sequence[int]): Levels to draw.
        min_size (int): Panels are enlarged (nearest neighbour) to at
            least this height. Defaults to 128.

    Returns:
        numpy.ndarray: ``[H', W' * (len(levels) + 2) + gaps, 3]`` uint8.
    """
    factor = max(1, -(-min_size // image.shape[0]))
    big = np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)
    top = ancestors.shape[0] - 1
    panels = [put_title(big, 'input')]
    panels += [
        partition_panel(big, ancestors, min(level, top)) for level in levels
    ]
    depth = min(int(depth), top)
    panels.append(
        put_title(
            draw_mask(big, mask, ancestors[depth]), f'mask, depth {depth}'))
    return side_by_side(panels)


def hierarchy_figure(image: np.ndarray, ancestors: np.ndarray,
                     masks: Sequence[Tuple[int, np.ndarray]]) -> np.ndarray:
    """Two rows for one image: every level of its tree, then masks.

    The first row shows the image and the partition at every level up to
    the first with a single node; the second the image and each mask with
    the outlines of the nodes at its depth.

    Args:
        image (numpy.ndarray): ``[H, W, 3]`` uint8 RGB image at panel size.
        ancestors (numpy.ndarray): ``[L, h, w]`` ancestor ids per level.
        masks (Sequence[Tuple[int, numpy.ndarray]]): ``(depth, [h, w]
            mask)`` pairs, nonzero = masked.

    Returns:
        numpy.ndarray: The figure, uint8 RGB.
    """
    top = [put_title(image, 'input')]
    for level in range(ancestors.shape[0]):
        top.append(partition_panel(image, ancestors, level))
        if len(np.unique(ancestors[level])) == 1:
            break
    bottom = [put_title(image, 'masks')]
    bottom += [
        put_title(draw_mask(image, mask, ancestors[depth]), f'depth {depth}')
        for depth, mask in masks
    ]
    return stack_rows([side_by_side(top), side_by_side(bottom)])


def _concat(arrays: List[np.ndarray], axis: int, gap: int = 4) -> np.ndarray:
    """Concatenate uint8 images with white gaps."""
    parts = []
    for i, array in enumerate(arrays):
        if i:
            shape = list(array.shape)
            shape[axis] = gap
            parts.append(np.full(shape, 255, dtype=np.uint8))
        parts.append(array)
    return np.concatenate(parts, axis=axis)


def side_by_side(panels: List[np.ndarray]) -> np.ndarray:
    """Put panels of equal height side by side with white gaps.

    Args:
        panels (list[numpy.ndarray]): ``[H, W_i, 3]`` uint8 panels.

    Returns:
        numpy.ndarray: The row, uint8 RGB.
    """
    return _concat(panels, axis=1)


def stack_rows(rows: List[np.ndarray]) -> np.ndarray:
    """Stack rows vertically with white gaps, padding narrow rows white.

    Args:
        rows (list[numpy.ndarray]): ``[H_i, W_i, 3]`` uint8 rows.

    Returns:
        numpy.ndarray: The figure, uint8 RGB, as wide as the widest row.
    """
    width = max(row.shape[1] for row in rows)
    rows = [
        np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0)),
               constant_values=255) for row in rows
    ]
    return _concat(rows, axis=0)
