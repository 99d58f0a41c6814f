# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""The ImageNet study configs (configs/study/imagenet/) and the ImageNet-100
data bases: they load, build their models and datasets on a fake
ImageNet-100 folder written by the converter, the arms are one-key changes
of the EHM arm, the pre-registration is valid, and every evaluation stage
follows the schema of docs/en/cluster_study.md."""
import copy
import glob
import os.path as osp
import runpy
import subprocess
import sys

import pytest
import torch
from fake_imagenet import WNIDS, make_fake_imagenet, write_class_list
from masking_study_tool import load_masking_study
from mmengine.config import Config
from runner_utils import restoring_mmengine_globals

from ehm_mm.evaluation.study_statistics import paired_t_power, tost_power
from ehm_mm.utils.launch import fall_back_from_amp

REPO = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
STUDY = osp.join(REPO, 'configs', 'study', 'imagenet')
STUDIES = [f'configs/study/imagenet/masking_study_{name}.py'
           for name in ('vit-s_in100', 'vit-b_in100', 'vit-b_in1k')]
CONFIGS = sorted(
    osp.relpath(p, REPO) for p in
    glob.glob(osp.join(STUDY, '**', '*.py'), recursive=True) +
    glob.glob(osp.join(REPO, 'configs/_base_/datasets/imagenet100*.py')))
LISTED = list(WNIDS[:3])
STAGE_KEYS = {'name', 'config', 'tool', 'checkpoint', 'metric', 'report_as'}
OPTIONAL_KEYS = {'requires', 'cfg_options'}


def _load(config):
    return Config.fromfile(osp.join(REPO, config))


def _study_tool():
    return load_masking_study()


def _arm_config(cfg, arm):
    run = copy.deepcopy(cfg)  # merging consumes the arm's _delete_ flags
    run.merge_from_dict(copy.deepcopy(run.study_arms[arm].to_dict()))
    return run


def _flat(tree, prefix=''):
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f'{prefix}{key}.'))
        else:
            flat[f'{prefix}{key}'] = value
    return flat


def _changed(cfg, arm, reference='ehm_node_size'):
    a, b = (_flat({k: v for k, v in _arm_config(cfg, name).to_dict().items()
                   if not k.startswith('study_')})
            for name in (arm, reference))
    return {k for k in set(a) | set(b) if a.get(k, a) != b.get(k, b)}


@pytest.fixture(scope='module')
def in100(tmp_path_factory):
    """A fake ImageNet-100 root from the converter (3 classes, links)."""
    tmp = tmp_path_factory.mktemp('imagenet')
    imagenet = str(tmp / 'in1k')
    make_fake_imagenet(imagenet, train_per_class=4, val_per_class=2)
    classes = write_class_list(str(tmp / 'list.txt'), LISTED)
    tool = runpy.run_path(
        osp.join(REPO, 'tools', 'dataset_converters', 'imagenet100.py'))
    out = str(tmp / 'in100')
    tool['convert'](imagenet, out, classes=classes, symlink=True)
    return out + '/'


def _point_at(dataset, root):
    """Aim an ImageNet dataset config (or a ConcatDataset's) at ``root``."""
    if dataset.get('type') == 'ConcatDataset':
        for part in dataset['datasets']:
            _point_at(part, root)
        return
    dataset['data_root'] = root
    dataset['classes'] = root + 'classes.txt'


def _build_dataset(dataset, root):
    from mmpretrain.registry import DATASETS
    dataset = copy.deepcopy(dataset)
    _point_at(dataset, root)
    return DATASETS.build(dataset)


@pytest.mark.parametrize('config', CONFIGS)
def test_every_config_loads(config):
    cfg = _load(config)
    assert cfg.filename.endswith(osp.basename(config))


def test_imagenet100_data_base_swaps_only_the_annotation(in100):
    """ImageNet-1K by swapping the data base: the two ViT-B studies differ
    in the dataset fields (and the data base's imagenet100_* fields) and
    their evaluation configs, nothing else."""
    in100_study, in1k_study = (_flat({
        k: v for k, v in _load(c).to_dict().items()
        if k not in ('study_evaluation', 'study_images')
        and not k.startswith('imagenet100_')
    }) for c in STUDIES[1:])
    changed = {k for k in set(in100_study) | set(in1k_study)
               if in100_study.get(k, k) != in1k_study.get(k, k)}
    assert changed == {f'train_dataloader.dataset.{k}' for k in (
        'data_root', 'data_prefix', 'ann_file', 'classes')} | {'data_root'}
    cfg = _load('configs/_base_/datasets/imagenet100_bs512_mae.py')
    dataset = _build_dataset(cfg.train_dataloader.dataset, in100)
    assert len(dataset) == 12 and dataset.CLASSES == tuple(LISTED)
    # labels from the annotation file: the list's order, not sorted order
    for i in range(len(dataset)):
        info = dataset.get_data_info(i)
        assert info['img_path'].split('/')[-2] == LISTED[info['gt_label']]
    sample = dataset[0]
    assert sample['inputs'].shape == (3, 224, 224)


@pytest.mark.parametrize('study', STUDIES)
def test_ehm_arm_is_the_config_and_arms_change_one_thing(study):
    cfg = _load(study)
    assert _arm_config(cfg, 'ehm_node_size').model == cfg.model
    one_key = {
        'mae': 'model.masking.d_max',
        'shuffled_attention': 'model.masking.type',
        'random_tree_node_size': 'model.masking.type',
        'pixel_tree_node_size': 'model.affinity_source',
    }
    for arm, key in one_key.items():
        assert _changed(cfg, arm) == {key}, arm
    for arm in ('colormae_green', 'block_beit'):  # the mask source only
        changed = _changed(cfg, arm)
        assert changed and all(k.startswith('model.masking.')
                               for k in changed), (arm, changed)
    assert set(cfg.study_arms) == set(one_key) | {
        'ehm_node_size', 'colormae_green', 'block_beit'}
    # the same arms, contrasts and pre-registration in every study config
    reference = _load(STUDIES[0])
    for key in ('study_arms', 'study_contrasts', 'study_preregistration',
                'study_metrics', 'study_seeds'):
        assert cfg[key] == reference[key], key


def test_preregistration_is_valid_and_powered():
    cfg = _load(STUDIES[0])
    tool = _study_tool()
    metrics = [m[0] for m in cfg.study_metrics]
    prereg = tool.check_preregistration(
        cfg.study_preregistration, cfg.study_contrasts, metrics)
    n, alpha = prereg['num_seeds'], prereg['alpha'] / 3  # Holm's 1st level
    margin = prereg['equivalence_margin']['finetune/top1']
    planning_sd = 0.5  # the config's planning value (comment, rationale)
    assert 'planning sd 0.5' in cfg.study_preregistration['rationale']
    assert paired_t_power(n, margin, planning_sd, alpha) == pytest.approx(
        0.86, abs=0.005)
    assert tost_power(n, margin, planning_sd, alpha) == pytest.approx(
        0.84, abs=0.005)
    # 15 is the smallest count with 80% power for TOST (14 for the t test)
    assert tost_power(n - 1, margin, planning_sd, alpha) < 0.8
    assert paired_t_power(n - 1, margin, planning_sd, alpha) >= 0.8
    assert paired_t_power(n - 2, margin, planning_sd, alpha) < 0.8
    assert cfg.study_seeds == dict(primary=n, exploratory=4)


def _resolve(cfg, dotted):
    node = cfg
    for part in dotted.split('.'):
        node = node[part]
    return node


@pytest.mark.parametrize('study', STUDIES)
def test_evaluation_stages_follow_the_schema(study):
    cfg = _load(study)
    stages = cfg.study_evaluation
    assert [s['name'] for s in stages] == [
        'knn', 'linear', 'finetune', 'ade20k']
    report = [s['report_as'] for s in stages]
    assert len(set(report)) == len(report)
    assert set(report) == {m[0] for m in cfg.study_metrics}
    for stage in stages:
        assert STAGE_KEYS <= set(stage) <= STAGE_KEYS | OPTIONAL_KEYS
        assert stage['tool'] in ('test', 'train')
        stage_cfg = _load(stage['config'])
        if stage['checkpoint'] == 'argument':
            assert stage['tool'] == 'test'
            assert stage_cfg.test_evaluator.type == 'KNNBankAccuracy'
        else:  # the key exists in the stage config
            _resolve(stage_cfg, stage['checkpoint'])
        arch = cfg.model.backbone.arch
        if 'mmseg' not in stage.get('requires', []):
            assert stage_cfg.model.backbone.arch in (
                arch, {'b': 'base'}.get(arch)), stage['config']
            assert stage_cfg.model.backbone.patch_size == 16


def _pretrain_checkpoint(cfg, path):
    """Save a freshly built EHM-MAE's weights as a pretraining checkpoint."""
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    model = MODELS.build(cfg.model)
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), path)
    return model


@pytest.mark.parametrize('study', STUDIES[:2])
def test_every_arm_builds_its_model(study):
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    import ehm_mm  # noqa: F401
    init_default_scope('mmpretrain')
    cfg = _load(study)
    width = {'deit-small': 384, 'b': 768}[cfg.model.backbone.arch]
    for arm in cfg.study_arms:
        model = MODELS.build(_arm_config(cfg, arm).model)
        assert model.backbone.embed_dims == width, arm
        assert tuple(model.masking.grid_size) == (14, 14), arm
        assert model.masking.mask_ratio == 0.75, arm


def test_vit_s_study_trains_two_iterations_on_the_fake_folder(in100, tmp_path):
    from mmengine.runner import Runner
    cfg = _load(STUDIES[0])
    for key in [k for k in cfg if k.startswith('study_')]:
        cfg.pop(key)
    _point_at(cfg.train_dataloader.dataset, in100)
    cfg.train_dataloader.update(batch_size=4, num_workers=0,
                                persistent_workers=False)
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=2)
    cfg.param_scheduler = [dict(type='ConstantLR', factor=1.0,
                                by_epoch=False, begin=0)]
    cfg.default_hooks.checkpoint.update(by_epoch=False, interval=2)
    cfg.custom_hooks = []
    cfg.work_dir = str(tmp_path / 'work')
    cfg.experiment_name = 'imagenet_study_vit_s'
    fall_back_from_amp(cfg)
    with restoring_mmengine_globals():
        runner = Runner.from_cfg(cfg)
        runner.train()
        scalars = runner.message_hub.log_scalars
    assert torch.isfinite(torch.tensor(scalars['train/loss'].current()))
    assert scalars['train/mask_depth'].current() > 0  # EHM masks cut
    assert osp.isfile(osp.join(cfg.work_dir, 'iter_2.pth'))


def test_knn_stage_runs_on_a_pretraining_checkpoint(in100, tmp_path):
    """tools/test.py, the k-NN config and a pretraining checkpoint, as the
    launcher runs the 'knn' stage (checkpoint='argument')."""
    study = _load(STUDIES[0])
    checkpoint = str(tmp_path / 'epoch_200.pth')
    _pretrain_checkpoint(study, checkpoint)
    stage = study.study_evaluation[0]
    root = in100
    options = [
        f'test_dataloader.dataset.datasets.{i}.{k}={v}'
        for i in (0, 1) for k, v in (('data_root', root),
                                     ('classes', root + 'classes.txt'))
    ] + ['test_dataloader.batch_size=4', 'test_dataloader.num_workers=0',
         'test_dataloader.persistent_workers=False', 'test_evaluator.k=3']
    result = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools', 'test.py'),
         osp.join(REPO, stage['config']), checkpoint,
         '--work-dir', str(tmp_path / 'knn'), '--cfg-options', *options],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env=dict(__import__('os').environ, PYTHONPATH=REPO,
                 OMP_NUM_THREADS='1'))
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert 'student encoder of' in log  # every encoder key accounted for
    assert 'knnbank/top1:' in log and 'knnbank/num_queries: 6' in log
    assert 'knnbank/num_bank: 12' in log


def test_train_stages_load_the_pretraining_checkpoint(in100, tmp_path):
    """linear and fine-tune stages: the checkpoint at their
    ``checkpoint`` key initialises the encoder; datasets build."""
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    study = _load(STUDIES[0])
    checkpoint = str(tmp_path / 'epoch_200.pth')
    pretrained = _pretrain_checkpoint(study, checkpoint)
    expected = pretrained.backbone.state_dict()
    for stage in study.study_evaluation[1:3]:
        cfg = _load(stage['config'])
        cfg.merge_from_dict({stage['checkpoint']: checkpoint})
        init_default_scope('mmpretrain')
        model = MODELS.build(cfg.model)
        model.init_weights()
        got = model.backbone.state_dict()
        for key in ('patch_embed.projection.weight',
                    'layers.11.ffn.layers.1.weight', 'cls_token'):
            assert torch.equal(got[key], expected[key]), (stage['name'], key)
        assert model.head.num_classes == 100
        for loader in ('train_dataloader', 'val_dataloader'):
            dataset = _build_dataset(cfg[loader].dataset, in100)
            assert len(dataset) == (12 if loader == 'train_dataloader'
                                    else 6)
            assert dataset[0]['inputs'].shape == (3, 224, 224)


def test_vit_s_ade20k_config_has_vit_s_widths():
    pytest.importorskip('mmseg')
    cfg = _load('configs/study/imagenet/eval/vit-small-p16_upernet_ade20k.py')
    model = cfg.model
    assert model.backbone.embed_dims == 384 and model.backbone.num_heads == 6
    assert model.neck.embed_dim == 384
    assert model.decode_head.in_channels == [384] * 4
    assert model.auxiliary_head.in_channels == 384
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    import ehm_mm.downstream.mmseg  # noqa: F401
    with restoring_mmengine_globals():  # leaves no 'mmseg' default scope
        init_default_scope('mmseg')
        built = MODELS.build(cfg.model)
    assert built.backbone.embed_dims == 384
