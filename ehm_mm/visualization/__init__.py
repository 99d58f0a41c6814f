# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
from .hierarchy_drawing import (
    draw_mask,
    draw_partition,
    hierarchy_figure,
    hierarchy_row,
    node_palette,
    partition_panel,
    put_title,
    side_by_side,
    stack_rows,
)
from .reconstruction_drawing import (
    load_images,
    normalisation,
    reconstruction_row,
    to_images,
    to_inputs,
)

__all__ = [
    'draw_mask', 'draw_partition', 'hierarchy_figure', 'hierarchy_row',
    'node_palette', 'partition_panel', 'put_title', 'side_by_side',
    'stack_rows', 'load_images', 'normalisation', 'reconstruction_row',
    'to_images', 'to_inputs'
]
