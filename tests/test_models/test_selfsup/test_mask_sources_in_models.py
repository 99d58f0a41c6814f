# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Mask sources in the models: a new source, the trees predict scores, and
the teacher distance only on the iterations the logger writes."""
from typing import Optional

import torch
from mmengine.config import Config
from mmengine.logging import MessageHub
from mmpretrain.registry import MODELS
from tiny_models import TINY_EHM_MAE, TINY_EHM_SIMMIM_VIT, build_tiny

import ehm_mm  # noqa: F401
from ehm_mm.models.masking import (
    Hierarchy,
    MaskingResult,
    MaskSource,
    split_shuffle,
)


class _StripeMasking(MaskSource):
    """A new source in a few lines: mask whole rows in random order."""

    requires_affinity = False

    def make_masks(self, affinity, batch, device, progress, depth,
                   generator) -> MaskingResult:
        h, w = self.grid_size
        rows = torch.rand(batch, h, device=device, generator=generator)
        key = rows.repeat_interleave(w, 1)  # [B, N], a row's patches share
        order = torch.argsort(key, dim=1, stable=True)  # masked: last
        mask, restore, keep = split_shuffle(order, self.num_masked)
        return MaskingResult(mask, restore, keep,
                             torch.ones(batch, dtype=torch.long,
                                        device=device),
                             self.hierarchy(affinity, batch, generator))

    def hierarchy(self, affinity=None, batch_size: Optional[int] = None,
                  generator=None) -> Hierarchy:
        batch, device = self.batch_and_device(affinity, None, batch_size,
                                              generator)
        h, w = self.grid_size
        rows = torch.arange(h * w, device=device) // w
        leaves = Hierarchy.leaves(batch, self.grid_size, device)
        return Hierarchy(
            torch.cat([leaves.ancestors, rows.expand(batch, 1, -1)], 1),
            torch.cat([leaves.num_nodes,
                       torch.full_like(leaves.num_nodes, h)], 1),
            self.grid_size)



def test_a_new_source_trains_in_ehmmae_and_predict_scores_its_tree():
    MODELS.register_module('_StripeMasking', module=_StripeMasking,
                           force=True)
    hub = MessageHub.get_instance('test_mask_source')
    hub.update_info('iter', 3)
    hub.update_info('max_iters', 10)
    try:
        model = build_tiny(TINY_EHM_MAE,
                           masking=dict(type='_StripeMasking',
                                        mask_ratio=0.5))
        images = torch.randn(2, 3, 32, 32)
        losses = model.loss(images, [])
        assert torch.isfinite(losses['loss'])
        masks = model.generate_masks(images, 0.5)
        rows = masks.mask.view(2, 4, 4)
        assert bool((rows == rows[:, :, :1]).all())  # whole rows
        assert bool((masks.mask.sum(1) == 8).all())
        model.eval()
        sample = model.predict(images)[0]
        rows = torch.arange(16).view(4, 4) // 4
        assert torch.equal(sample.hierarchy_ancestors[1], rows)
        assert sample.teacher_hierarchy_ancestors.shape[1:] == (4, 4)
    finally:
        MessageHub._instance_dict.pop('test_mask_source')
        MODELS._module_dict.pop('_StripeMasking')


def test_teacher_distance_only_when_the_logger_writes(monkeypatch):
    hub = MessageHub.get_instance('test_teacher_distance_logging')
    hub.update_info('max_iters', 10)
    try:
        for base, size in ((TINY_EHM_MAE, 32), (TINY_EHM_SIMMIM_VIT, 64)):
            model = build_tiny(base)
            images = torch.randn(2, 3, size, size)
            calls = []
            distance = model.teacher.relative_distance
            monkeypatch.setattr(model.teacher, 'relative_distance',
                                lambda m: calls.append(1) or distance(m))
            # no runner config in the hub: every step (tools, tests)
            hub.update_info('iter', 2)
            assert 'teacher_distance' in model.loss(images, [])
            # a runner whose LoggerHook writes every 4 iterations
            hub.update_info('cfg', "default_hooks = dict(logger=dict("
                            "type='LoggerHook', interval=4))\n")
            logged, parsed = [], []
            fromstring = Config.fromstring
            monkeypatch.setattr(
                Config, 'fromstring',
                lambda *a: parsed.append(1) or fromstring(*a))
            for it in range(8):
                hub.update_info('iter', it)
                logged.append('teacher_distance' in model.loss(images, []))
            monkeypatch.setattr(Config, 'fromstring', fromstring)
            assert logged == [False, False, False, True] * 2
            assert len(calls) == 3 and len(parsed) == 1  # read once a run
            # an epoch-based loop of 2 epochs of 5 iterations: the index
            # within the epoch counts, and an epoch's last iteration logs
            hub.update_info('max_epochs', 2)
            logged = []
            for it in range(10):
                hub.update_info('iter', it)
                logged.append('teacher_distance' in model.loss(images, []))
            assert logged == [False, False, False, True, True] * 2
            hub.runtime_info.pop('max_epochs')
            # on request, whatever the iteration
            assert set(model.teacher_log_vars(always=True)) == {
                'teacher_distance'}
            hub.update_info('cfg', 'default_hooks = dict(logger=None)\n')
            assert 'teacher_distance' not in model.loss(images, [])
            hub.runtime_info.pop('cfg')
    finally:
        MessageHub._instance_dict.pop('test_teacher_distance_logging')
