# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Panel titles are drawn once: white letters, a black outline around them."""
import numpy as np
import pytest

from ehm_mm.visualization import put_title


def columns(mask: np.ndarray) -> np.ndarray:
    return np.flatnonzero(mask.any(axis=0))


@pytest.mark.parametrize('height', [64, 128, 256, 512])
def test_the_outline_hugs_the_letters(height):
    panel = np.full((height, 400, 3), 128, dtype=np.uint8)
    titled = put_title(panel, 'level 1: 39 nodes')
    assert titled.shape == panel.shape and titled.dtype == np.uint8
    assert np.array_equal(panel, np.full_like(panel, 128))  # a copy
    white = (titled > 160).all(axis=-1)
    black = (titled < 90).all(axis=-1)
    assert white.any() and black.any()
    # One copy of the text: the outline ends within 1-2 px of the letters
    # (a second, wider-spaced copy reached 20+ px past them).
    assert abs(columns(black)[-1] - columns(white)[-1]) <= 2


def test_the_old_overprint_is_what_the_test_catches():
    """Drawing the text twice (thick black, thin white) fails the check."""
    import cv2
    panel = np.full((128, 400, 3), 128, dtype=np.uint8)
    scale = max(panel.shape[0] / 320.0, 0.3)
    org = (3, int(14 * scale / 0.45))
    cv2.putText(panel, 'level 1: 39 nodes', org, cv2.FONT_HERSHEY_SIMPLEX,
                scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(panel, 'level 1: 39 nodes', org, cv2.FONT_HERSHEY_SIMPLEX,
                scale, (255, 255, 255), 1, cv2.LINE_AA)
    white = (panel > 160).all(axis=-1)
    black = (panel < 90).all(axis=-1)
    assert columns(black)[-1] - columns(white)[-1] > 2
