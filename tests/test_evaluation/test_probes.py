# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Linear and patch-segmentation probes on data with a known answer."""
import numpy as np
import pytest
import torch
from mmpretrain.registry import METRICS

import ehm_mm  # noqa: F401  (registers the metrics)
from ehm_mm.evaluation.metrics.linear_probe import (
    fit_linear_probe,
    probe_logits,
    split_indices,
)
from ehm_mm.evaluation.metrics.patch_seg_probe import mean_iou, patch_labels


def _separable(num: int, classes: int, dims: int, seed: int = 0):
    """Features whose first ``classes`` dims encode the label, plus noise."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(num) % classes
    feats = torch.randn(num, dims, generator=gen)
    feats[:, :classes] += 6.0 * torch.nn.functional.one_hot(labels, classes)
    return feats, labels


def test_split_is_fixed_disjoint_and_complete():
    train, test = split_indices(10, 0.5, seed=1)
    again = split_indices(10, 0.5, seed=1)
    assert torch.equal(train, again[0]) and torch.equal(test, again[1])
    assert sorted(train.tolist() + test.tolist()) == list(range(10))
    assert len(train) == 5
    assert len(split_indices(2, 0.99)[1]) == 1  # test never empty
    with pytest.raises(ValueError):
        split_indices(1)
    with pytest.raises(ValueError):
        split_indices(10, 1.0)


def test_linear_probe_separates_separable_features():
    feats, labels = _separable(300, 6, 20)
    probe = fit_linear_probe(feats[:150], labels[:150], 6)
    pred = probe_logits(feats[150:], probe).argmax(1)
    assert float((pred == labels[150:]).double().mean()) == 1.0
    with pytest.raises(ValueError, match='labels must lie'):
        fit_linear_probe(feats, labels, 3)


def test_linear_probe_metric_known_answers():
    metric = METRICS.build(dict(type='LinearProbeAccuracy'))
    feats, labels = _separable(240, 6, 16)
    samples = [dict(feature=f, gt_label=torch.tensor([int(y)]))
               for f, y in zip(feats, labels)]
    metric.process({}, samples)
    assert metric.evaluate(240)['linear/top1'] == pytest.approx(100.0)
    # Labels unrelated to the features: near chance (1/6) on held-out data.
    gen = torch.Generator().manual_seed(1)
    noise = torch.randn(600, 16, generator=gen)
    random_labels = torch.randint(0, 6, (600, ), generator=gen)
    metric = METRICS.build(dict(type='LinearProbeAccuracy'))
    metric.process({}, [
        dict(feature=f, gt_label=int(y))
        for f, y in zip(noise, random_labels)
    ])
    assert metric.evaluate(600)['linear/top1'] < 30.0
    with pytest.raises(KeyError, match='gt_label'):
        METRICS.build(dict(type='LinearProbeAccuracy')).process(
            {}, [dict(feature=feats[0])])


def test_patch_labels_take_the_majority():
    label_map = torch.zeros(4, 6, dtype=torch.long)
    label_map[:2, :2] = 3  # whole patch (0, 0)
    label_map[2:, 4] = 1  # half of patch (1, 2): tie -> smaller label 0
    label_map[:2, 2:4] = 2
    label_map[0, 2] = 5  # 3 of 4 pixels are 2
    out = patch_labels(label_map, (2, 3), 6)
    assert out.tolist() == [3, 2, 0, 0, 0, 0]
    with pytest.raises(ValueError, match='whole number'):
        patch_labels(label_map, (3, 3), 6)
    with pytest.raises(ValueError, match='values must lie'):
        patch_labels(label_map, (2, 3), 4)


def test_mean_iou_known_values():
    pred = torch.tensor([0, 0, 1, 1, 2])
    target = torch.tensor([0, 1, 1, 1, 0])
    miou, iou = mean_iou(pred, target, 4)
    # class 0: inter 1, union 3; class 1: 2/3; class 2: 0/1; class 3 absent
    assert iou[:3].tolist() == pytest.approx([1 / 3, 2 / 3, 0.0])
    assert torch.isnan(iou[3])
    assert miou == pytest.approx((1 / 3 + 2 / 3) / 3)


def _seg_samples(num: int, informative: bool, source: str):
    """Images of a 4 x 4 grid whose patch features encode (or not) the
    class of the pixels under them."""
    gen = torch.Generator().manual_seed(0)
    samples = []
    for i in range(num):
        label = i % 3
        seg = torch.zeros(16, 16, dtype=torch.long)
        top, left = (int(v) for v in torch.randint(0, 3, (2, ), generator=gen))
        seg[4 * top:4 * top + 8, 4 * left:4 * left + 8] = 1
        patch_cls = patch_labels(seg * (label + 1), (4, 4), 4)
        feats = torch.randn(16, 8, generator=gen)
        if informative:
            feats[:, :4] += 10 * torch.nn.functional.one_hot(patch_cls, 4)
        sample = dict(patch_features=feats.reshape(4, 4, 8))
        if source == 'seg_map':
            sample['gt_seg_map'] = (seg * (label + 1)).numpy().astype(
                np.uint8)
        else:
            sample['gt_object_mask'] = seg.numpy().astype(np.uint8)
            sample['gt_label'] = torch.tensor([label])
        samples.append(sample)
    return samples


@pytest.mark.parametrize('source', ['seg_map', 'object_mask'])
def test_patch_seg_probe_known_answers(source):
    metric = METRICS.build(
        dict(type='PatchSegProbe', num_classes=4, label_source=source))
    metric.process({}, _seg_samples(60, True, source))
    out = metric.evaluate(60)
    assert out['segprobe/mIoU'] == pytest.approx(100.0)
    assert out['segprobe/acc'] == pytest.approx(100.0)
    metric = METRICS.build(
        dict(type='PatchSegProbe', num_classes=4, label_source=source))
    metric.process({}, _seg_samples(60, False, source))
    # pure noise features: the probe can only learn the class prior
    assert metric.evaluate(60)['segprobe/mIoU'] < 40.0


def test_patch_seg_probe_errors():
    with pytest.raises(ValueError, match='num_classes'):
        METRICS.build(dict(type='PatchSegProbe', num_classes=1))
    with pytest.raises(ValueError, match='label_source'):
        METRICS.build(
            dict(type='PatchSegProbe', num_classes=3, label_source='x'))
    metric = METRICS.build(dict(type='PatchSegProbe', num_classes=4))
    with pytest.raises(KeyError, match='predict_patch_features'):
        metric.process({}, [dict(gt_seg_map=np.zeros((16, 16)))])
    with pytest.raises(KeyError, match='gt_seg_map'):
        metric.process({}, [dict(patch_features=torch.zeros(4, 4, 8))])
    with pytest.raises(ValueError, match=r'\[h, w, C\]'):
        metric.process({}, [
            dict(patch_features=torch.zeros(16, 8),
                 gt_seg_map=np.zeros((16, 16)))
        ])


def test_probe_metrics_pass_their_arguments_on():
    """Probe arguments reach the probe, the rest the metric's base class."""
    linear = METRICS.build(
        dict(type='LinearProbeAccuracy', train_fraction=0.25, weight_decay=0.5,
             max_iter=7, seed=3, feature_key='feat', prefix='lp'))
    seg = METRICS.build(
        dict(type='PatchSegProbe', num_classes=4, label_source='object_mask',
             train_fraction=0.25, weight_decay=0.5, max_iter=7, seed=3,
             feature_key='patches', prefix='sp'))
    for metric, key, prefix in ((linear, 'feat', 'lp'),
                                (seg, 'patches', 'sp')):
        probe = metric.probe
        assert (probe.train_fraction, probe.weight_decay, probe.max_iter,
                probe.seed) == (0.25, 0.5, 7, 3)
        assert metric.feature_key == key and metric.prefix == prefix
    assert METRICS.build(dict(type='LinearProbeAccuracy')).prefix == 'linear'
    seg = METRICS.build(dict(type='PatchSegProbe', num_classes=4))
    assert (seg.prefix, seg.feature_key) == ('segprobe', 'patch_features')
    assert seg.probe.train_fraction == 0.5 and seg.probe.max_iter == 100
    with pytest.raises(ValueError, match='max_iter'):
        METRICS.build(dict(type='PatchSegProbe', num_classes=4, max_iter=0))
    with pytest.raises(TypeError):
        METRICS.build(dict(type='LinearProbeAccuracy', no_such_argument=1))
