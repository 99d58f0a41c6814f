# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""End to end: tools/retrieval.py on tiny generated retrieval sets.

Every benchmark gets a few generated "scenes" (one dominant hue each, plus
shapes) and near-duplicates made by cropping, rescaling and JPEG
re-encoding them, in the dataset's standard layout. A tiny ViT in an EHM
checkpoint separates the scenes, so every metric has a known answer.
"""
import colorsys
import importlib.util
import io
import json
import os
import os.path as osp
import pickle
import re
import socket
import sys

import numpy as np
import pytest
import torch
from mmpretrain.models.selfsup import MAEViT
from PIL import Image, ImageDraw

REPO_ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
NUM_SCENES = 6
TINY = dict(embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64)
CONFIG_DIR = osp.join(REPO_ROOT, 'configs', 'benchmarks', 'retrieval')


def scene(index: int, size: int = 96) -> Image.Image:
    """A generated image: one hue per scene, shapes in shades of it."""
    rng = np.random.default_rng(index)
    hue = index / NUM_SCENES
    value = 0.85 if index % 2 else 0.55

    def rgb(h, s, v):
        return tuple(int(255 * c) for c in colorsys.hsv_to_rgb(h, s, v))

    img = Image.new('RGB', (size, size), rgb(hue, 0.8, value))
    draw = ImageDraw.Draw(img)
    for _ in range(5):
        x0, y0 = rng.integers(0, size - 20, 2)
        w, h = rng.integers(8, 30, 2)
        shade = rgb(hue, rng.uniform(0.3, 1), rng.uniform(0.3, 1))
        draw.ellipse([x0, y0, x0 + w, y0 + h], fill=shade)
    return img


def crop(img: Image.Image, keep: float = 0.75) -> Image.Image:
    """Keep ``keep`` of each side (off-centre), back to the full size."""
    w, h = img.size
    x0, y0 = int(0.1 * w), int(0.15 * h)
    box = (x0, y0, x0 + int(keep * w), y0 + int(keep * h))
    return img.crop(box).resize((w, h), Image.BICUBIC)


def rescale(img: Image.Image, factor: float = 0.6) -> Image.Image:
    w, h = img.size
    return img.resize((int(w * factor), int(h * factor)), Image.BILINEAR)


def reencode(img: Image.Image, quality: int = 15) -> Image.Image:
    buffer = io.BytesIO()
    img.save(buffer, format='JPEG', quality=quality)
    buffer.seek(0)
    return Image.open(buffer).convert('RGB')


def save(img: Image.Image, path: str) -> None:
    os.makedirs(osp.dirname(path), exist_ok=True)
    img.save(path, quality=95)


def make_revisited(root: str, name: str) -> None:
    """Per scene: easy (rescaled, re-encoded), hard (crop), junk (tiny
    crop) database images and a full query image cropped by its box."""
    imlist, qimlist, gnd = [], [], []
    for s in range(NUM_SCENES):
        base = scene(s)
        first = len(imlist)
        variants = dict(
            easy0=rescale(base), easy1=reencode(base),
            hard=crop(base, 0.6), junk=crop(base, 0.3))
        for key, img in variants.items():
            imlist.append(f'scene{s}_{key}')
            save(img, osp.join(root, 'jpg', f'scene{s}_{key}.jpg'))
        qimlist.append(f'query{s}')
        save(base, osp.join(root, 'jpg', f'query{s}.jpg'))
        gnd.append(
            dict(bbx=[8.0, 8.0, 88.5, 80.0], easy=[first, first + 1],
                 hard=[first + 2], junk=[first + 3]))
    with open(osp.join(root, f'gnd_{name}.pkl'), 'wb') as f:
        pickle.dump(dict(imlist=imlist, qimlist=qimlist, gnd=gnd), f)


def make_copydays(root: str) -> None:
    """All 20 standard blocks; strong = crop + rescale + re-encode."""
    from ehm_mm.retrieval.datasets import COPYDAYS_BLOCKS
    for s in range(NUM_SCENES):
        base = scene(s)
        name = f'2{s:03d}00.jpg'
        save(base, osp.join(root, 'original', name))
        save(reencode(rescale(crop(base, 0.7), 0.8), 20),
             osp.join(root, 'strong', f'2{s:03d}01.jpg'))
        for block in COPYDAYS_BLOCKS[2:]:
            kind, level = block.split('/')
            if kind == 'jpegqual':
                img = reencode(base, int(level))
            else:  # crops/<pct>: pct % of the surface removed
                img = crop(base, float(np.sqrt(1 - int(level) / 100)))
            save(img, osp.join(root, block, name))


def make_holidays(root: str) -> None:
    for s in range(NUM_SCENES):
        base = scene(s)
        group = f'{1000 + s}'
        save(base, osp.join(root, 'jpg', f'{group}00.jpg'))
        save(crop(base), osp.join(root, 'jpg', f'{group}01.jpg'))
        save(reencode(rescale(base)), osp.join(root, 'jpg', f'{group}02.jpg'))


def make_ukbench(root: str) -> None:
    for s in range(NUM_SCENES):
        base = scene(s)
        views = [base, crop(base), rescale(base, 1.4), reencode(base)]
        for v, img in enumerate(views):
            save(img, osp.join(root, 'full', f'ukbench{4 * s + v:05d}.jpg'))


def make_checkpoint(path: str) -> None:
    """EHM layout: student backbone, decoder, all-zero EMA teacher."""
    torch.manual_seed(0)
    student = MAEViT(arch=TINY, img_size=32, patch_size=8)
    state = {f'backbone.{k}': v for k, v in student.state_dict().items()}
    state.update({
        f'teacher.module.{k}': torch.zeros_like(v)
        for k, v in student.state_dict().items()
    })
    state['neck.mask_token'] = torch.zeros(1, 1, 16)
    state['head.dummy'] = torch.zeros(1)
    torch.save(dict(meta=dict(epoch=1), state_dict=state), path)


def write_config(path: str, base: str) -> None:
    """A tiny-ViT child of a shipped config, loading in this process."""
    lines = [
        f'_base_ = [{osp.join(CONFIG_DIR, base)!r}]',
        'model = dict(backbone=dict(arch=dict(_delete_=True, '
        f'**{TINY!r}), img_size=32, patch_size=8))',
    ]
    for name in ('roxford5k', 'rparis6k', 'copydays', 'holidays', 'ukbench'):
        lines.append(f'{name}_test_dataloader = dict(num_workers=0)')
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')


@pytest.fixture(scope='module')
def retrieval_data(tmp_path_factory):
    root = tmp_path_factory.mktemp('retrieval')
    roots = {n: str(root / n) for n in
             ('roxford5k', 'rparis6k', 'copydays', 'holidays', 'ukbench')}
    make_revisited(roots['roxford5k'], 'roxford5k')
    make_revisited(roots['rparis6k'], 'rparis6k')
    make_copydays(roots['copydays'])
    make_holidays(roots['holidays'])
    make_ukbench(roots['ukbench'])
    for i in range(8):
        gray = int(40 + 25 * i)
        save(Image.new('RGB', (96, 96), (gray, gray, gray)),
             str(root / 'distractors' / f'd{i}.jpg'))
    checkpoint = str(root / 'ehm.pth')
    make_checkpoint(checkpoint)
    return root, roots, checkpoint


def _load_tool():
    spec = importlib.util.spec_from_file_location(
        'retrieval_tool', osp.join(REPO_ROOT, 'tools', 'retrieval.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_all_benchmarks_one_command(retrieval_data, run_tool):
    root, roots, checkpoint = retrieval_data
    config = str(root / 'all.py')
    write_config(config, 'vit-base-p16_retrieval-all.py')
    out = str(root / 'all.json')
    options = [
        f'{n}_test_dataloader.dataset.data_root={r}' for n, r in roots.items()
    ]
    proc = run_tool([
        sys.executable, 'tools/retrieval.py', config, checkpoint, '--work-dir',
        str(root / 'work'), '--out', out, '--cfg-options', *options
    ])
    with open(out) as f:
        results = json.load(f)
    assert list(results) == list(roots)
    for name in ('roxford5k', 'rparis6k'):
        for setup in 'EMH':
            assert results[name][f'{name}/mAP_{setup}'] == pytest.approx(100)
            assert results[name][f'{name}/mP@1_{setup}'] == pytest.approx(
                100)
    copydays = results['copydays']
    assert len(copydays) == 21  # 20 blocks + all
    assert all(v == pytest.approx(100) for v in copydays.values())
    assert results['holidays']['holidays/mAP'] == pytest.approx(100)
    assert results['ukbench']['ukbench/N-S'] == pytest.approx(4.0)
    # One table per dataset, then the summary.
    for title in ('ROxford5k: 6 queries, 24 database images',
                  'RParis6k: 6 queries', 'Copydays: 120 queries',
                  'INRIA Holidays: 6 queries', 'UKBench: 24 queries',
                  'Retrieval summary'):
        assert title in proc.stdout + proc.stderr, title


def test_teacher_weights_whitening_and_distractors(retrieval_data, capsys):
    root, roots, checkpoint = retrieval_data
    tool = _load_tool()
    ukbench = str(root / 'ukbench.py')
    write_config(ukbench, 'vit-base-p16_ukbench.py')
    results = tool.main([
        ukbench, checkpoint, '--weights', 'teacher', '--work-dir',
        str(root / 'work_teacher'), '--cfg-options',
        f'test_dataloader.dataset.data_root={roots["ukbench"]}',
        'test_dataloader.num_workers=0'
    ])
    # The all-zero teacher gives all-zero descriptors: every ranking is
    # the database order, so only the first group's 4 queries score 4.
    assert results['ukbench']['ukbench/N-S'] == pytest.approx(16 / 24)

    copydays = str(root / 'copydays.py')
    write_config(copydays, 'vit-base-p16_copydays.py')
    results = tool.main([
        copydays, checkpoint, '--work-dir',
        str(root / 'work_whiten'), '--cfg-options',
        f'test_dataloader.dataset.data_root={roots["copydays"]}',
        'test_dataloader.num_workers=0',
        'test_dataloader.dataset.query_blocks=[strong,crops/50]',
        f'test_dataloader.dataset.distractor_folder={root}/distractors',
        f'test_dataloader.dataset.whitening_folder={roots["ukbench"]}',
        'test_evaluator.whitening.dim=4'
    ])
    metrics = results['copydays']
    assert metrics['copydays/mAP_strong'] == pytest.approx(100)
    assert metrics['copydays/mAP_crops_50'] == pytest.approx(100)
    assert 'PCA-whitened' in capsys.readouterr().out

    with pytest.raises(ValueError, match='unknown benchmarks'):
        tool.main([copydays, checkpoint, '--benchmarks', 'oxford'])
    with pytest.raises(FileNotFoundError, match='checkpoint not found'):
        tool.main([copydays, str(root / 'absent.pth')])


def test_cpu_ddp_two_processes(retrieval_data, run_tool):
    """torchrun with 2 CPU ranks: features gathered, one summary printed."""
    root, roots, checkpoint = retrieval_data
    config = str(root / 'ukbench_ddp.py')
    write_config(config, 'vit-base-p16_ukbench.py')
    out = str(root / 'ddp.json')
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = str(sock.getsockname()[1])
    proc = run_tool([
        sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node',
        '2', '--master_port', port, 'tools/retrieval.py', config,
        checkpoint, '--launcher', 'pytorch', '--work-dir',
        str(root / 'work_ddp'), '--out', out, '--cfg-options',
        f'test_dataloader.dataset.data_root={roots["ukbench"]}',
        'test_dataloader.num_workers=0', 'test_dataloader.batch_size=5'
    ])
    with open(out) as f:
        assert json.load(f)['ukbench']['ukbench/N-S'] == pytest.approx(4.0)
    assert proc.stdout.count('Retrieval summary') == 1


def _test_tool(config, checkpoint, data_root, work_dir, run_tool):
    """tools/test.py on a single-benchmark config (the documented key)."""
    return run_tool([
        sys.executable, 'tools/test.py', config, checkpoint, '--work-dir',
        work_dir, '--cfg-options',
        f'test_dataloader.dataset.data_root={data_root}',
        'test_dataloader.num_workers=0'
    ])


def _map_e(log: str) -> float:
    found = re.findall(r'roxford5k/mAP_E: ([0-9.]+)', log)
    assert found, log[-3000:]
    return float(found[-1])


def test_test_tool_accounts_for_encoder_keys(retrieval_data, run_tool):
    """tools/test.py loads the encoder as tools/retrieval.py does.

    The EHM checkpoint and its encoder-only form (what ehm2mmseg writes)
    both give the retrieval tool's mAP; a checkpoint missing a block fails
    naming the keys instead of evaluating a partly random encoder.
    """
    root, roots, checkpoint = retrieval_data
    config = str(root / 'roxford_test.py')
    write_config(config, 'vit-base-p16_roxford5k.py')
    work = str(root / 'work_test_tool')
    log = _test_tool(config, checkpoint, roots['roxford5k'], work, run_tool)
    assert _map_e(log.stdout + log.stderr) == pytest.approx(100)

    state = torch.load(checkpoint, map_location='cpu')['state_dict']
    encoder_only = str(root / 'encoder_only.pth')
    torch.save(
        dict(state_dict={
            k[len('backbone.'):]: v
            for k, v in state.items() if k.startswith('backbone.')
        }), encoder_only)
    log = _test_tool(config, encoder_only, roots['roxford5k'], work,
                     run_tool)
    assert _map_e(log.stdout + log.stderr) == pytest.approx(100)

    partial = str(root / 'partial.pth')
    torch.save(
        dict(state_dict={
            k: v
            for k, v in state.items()
            if not k.startswith('backbone.layers.1.')
        }), partial)
    with pytest.raises(AssertionError) as info:
        _test_tool(config, partial, roots['roxford5k'], work, run_tool)
    assert 'layers.1.' in str(info.value)
    assert 'missing' in str(info.value)


def test_benchmark_key_of_a_single_config_is_refused(retrieval_data):
    """A single-benchmark config copies roxford5k_test_dataloader when it
    is read: overriding that key would change nothing, so it is refused
    with the key that works."""
    root, roots, checkpoint = retrieval_data
    config = str(root / 'roxford_single.py')
    write_config(config, 'vit-base-p16_roxford5k.py')
    tool = _load_tool()
    with pytest.raises(ValueError) as info:
        tool.main([
            config, checkpoint, '--cfg-options',
            f'roxford5k_test_dataloader.dataset.data_root={roots["roxford5k"]}'
        ])
    assert 'use test_dataloader.dataset.data_root instead' in str(info.value)
    # The documented key of a single-benchmark config works.
    results = tool.main([
        config, checkpoint, '--work-dir',
        str(root / 'work_single'), '--cfg-options',
        f'test_dataloader.dataset.data_root={roots["roxford5k"]}',
        'test_dataloader.num_workers=0'
    ])
    assert results['roxford5k']['roxford5k/mAP_E'] == pytest.approx(100)
