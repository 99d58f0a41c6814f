# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""tools/analysis/study_cost.py: the MAC counts and the GPU-hours."""
import json
import os.path as osp
import runpy

import pytest

import ehm_mm  # noqa: F401  (registers the mask sources)

REPO = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
TOOL = runpy.run_path(osp.join(REPO, 'tools', 'analysis', 'study_cost.py'))
VIT_S = 'configs/study/imagenet/masking_study_vit-s_in100.py'
TINY = dict(width=8, hidden=32, layers=2, patch=2, patches=4)


def test_block_and_model_macs_by_hand():
    # s (4 D^2 + 2 D H) + 2 s^2 D
    assert TOOL['block_macs'](10, 8, 32) == 10 * (256 + 512) + 2 * 100 * 8
    # embedding 3*2*2*8*4 = 384; 2 blocks on 5 tokens: 2 * (5 * 768 + 400)
    assert TOOL['encoder_macs'](TINY) == 384 + 2 * (5 * 768 + 2 * 25 * 8)
    # MAE at ratio 0.5: embedding 384, encoder on 3 tokens 2 * 2448,
    # projection 3 * 8 * 4 = 96, decoder block on 5 tokens of width 4
    # (MLP 8): 5 * (64 + 64) + 2 * 25 * 4 = 840, head 4 * 4 * 12 = 192
    decoder = dict(width=4, depth=1, mlp_ratio=2)
    assert TOOL['mae_forward_macs'](TINY, 0.5, decoder) == \
        384 + 4896 + 96 + 840 + 192


def test_vit_dims_of_mmpretrain_and_mmseg_configs():
    assert TOOL['vit_dims'](dict(arch='deit-small')) == dict(
        width=384, hidden=1536, layers=12, patch=16, patches=196)
    assert TOOL['vit_dims'](dict(
        embed_dims=384, num_layers=12, mlp_ratio=4, img_size=(512, 512),
        patch_size=16)) == dict(width=384, hidden=1536, layers=12,
                                patch=16, patches=1024)
    with pytest.raises(ValueError, match="unknown ViT arch 'x'"):
        TOOL['vit_dims'](dict(arch='x'))


def test_published_rate():
    rate, label = TOOL['published_rate']()
    per_gpu = 1_281_167 * 800 / (42 * 3600 * 64)
    assert per_gpu == pytest.approx(105.9, abs=0.05)
    large = TOOL['vit_dims'](dict(arch='large'))
    assert rate == pytest.approx(
        per_gpu * 3 * TOOL['mae_forward_macs'](large, 0.75))
    assert label.startswith('from published throughput')
    assert '105.9 images/s per V100' in label and '64 V100' in label


def test_measured_rate_from_bench_json(tmp_path):
    path = tmp_path / 'bench.json'
    res = dict(step_time={'mae': 0.5, 'all': 0.6}, batch_size=64,
               arch='b', img_size=224, ratio={'all': 1.2},
               device_name='NVIDIA H100', precision='bf16 autocast')
    path.write_text(json.dumps(res))
    rate, ratio, label = TOOL['measured_rate'](str(path))
    base = TOOL['vit_dims'](dict(arch='b'))
    assert rate == pytest.approx(128 * 3 * TOOL['mae_forward_macs'](
        base, 0.75))
    assert ratio == 1.2 and 'measured' in label and 'NVIDIA H100' in label
    with pytest.raises(ValueError, match=r"attn_layers '4'.*\['all'\]"):
        TOOL['measured_rate'](str(path), 4)
    path.write_text(json.dumps(dict(res, step_time={'all': 0.6})))
    with pytest.raises(ValueError, match='no MAE step time'):
        TOOL['measured_rate'](str(path))


def test_measured_rate_reads_a_real_bench_json(tmp_path):
    """bench_train_step.py --smoke --json (a tiny custom ViT, CPU)."""
    bench = runpy.run_path(
        osp.join(REPO, 'tools', 'benchmarks', 'bench_train_step.py'))
    path = str(tmp_path / 'smoke.json')
    bench['main'](['--smoke', '--no-memory', '--steps', '2', '--json',
                   path])
    with open(path) as f:
        res = json.load(f)
    rate, ratio, label = TOOL['measured_rate'](path)
    arch = res['arch']
    dims = dict(width=arch['embed_dims'], layers=arch['num_layers'],
                hidden=arch['feedforward_channels'],
                patch=res['img_size'] // res['grid'][0],
                patches=res['grid'][0] * res['grid'][1])
    assert TOOL['vit_dims'](dict(
        arch=arch, img_size=res['img_size'],
        patch_size=dims['patch'])) == dims
    per_gpu = res['batch_size'] / res['step_time']['mae']
    assert rate == pytest.approx(
        per_gpu * 3 * TOOL['mae_forward_macs'](dims, 0.75))
    assert ratio == res['ratio']['all'] and 'cpu' in label


def _tiny_study(tmp_path):
    """The ViT-S study with 10 epochs of 1000 images, 2 stages and one
    stage whose package is missing."""
    path = tmp_path / 'tiny_study.py'
    path.write_text(f"""
_base_ = '{osp.join(REPO, VIT_S)}'
train_cfg = dict(max_epochs=10)
study_images = dict(train=1000, val=100)
study_seeds = dict(primary=3, exploratory=2)
study_evaluation = [
    dict(name='knn', tool='test', checkpoint='argument',
         config='configs/study/imagenet/eval/vit-small-p16_knn_in100.py',
         metric='knnbank/top1', report_as='knn/top1'),
    dict(name='finetune', tool='train',
         checkpoint='model.backbone.init_cfg.checkpoint',
         config='configs/study/imagenet/eval/vit-small-p16_ft_in100.py',
         metric='accuracy/top1', report_as='finetune/top1'),
    dict(name='seg', tool='train', checkpoint='x', requires=['no_such_pkg'],
         config='nowhere.py', metric='mIoU', report_as='ade20k/mIoU'),
]
""")
    return str(path)


def test_gpu_hours_of_a_known_study(tmp_path):
    rate, ratio = 1e12, 1.5  # MACs per GPU-second, EHM/MAE
    cost = TOOL['study_cost'](_tiny_study(tmp_path), rate, ratio)
    small = TOOL['vit_dims'](dict(arch='deit-small'))
    step = 3 * TOOL['mae_forward_macs'](small, 0.75)
    fwd = TOOL['encoder_macs'](small)
    hour = 3600 * rate
    knn = 1100 * fwd / hour  # bank + queries, one forward each
    # 100 epochs of 1000 images forward + backward, 100 validations of 100
    finetune = (3 * 100 * 1000 + 100 * 100) * fwd / hour
    assert cost['skipped'] == {'seg': "needs ['no_such_pkg'], not installed"}
    arms = cost['arms']
    for name, arm in arms.items():
        teacher = name in ('ehm_node_size', 'shuffled_attention')
        assert arm['factor'] == (1.5 if teacher else 1.0), name
        assert arm['pretrain'] == pytest.approx(
            10 * 1000 * step * arm['factor'] / hour)
        assert arm['stages'] == pytest.approx(dict(knn=knn,
                                                   finetune=finetune))
        assert arm['per_run'] == pytest.approx(arm['pretrain'] + knn +
                                               finetune)
        primary = name in ('mae', 'ehm_node_size', 'shuffled_attention',
                           'random_tree_node_size')
        assert (arm['primary'], arm['seeds']) == (primary,
                                                  3 if primary else 2)
        assert arm['total'] == pytest.approx(arm['per_run'] * arm['seeds'])
        assert arm['endpoint_total'] == pytest.approx(
            (arm['pretrain'] + finetune) * arm['seeds'])
    a_arms = ['ehm_node_size', 'random_tree_node_size', 'shuffled_attention']
    assert cost['question_a_arms'] == a_arms
    assert cost['endpoint_stages'] == ['finetune']
    totals = cost['totals']
    assert totals['question_a'] == pytest.approx(
        sum(arms[a]['total'] for a in a_arms))
    assert totals['question_a_endpoint'] == pytest.approx(
        sum(arms[a]['endpoint_total'] for a in a_arms))
    assert totals['all'] == pytest.approx(
        sum(a['total'] for a in arms.values()))
    assert totals['primary'] == pytest.approx(
        totals['all'] - 3 * 2 * arms['colormae_green']['per_run'])


def test_command_line_labels_its_inputs(tmp_path, capsys):
    out = tmp_path / 'cost.json'
    assert TOOL['main']([_tiny_study(tmp_path), '--json', str(out)]) == 0
    text = capsys.readouterr().out
    assert 'throughput from published throughput' in text
    assert 'measured on CPU' in text
    assert '| ehm_node_size (primary) | 3 | 1.50 |' in text
    assert 'stage seg left out' in text
    saved = json.loads(out.read_text())
    assert saved['totals']['all'] > saved['totals']['primary'] > 0


@pytest.mark.parametrize('config, column', [
    ('configs/study/imagenet/masking_study_vit-s_in100.py', 0),
    ('configs/study/imagenet/masking_study_vit-b_in100.py', 1),
])
def test_docs_table_is_the_tools_output(config, column):
    """docs/en/cluster_study.md's cost table, from published throughput."""
    rate, _ = TOOL['published_rate']()
    cost = TOOL['study_cost'](osp.join(REPO, config), rate,
                              TOOL['MEASURED_CPU_EHM_RATIO'])
    with open(osp.join(REPO, 'docs', 'en', 'cluster_study.md')) as f:
        rows = {line.split(' | ')[0].lstrip('| '):
                line.rstrip().rstrip(' |').split(' | ')[1:]
                for line in f if line.startswith('| ')}
    arms, totals = cost['arms'], cost['totals']

    def cell(label):
        return rows[label][column].strip('*')

    assert cell('one MAE-cost run: pretraining') == \
        f"{arms['mae']['pretrain']:.1f}"
    assert cell('one EHM run: pretraining (x 1.50)') == \
        f"{arms['ehm_node_size']['pretrain']:.1f}"
    stages = arms['mae']['stages']
    assert cell('per run: k-NN / linear / fine-tune / ADE20K (lower bound)'
                ) == ' / '.join(f'{stages[k]:.1f}' for k in (
                    'knn', 'linear', 'finetune', 'ade20k'))
    for label, key in [
        ('question (a): EHM, shuffled attention, random tree x 15 seeds, '
         'pretraining + fine-tune (the endpoint)', 'question_a_endpoint'),
        ('question (a), every stage', 'question_a'),
        ('the four arms of the primary contrasts x 15 seeds, every stage',
         'primary'),
        ('all seven arms (three exploratory at 4 seeds), every stage',
         'all'),
    ]:
        assert cell(label) == f'{totals[key]:,.0f}', label
