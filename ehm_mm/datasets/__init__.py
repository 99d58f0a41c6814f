# Copyright (c) OpenMMLab. All rights reserved.
from . import retrieval  # noqa: F401
from .synthetic_shapes import SyntheticShapes  # noqa: F401
from .transforms import LoadObjectMask  # noqa: F401
