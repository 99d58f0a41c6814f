# Copyright (c) OpenMMLab. All rights reserved.
from . import retrieval  # noqa: F401
