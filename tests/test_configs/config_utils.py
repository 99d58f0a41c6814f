# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Comparing configs in the config tests (imported by name: pytest puts
this folder on ``sys.path``)."""
from mmengine.config import Config


def plain(cfg: Config) -> dict:
    """The config as plain dicts, without mmengine's ``_scope_`` tags."""

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != '_scope_'}
        if isinstance(value, (list, tuple)):
            return type(value)(strip(v) for v in value)
        return value

    return strip(cfg.to_dict())
