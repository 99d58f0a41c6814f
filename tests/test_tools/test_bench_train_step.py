# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""tools/benchmarks/bench_train_step.py: smoke run, report and options."""
import importlib.util
import json
import math
import os.path as osp
import sys

import pytest

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SCRIPT = osp.join('tools', 'benchmarks', 'bench_train_step.py')


@pytest.fixture(scope='module')
def bench():
    """The benchmark script imported as a module."""
    spec = importlib.util.spec_from_file_location(
        'bench_train_step', osp.join(REPO_ROOT, SCRIPT))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smoke_run_prints_every_figure(run_tool, tmp_path):
    out = tmp_path / 'result.json'
    proc = run_tool([
        sys.executable, SCRIPT, '--smoke', '--threads', '1', '--json',
        str(out)
    ], timeout=300)
    text = proc.stdout
    for field in ('device: cpu', 'float32', '4x4 patches', 'batch 2',
                  'teacher ema', 'MAE  ', 'EHM-MAE attn_layers 0-0 (1/2)',
                  'EHM-MAE attn_layers 0-1 (2/2)', 'images/s',
                  'EHM/MAE ratio', 'EMA teacher update',
                  'teacher forward (fused)', 'affinity', 'hierarchy',
                  'masks', 'hierarchy + masks', 'step set-up',
                  'logged values', 'teacher distance (1/100 it)',
                  'student with given masks', 'timing noise',
                  'teacher call / fused inference forward',
                  'peak memory (peak RSS (VmHWM) growth'):
        assert field in text, field
    res = json.loads(out.read_text())
    assert res['settings'] == ['1', 'all']
    assert res['batch_size'] == 2 and res['grid'] == [4, 4]
    for key in ('mae', '1', 'all'):
        assert len(res['step_times'][key]) == 1
        assert res['step_time'][key] > 0
        assert res['memory'][key]['peak_mib'] >= 0
        assert math.isfinite(res['memory'][key]['peak_mib'])
    for value in ('1', 'all'):
        comp = res['components'][value]
        assert set(comp) == {'ema_update', 'teacher_call', 'fused_forward',
                             'teacher_network', 'hierarchy', 'masks',
                             'step_setup', 'log_vars', 'teacher_distance',
                             'student'}
        assert all(t > 0 for k, t in comp.items() if k != 'student')
        assert math.isfinite(comp['student'])  # a difference of two steps
        ratio = res['step_times'][value][0] / res['step_times']['mae'][0]
        assert res['ratio'][value] == pytest.approx(ratio)
        assert f'EHM/MAE ratio {ratio:.3f}' in text


def _fake_result() -> dict:
    return dict(
        device='cpu', device_name='cpu', torch='x', threads=1,
        precision='float32', arch='b', num_layers=12, img_size=224,
        grid=[14, 14], batch_size=4, steps=3, warmup=1, teacher='ema',
        progress=0.5, log_interval=100, mask_depth=2.5, settings=['4'],
        setting_names={'4': '0-3 (4/12)'},
        step_times={'mae': [2.0] * 3, '4': [2.5] * 3},
        step_time={'mae': 2.0, '4': 2.5},
        ratio={'4': 1.25},
        components={'4': dict(ema_update=0.02, teacher_call=0.33,
                              fused_forward=0.3, teacher_network=0.3,
                              hierarchy=0.01, masks=0.002, step_setup=0.001,
                              log_vars=0.003, teacher_distance=0.4,
                              student=0.13)},
        memory={'mae': dict(peak_mib=1000.0, how='ru_maxrss growth'),
                '4': dict(peak_mib=1080.0, how='ru_maxrss growth')})


def test_report_arithmetic(bench):
    text = bench.report(_fake_result())
    assert '2000.0 ms      2.00 images/s' in text
    assert 'EHM/MAE ratio 1.250' in text
    assert '500.0 ms per step (25.0% of the MAE step)' in text
    assert 'affinity                    :      30.0 ms' in text
    # every part: 1 + 20 + 300 + 30 + 10 + 2 + 3 + 400 / 100 + 130 ms,
    # timing noise = 500 - 500 ms
    assert 'teacher distance (1/100 it) :       4.0 ms' in text
    assert 'student with given masks    :     130.0 ms' in text
    assert 'timing noise (extra - parts):       0.0 ms' in text
    assert '(teacher distance when computed: 400.0 ms)' in text
    assert 'hierarchy + masks           :   0.60% of MAE step' in text
    assert 'same layers: 1.100' in text
    assert '1080.0 MiB  EHM/MAE ratio 1.080' in text


def test_options_are_checked(bench, tmp_path):
    with pytest.raises(SystemExit):
        bench.parse_args(['--attn-layers', 'first'])
    with pytest.raises(SystemExit):
        bench.parse_args(['--steps', '0'])
    assert bench.parse_args(['--smoke']).attn_layers == ['1', 'all']
    assert bench.attn_setting('all', 12) is None
    assert bench.attn_setting('4', 12) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match='--attn-layers 13'):
        bench.attn_setting('13', 12)
    args = bench.parse_args(['--config', str(tmp_path / 'missing.py')])
    with pytest.raises(FileNotFoundError, match='missing.py'):
        bench.model_configs(args)


def test_models_share_one_config(bench):
    args = bench.parse_args(['--arch', 'l', '--img-size', '192'])
    cfgs = bench.model_configs(args)
    mae, ehm = cfgs['mae'], cfgs['ehm']
    assert mae['type'] == 'MAE' and ehm['type'] == 'EHMMAE'
    assert mae['backbone']['type'] == 'MAEViT'
    assert ehm['backbone']['type'] == 'EHMMAEViT'
    assert not set(bench.EHM_ONLY_KEYS) & set(mae)
    for part in ('neck', 'head'):
        assert mae[part] == ehm[part]
    assert ehm['neck']['embed_dim'] == 1024
    assert ehm['neck']['num_patches'] == 144
    same = {k: v for k, v in ehm['backbone'].items() if k != 'type'}
    assert {k: v for k, v in mae['backbone'].items()
            if k != 'type'} == same
    assert same['arch'] == 'l' and same['img_size'] == 192
