# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""The v2 study config (issue 22): size-matched tree arms, its task."""
import os.path as osp

import numpy as np
import pytest
import torch
from masking_study_tool import load_masking_study

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(ROOT, 'configs', 'study', 'masking_study_v2.py')
TREE_ARMS = ('ehm_node_size', 'shuffled_attention', 'random_tree_node_size',
             'pixel_tree_node_size')
#: The content-free arms that replace the whole mask source.
FREE_ARMS = ('colormae_green', 'block_beit', 'block')
#: Largest ratio allowed between two tree arms' mean masked node sizes at
#: one training progress, and between each and the target 2**(4 t): half
#: an octave, the resolution of the node-size unit (it picks the level
#: whose mean node size is closest to 2**d in log2). Measured on 48 images
#: (random-init teacher): at most 1.34 between arms, at t = 1
#: (16.7-22.4 patches).
NODE_SIZE_TOLERANCE = 2.0**0.5


def _tool():
    return load_masking_study()


def _task_images(cfg, num, model=None):
    """``num`` validation images of the v2 task (normalised by ``model``'s
    preprocessor when given) and their object masks."""
    from ehm_mm.datasets.shape_drawing import render_sample
    task = cfg.val_dataloader.dataset.datasets[1]
    images, masks = [], []
    for i in range(num):
        image, mask = render_sample(
            i % 6, 64, np.random.default_rng([0, 1, i]),
            task.class_appearance, task.object_radius, task.equal_area)
        images.append(image)
        masks.append(mask)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
    if model is not None:
        pre = model.data_preprocessor
        x = (x - pre.mean.view(-1, 1, 1)) / pre.std.view(-1, 1, 1)
    return x, np.stack(masks)


@pytest.fixture(scope='module')
def v2_models():
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    import ehm_mm  # noqa: F401
    init_default_scope('mmpretrain')
    tool = _tool()
    models = {}
    for arm in ('mae', ) + TREE_ARMS:  # cfg: a tree arm's
        cfg = tool.build_run_config(CONFIG, arm, 0, '', quick=False)
        torch.manual_seed(0)
        # As the runner builds it: with the config's data preprocessor.
        models[arm] = MODELS.build(
            dict(cfg.model, data_preprocessor=cfg.data_preprocessor)).eval()
    return cfg, models


def test_tree_arms_mask_nodes_of_the_same_size(v2_models):
    """Every tree arm masks nodes of ~2**(4 t) patches at progress t, fed
    a teacher's attention, the images' pixel cues or noise."""
    cfg, models = v2_models
    inputs, _ = _task_images(cfg, 48, models['ehm_node_size'])
    with torch.no_grad():
        affinities = dict(
            attention=models['ehm_node_size'].encoder_affinity(inputs),
            pixels=models['pixel_tree_node_size'].pixel_affinity(inputs),
            noise=torch.rand(48, 64, 64,
                             generator=torch.Generator().manual_seed(0)))
    for progress in (0.25, 0.5, 0.75, 1.0):
        sizes = {}
        for arm in TREE_ARMS:
            masking = models[arm].masking
            for kind, affinity in affinities.items():
                result = masking(
                    affinity, progress=progress,
                    generator=torch.Generator().manual_seed(1))
                sizes[arm, kind] = float(result.node_size.mean())
        low, high = min(sizes.values()), max(sizes.values())
        assert high / low <= NODE_SIZE_TOLERANCE, (progress, sizes)
        target = 2.0**(4 * progress)
        assert target / NODE_SIZE_TOLERANCE <= low, (progress, sizes)
        assert high <= target * NODE_SIZE_TOLERANCE, (progress, sizes)


def test_level_unit_would_fail_the_size_check(v2_models):
    """The check can fail: with depth in levels (v1's arms) the noise tree
    masks far bigger nodes than the attention tree (level 5: ~13 against
    ~6 patches with a random-init teacher)."""
    from mmpretrain.registry import MODELS
    cfg, models = v2_models
    inputs, _ = _task_images(cfg, 32, models['ehm_node_size'])
    with torch.no_grad():
        attention = models['ehm_node_size'].encoder_affinity(inputs)
    level_cfg = dict(cfg.model.masking, depth_unit='level', d_max=5.0)
    ehm = MODELS.build(dict(level_cfg, grid_size=(8, 8)))
    noise = MODELS.build(
        dict(level_cfg, type='RandomHierarchyMasking', grid_size=(8, 8)))
    gen = torch.Generator().manual_seed(1)
    attn_size = float(ehm(attention, depth=5, generator=gen).node_size.mean())
    noise_size = float(noise(attention, depth=5,
                             generator=gen).node_size.mean())
    assert noise_size / attn_size > NODE_SIZE_TOLERANCE


def test_v2_objects_reach_the_deepest_node_size(v2_models):
    """Mean object size in patches is within the tolerance of the deepest
    masked node size 2**d_max, and all classes are the same size."""
    cfg, _ = v2_models
    _, masks = _task_images(cfg, 240)
    patches = masks.reshape(240, -1).sum(1) / 64.0
    deepest = 2.0**cfg.model.masking.d_max
    assert deepest / NODE_SIZE_TOLERANCE <= patches.mean() <= deepest
    per_class = [patches[c::6].mean() for c in range(6)]
    assert max(per_class) / min(per_class) < 1.15, per_class


def test_v2_config_validation_set_and_bank():
    tool = _tool()
    cfg = tool.build_run_config(CONFIG, 'mae', 0, '', quick=False)
    bank, queries = cfg.val_dataloader.dataset.datasets
    assert bank.knn_bank and not queries.get('knn_bank', False)
    assert queries.num_samples >= 5000 and bank.split != queries.split
    assert not queries.class_appearance
    types = [m['type'] for m in cfg.val_evaluator]
    assert 'KNNBankAccuracy' in types
    for arm in TREE_ARMS:
        arm_cfg = tool.build_run_config(CONFIG, arm, 0, '', quick=False)
        assert arm_cfg.model.masking.depth_unit == 'node_size', arm


def test_baselines_are_measured_and_reported(tmp_path, monkeypatch):
    """Untrained encoder, raw pixels, colour alone and the metric floors
    (quick settings: 24 + 24 validation images)."""
    monkeypatch.chdir(tmp_path)  # the config's data_root is relative
    tool = _tool()
    out = tmp_path / 'study'
    out.mkdir()
    baselines = tool.compute_baselines(CONFIG, str(out), 'mae', [0], True)
    assert set(baselines['untrained']['0']) >= {
        'knnbank/top1', 'linear/top1', 'segprobe/mIoU', 'hierarchy/best_iou'
    }
    raw = baselines['raw_pixels']
    assert 0 <= raw['knnbank/top1'] <= 100 and 'segprobe/mIoU' in raw
    assert 'segprobe/mIoU' not in baselines['colour_histogram']
    floors = baselines['floors']
    root = floors['hierarchy/best_iou (root only)']
    noise = floors['hierarchy/best_iou (noise trees)']
    # v2 objects cover ~24% of the image: the root's IoU.
    assert 15 < root < 35 and root < noise < 100
    assert 0 < floors['segprobe/mIoU (all background)'] < 100
    cfg, _, _, _, _ = tool.load_study(CONFIG, True)
    table = tool.baselines_table(baselines,
                                 [tuple(m) for m in cfg.study_metrics])
    assert '| untrained encoder (1 seeds) |' in table
    assert '| floor: all background |' in table
    # Kept on a second call: nothing is measured again.
    stamp = (out / 'baselines.json').stat().st_mtime
    again = tool.compute_baselines(CONFIG, str(out), 'mae', [0], True)
    assert again == json_load(out / 'baselines.json')
    assert (out / 'baselines.json').stat().st_mtime == stamp


def json_load(path):
    import json
    return json.loads(path.read_text())


def test_every_v2_arm_builds_its_model():
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    import ehm_mm  # noqa: F401
    init_default_scope('mmpretrain')
    tool = _tool()
    _, arms, _, _, _ = tool.load_study(CONFIG, quick=False)
    assert set(arms) >= {'mae', *FREE_ARMS, *TREE_ARMS}
    for arm in arms:
        cfg = tool.build_run_config(CONFIG, arm, 0, '', quick=False)
        assert hasattr(MODELS.build(cfg.model), 'masking'), arm


def _flat(tree, prefix=''):
    """A nested config dict as ``{'a.b.c': value}``."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f'{prefix}{key}.'))
        else:
            flat[f'{prefix}{key}'] = value
    return flat


def _changed(tool, arm, reference):
    """The dotted keys whose values differ between two arms' run configs."""
    a, b = (_flat(tool.build_run_config(CONFIG, name, 0, '',
                                        quick=False).to_dict())
            for name in (arm, reference))
    return {k for k in set(a) | set(b) if a.get(k, a) != b.get(k, b)}


def test_each_arm_changes_one_thing_of_the_ehm_arm():
    """Controls differ from ehm_node_size in the one thing they control."""
    tool = _tool()
    one_key = {
        'mae': 'model.masking.d_max',
        'shuffled_attention': 'model.masking.type',
        'random_tree_node_size': 'model.masking.type',
        'pixel_tree_node_size': 'model.affinity_source',
    }
    for arm, key in one_key.items():
        assert _changed(tool, arm, 'ehm_node_size') == {key}, arm
    for arm in FREE_ARMS:  # the whole mask source, nothing else
        changed = _changed(tool, arm, 'ehm_node_size')
        assert changed and all(k.startswith('model.masking.')
                               for k in changed), (arm, changed)
    assert _changed(tool, 'block_beit', 'block') == {
        'model.masking.size_range'
    }
    cfg = tool.build_run_config(CONFIG, 'colormae_green', 0, '', False)
    assert cfg.model.masking.color == 'green'


def test_every_arm_masks_the_same_ratio(v2_models):
    from mmpretrain.registry import MODELS
    tool = _tool()
    _, arms, _, _, _ = tool.load_study(CONFIG, quick=False)
    for arm in arms:
        cfg = tool.build_run_config(CONFIG, arm, 0, '', quick=False)
        masking = MODELS.build(dict(cfg.model.masking, grid_size=(8, 8)))
        assert masking.num_masked == 48, arm


@pytest.mark.parametrize('quick', [False, True])
def test_loaders_never_give_shuffled_attention_a_batch_of_one(quick):
    """Shuffled attention needs 2 images per batch: every loader of the arm
    divides its dataset (or drops the last batch)."""
    tool = _tool()
    cfg = tool.build_run_config(CONFIG, 'shuffled_attention', 0, '', quick)
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg[name]
        dataset = loader.dataset
        size = (sum(d.num_samples for d in dataset.datasets)
                if dataset.type == 'ConcatDataset' else dataset.num_samples)
        assert loader.batch_size >= 2, name
        assert size % loader.batch_size == 0 or loader.get(
            'drop_last', False), (name, size, loader.batch_size)


def test_shuffled_attention_has_ehm_tree_statistics(v2_models):
    """Same trees as EHM on the batch, rolled by one image: the same level
    node sizes per image, each at the level EHM chooses for its donor."""
    from ehm_mm.models.masking.mask_statistics import level_node_size
    cfg, models = v2_models
    inputs, _ = _task_images(cfg, 24, models['ehm_node_size'])
    with torch.no_grad():
        attention = models['ehm_node_size'].encoder_affinity(inputs)
    ehm = models['ehm_node_size'].masking
    shuffled = models['shuffled_attention'].masking
    own, other = ehm.hierarchy(attention), shuffled.hierarchy(attention)
    assert torch.equal(other.ancestors, torch.roll(own.ancestors, -1, 0))
    assert torch.equal(other.num_nodes, torch.roll(own.num_nodes, -1, 0))
    for depth in (1, 2, 3, 4):
        results = [
            source(attention, depth=[depth] * 24,
                   generator=torch.Generator().manual_seed(1))
            for source in (ehm, shuffled)
        ]
        assert torch.equal(results[1].depth, torch.roll(results[0].depth,
                                                        -1, 0))
        assert torch.equal(level_node_size(results[1]),
                           torch.roll(level_node_size(results[0]), -1, 0))


def _predicted(model, inputs, masks):
    samples = model.predict(inputs)
    for sample, mask in zip(samples, masks):
        sample.set_field(torch.from_numpy(mask), 'gt_object_mask')
    return [s.to_dict() for s in samples]


def _best_iou(cfg, samples):
    from mmpretrain.registry import METRICS
    figures = {}
    for metric_cfg in cfg.val_evaluator:
        if metric_cfg['type'] == 'HierarchyIoU':
            metric = METRICS.build(dict(metric_cfg))
            metric.process({}, samples)
            figures[metric.prefix] = metric.compute_metrics(
                metric.results)['best_iou']
    return figures


def test_both_trees_are_scored_and_labelled(v2_models):
    """The tree that made the masks and the image's own model tree: the
    same for EHM (written once, the fallback scores it), different for
    shuffled attention (another image's tree) and for block masks."""
    from mmpretrain.registry import MODELS
    cfg, models = v2_models
    inputs, masks = _task_images(cfg, 16, models['ehm_node_size'])
    ehm = models['ehm_node_size']
    samples = _predicted(ehm, inputs, masks)
    assert 'teacher_hierarchy_ancestors' not in samples[0]
    assert torch.equal(ehm.predict_teacher_hierarchy(inputs),
                       ehm.predict_hierarchy(inputs))  # the same tree
    figures = _best_iou(cfg, samples)
    assert set(figures) == {'hierarchy', 'teacher_hierarchy'}
    assert figures['hierarchy'] == figures['teacher_hierarchy']

    tool = _tool()
    for arm in ('shuffled_attention', 'block_beit'):
        run_cfg = tool.build_run_config(CONFIG, arm, 0, '', quick=False)
        torch.manual_seed(0)  # the initialisation of ehm's model
        model = MODELS.build(
            dict(run_cfg.model,
                 data_preprocessor=run_cfg.data_preprocessor)).eval()
        samples = _predicted(model, inputs, masks)
        made = torch.stack([s['hierarchy_ancestors'] for s in samples])
        own = torch.stack([s['teacher_hierarchy_ancestors'] for s in samples])
        if arm == 'shuffled_attention':  # image i's masks: image i+1's tree
            assert torch.equal(made, torch.roll(own, -1, 0))
            assert torch.equal(own, ehm.predict_hierarchy(inputs))
        figures = _best_iou(cfg, samples)
        assert figures['hierarchy'] != figures['teacher_hierarchy'], arm
    names = dict(tool.load_study(CONFIG, False)[0].study_metrics)
    assert names['hierarchy/best_iou'] == 'best-IoU, tree that made the masks'
    assert names['teacher_hierarchy/best_iou'] == (
        "best-IoU, image's own model tree")


def test_tiny_run_records_mask_alignment_and_both_trees(tmp_path,
                                                        monkeypatch):
    """A quick-settings run of shuffled attention: the result holds both
    best-IoUs and the mask-object alignment, and the report prints them."""
    monkeypatch.chdir(tmp_path)  # the config's data_root is relative
    tool = _tool()
    folder = tmp_path / 'runs' / 'shuffled_attention' / 'seed0'
    folder.mkdir(parents=True)
    result = tool.run_one(CONFIG, 'shuffled_attention', 0, str(folder), True,
                          1)
    assert 0 <= result['final']['teacher_hierarchy/best_iou'] <= 100
    assert 0 <= result['final']['hierarchy/best_iou'] <= 100
    log = result['mask_alignment']
    assert log['num_images'] == 48 and log['seed'] == 0
    assert 0.5 < log['progress'] <= 1.0
    shares = [log[k] for k in ('node_in_object', 'node_in_background',
                               'node_mixed')]
    assert all(0 <= s <= 100 for s in shares)
    assert sum(shares) == pytest.approx(100.0)
    assert 0 < log['object_coverage'] <= 100
    cfg = tool.load_study(CONFIG, True)[0]
    metrics = [tuple(m) for m in cfg.study_metrics]
    summary = tool.report(str(tmp_path), 'mae', ['shuffled_attention'], [0],
                          metrics=metrics)
    entry = summary['arms']['shuffled_attention']['mask_alignment']
    assert entry['runs'] == 1
    assert entry['node_mixed']['mean'] == pytest.approx(log['node_mixed'])
    table = (tmp_path / 'results.md').read_text()
    assert "best-IoU, image's own model tree" in table
    assert 'best-IoU, tree that made the masks' in table
    assert 'Mask-object alignment' in table
    assert '| shuffled_attention | ' in table.split('Mask-object')[1]
