# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
from . import metrics  # noqa: F401
