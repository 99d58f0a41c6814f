# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Smoke tests of tools/visualize_hierarchy.py and bench_masking.py."""
import importlib.util
import os.path as osp
import sys
from types import ModuleType

import numpy as np
import pytest
import torch
from PIL import Image

REPO = osp.abspath(osp.join(osp.dirname(__file__), '..', '..', '..'))


def _load(relpath: str) -> ModuleType:
    name = osp.splitext(osp.basename(relpath))[0]
    spec = importlib.util.spec_from_file_location(name,
                                                  osp.join(REPO, relpath))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def visualize() -> ModuleType:
    return _load('tools/visualize_hierarchy.py')


@pytest.fixture
def images(tmp_path) -> list:
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate([(50, 60), (64, 64)]):
        array = rng.integers(0, 60, size=(h, w, 3), dtype=np.uint8)
        array[h // 4:h // 2, w // 4:3 * w // 4] = [200, 40, 30]  # a block
        path = tmp_path / f'img_{i}.png'
        Image.fromarray(array).save(path)
        paths.append(str(path))
    return paths


def test_visualize_random_vit(visualize, images, tmp_path):
    out_dir = str(tmp_path / 'vis')
    written = visualize.main(images + [
        '--arch', 'deit-tiny', '--img-size', '64', '--patch-size', '8',
        '--depths', '0', '2', '9', '--panel-size', '64', '--out-dir',
        out_dir
    ])
    assert [osp.basename(p) for p in written] == [
        'img_0_hierarchy.png', 'img_1_hierarchy.png'
    ]
    for path in written:
        figure = np.asarray(Image.open(path))
        # two rows of 64-pixel panels, several panels wide
        assert figure.shape[0] == 2 * 64 + 4 and figure.shape[1] > 5 * 64
        assert figure.std() > 10


def test_visualize_config_and_checkpoint(visualize, images, tmp_path):
    from mmengine.config import Config
    from mmpretrain.registry import MODELS
    config = osp.join(REPO, 'configs', 'ehm_mae_vit-tiny_demo.py')
    model = MODELS.build(Config.fromfile(config).model)
    state = model.state_dict()
    state['backbone.cls_token'] = torch.full_like(state['backbone.cls_token'],
                                                  0.5)
    checkpoint = str(tmp_path / 'model.pth')
    torch.save({'state_dict': state}, checkpoint)
    args = visualize.parse_args(
        images[:1] + ['--config', config, '--checkpoint', checkpoint])
    loaded, encoder = visualize.build_model(args)
    assert bool((encoder.cls_token == 0.5).all())
    written = visualize.main(images[:1] + [
        '--config', config, '--checkpoint', checkpoint, '--panel-size',
        '64', '--depths', '1', '--out-dir',
        str(tmp_path / 'vis')
    ])
    assert len(written) == 1 and osp.isfile(written[0])
    # an MAE checkpoint's encoder loads into the config-free ViT
    args = visualize.parse_args(images[:1] + [
        '--img-size', '64', '--patch-size', '8', '--arch',
        'deit-tiny', '--checkpoint', checkpoint
    ])
    args.arch = dict(embed_dims=96, num_layers=4, num_heads=3,
                     feedforward_channels=384)
    _, encoder = visualize.build_model(args)
    assert bool((encoder.cls_token == 0.5).all())


def test_visualize_refuses_missing_files(visualize, images, tmp_path):
    with pytest.raises(FileNotFoundError, match='missing.png'):
        visualize.main([
            str(tmp_path / 'missing.png'), '--arch', 'deit-tiny',
            '--img-size', '32', '--out-dir',
            str(tmp_path)
        ])
    with pytest.raises(FileNotFoundError, match='none.pth'):
        visualize.main(images + [
            '--arch', 'deit-tiny', '--img-size', '32', '--checkpoint',
            str(tmp_path / 'none.pth')
        ])


def test_benchmark_prints_its_figures(capsys, monkeypatch):
    bench = _load('tools/benchmarks/bench_masking.py')
    monkeypatch.setattr(sys, 'argv', [
        'bench_masking.py', '--batch-size', '8', '--grid', '6', '5',
        '--repeats', '1', '--skip-vit', '--device', 'cpu'
    ])
    bench.main()
    out = capsys.readouterr().out
    assert 'EHM hierarchy + masks' in out and 'MAE random_masking' in out
    assert out.count('images/s') == 2
    assert 'operator launches per call' in out
    launches = [int(line.split(':')[1].split('[')[0])
                for line in out.splitlines()
                if 'static' in line and '[' in line]
    assert len(launches) == 3 and all(n > 0 for n in launches)
    assert launches[0] < launches[1]  # 3 levels < the whole tree
