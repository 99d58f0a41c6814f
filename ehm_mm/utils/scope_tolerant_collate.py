# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Collate functions that accept mmengine's ``_scope_`` config tag.

A config that inherits another package's config (``_base_ =
'mmpretrain::...'`` or ``'ehm_mm::...'``) gets ``_scope_`` written into
every inherited dict with a ``type``, the dataloaders' ``collate_fn``
included. ``Runner.build_dataloader`` of mmengine 0.10.7 passes every key
but ``type`` to the function, so a stock runner fails with
``default_collate() got an unexpected keyword argument '_scope_'``.

:func:`register_scope_tolerant_collates` (called by ``import ehm_mm``, and
so by every config's ``custom_imports``) re-registers each collate
function of mmengine's ``FUNCTIONS`` registry wrapped in
:class:`ScopeTolerantCollate`, which drops the tag and calls the function
unchanged: any runner, any tool, no launcher has to edit the config.
"""
import functools
from typing import Any, Callable, List, Sequence

from mmengine.registry import FUNCTIONS


class ScopeTolerantCollate:
    """A collate function that ignores a ``_scope_`` keyword argument.

    Args:
        collate (Callable): The collate function called with the batch and
            every other keyword argument.
    """

    def __init__(self, collate: Callable) -> None:
        if not callable(collate):
            raise TypeError(f'collate must be callable, got {collate!r}')
        self.collate = collate
        functools.update_wrapper(self, collate)

    def __call__(self, data_batch: Sequence, _scope_: Any = None,
                 **kwargs) -> Any:
        """Collate the batch.

        Args:
            data_batch (Sequence): The samples.
            _scope_ (Any): mmengine's scope tag; ignored. Defaults to None.
            **kwargs: Other arguments of the wrapped function.

        Returns:
            Any: What the wrapped function returns.
        """
        return self.collate(data_batch, **kwargs)


def register_scope_tolerant_collates() -> List[str]:
    """Wrap every ``*_collate`` function of mmengine's ``FUNCTIONS``.

    Functions registered later (after ``import ehm_mm``) stay as they are;
    calling this again wraps them too and leaves wrapped ones alone.

    Returns:
        list[str]: The names wrapped by this call.
    """
    wrapped = []
    for name, function in list(FUNCTIONS.module_dict.items()):
        if not name.endswith('collate') or isinstance(
                function, ScopeTolerantCollate):
            continue
        FUNCTIONS.register_module(
            name=name, module=ScopeTolerantCollate(function), force=True)
        wrapped.append(name)
    return wrapped
