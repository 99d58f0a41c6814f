# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
from .hierarchy_drawing import (
    draw_mask,
    draw_partition,
    hierarchy_row,
    node_palette,
    stack_rows,
)

__all__ = [
    'draw_mask', 'draw_partition', 'hierarchy_row', 'node_palette',
    'stack_rows'
]
