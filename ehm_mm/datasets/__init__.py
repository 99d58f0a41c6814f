# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
from .imagenet100 import (  # noqa: F401
    IMAGENET100_CLASSES_FILE,
    read_class_list,
)
from .seeded_augment_sampler import SeededAugmentSampler  # noqa: F401
from .synthetic_scenes import SyntheticScenes  # noqa: F401
from .synthetic_shapes import SyntheticShapes  # noqa: F401
from .transforms import (  # noqa: F401
    EvolvedHierarchicalMaskGenerator,
    LoadLabelMap,
    LoadObjectMask,
    SetKNNBankFlag,
)
