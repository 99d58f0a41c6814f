# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""tools/model_converters/ehm2{mmseg,timm,mmpretrain}.py.

The checkpoint here is synthetic (an EHM-layout state dict of a tiny
``MAEViT`` with a decoder and an EMA teacher); the transfer tests in
``tests/test_downstream`` convert a really pretrained one.
"""
import os.path as osp
import runpy
import sys
from collections import OrderedDict

import pytest
import torch
from mmengine.config import Config
from mmpretrain.models import MAEViT

from ehm_mm.downstream import mmpretrain_to_timm
from ehm_mm.utils import stack
from ehm_mm.utils.stack import INSTALL_FULL, StackError

REPO_ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
TOOLS = osp.join(REPO_ROOT, 'tools', 'model_converters')
NUM_LAYERS = 2
NUM_KEYS = 4 + 12 * NUM_LAYERS + 2


def converter(name: str):
    """The ``main`` of a converter script, as the command line runs it."""
    return runpy.run_path(osp.join(TOOLS, f'{name}.py'))['main']


ARCH = dict(
    embed_dims=32, num_layers=NUM_LAYERS, num_heads=2, feedforward_channels=64)


def runner_meta() -> dict:
    """The metadata mmengine's runner saves: iteration and config text."""
    cfg = Config(
        dict(
            model=dict(
                type='EHMMAE',
                backbone=dict(
                    type='EHMMAEViT', arch=ARCH, img_size=32, patch_size=8),
                neck=dict(type='MAEPretrainDecoder', embed_dim=32))))
    return dict(iter=2, cfg=cfg.pretty_text)


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    """An EHM checkpoint: student, decoder, EMA teacher (student + 1)."""
    torch.manual_seed(0)
    vit = MAEViT(arch=ARCH, img_size=32, patch_size=8)
    vit.init_weights()
    encoder = vit.state_dict()
    state_dict = OrderedDict()
    for key, value in encoder.items():
        state_dict[f'backbone.{key}'] = value
        state_dict[f'teacher.module.{key}'] = value + 1
    state_dict['teacher.steps'] = torch.tensor(2)
    state_dict['neck.mask_token'] = torch.zeros(1, 1, 16)
    state_dict['neck.decoder_embed.weight'] = torch.zeros(16, 32)
    path = str(tmp_path_factory.mktemp('ehm') / 'ehm.pth')
    torch.save(dict(meta=runner_meta(), state_dict=state_dict), path)
    return path, encoder


def test_ehm2mmseg_student_and_teacher(checkpoint, tmp_path, capsys):
    src, encoder = checkpoint
    dst = str(tmp_path / 'out' / 'mmseg.pth')
    converter('ehm2mmseg')([src, dst])
    printed = capsys.readouterr().out
    assert printed.splitlines()[0] == (
        f'extracted: kept {NUM_KEYS} encoder keys (ehm checkpoint); '
        f'dropped neck: 2, teacher: {NUM_KEYS + 1}')
    assert (f'consumer check (StrictMAE): loaded {NUM_KEYS - 2} / missing '
            f'{4 * NUM_LAYERS} / unexpected 2 / shape mismatch 0') in printed
    saved = torch.load(dst, map_location='cpu')
    assert list(saved['state_dict']) == list(encoder)
    assert saved['meta']['dropped'] == {'neck': 2, 'teacher': NUM_KEYS + 1}
    assert torch.equal(saved['state_dict']['layers.1.attn.qkv.bias'],
                       encoder['layers.1.attn.qkv.bias'])

    converter('ehm2mmseg')([src, dst, '--source', 'teacher'])
    assert 'dropped backbone: ' in capsys.readouterr().out
    teacher = torch.load(dst, map_location='cpu')['state_dict']
    assert torch.equal(teacher['ln1.weight'], encoder['ln1.weight'] + 1)


def test_ehm2timm_writes_official_mae_layout(checkpoint, tmp_path, capsys):
    src, encoder = checkpoint
    dst = str(tmp_path / 'timm.pth')
    converter('ehm2timm')([src, dst])
    printed = capsys.readouterr().out
    assert (f'consumer check (ViTDetBackbone): loaded {NUM_KEYS - 3} / '
            f'missing {2 * NUM_LAYERS} / unexpected 3') in printed
    model = torch.load(dst, map_location='cpu')['model']
    expected = mmpretrain_to_timm(encoder)
    assert list(model) == list(expected)
    for key, value in expected.items():
        assert torch.equal(model[key], value), key

    # an official-MAE file converts back to the mmseg layout unchanged
    back = str(tmp_path / 'back.pth')
    converter('ehm2mmseg')([dst, back])
    assert 'kept 30 encoder keys (timm checkpoint); dropped nothing' in (
        capsys.readouterr().out)
    state_dict = torch.load(back, map_location='cpu')['state_dict']
    for key, value in encoder.items():
        assert torch.equal(state_dict[key], value), key


def test_ehm2mmpretrain(checkpoint, tmp_path, capsys):
    src, encoder = checkpoint
    dst = str(tmp_path / 'cls.pth')
    converter('ehm2mmpretrain')([src, dst])
    assert (f'consumer check (VisionTransformer): loaded {NUM_KEYS} / '
            'missing 0 / unexpected 0') in capsys.readouterr().out
    state_dict = torch.load(dst, map_location='cpu')['state_dict']
    assert list(state_dict) == [f'backbone.{key}' for key in encoder]


def test_simmim_vit_checkpoint_drops_its_encoder_mask_token(tmp_path, capsys):
    """EHM-SimMIM's ViT (``MaskFeatViT``) keeps ``mask_token`` in the
    encoder: every converter drops it (counted) and the consumers load the
    rest as they load an EHM-MAE encoder."""
    from mmpretrain.models import MaskFeatViT
    torch.manual_seed(0)
    encoder = MaskFeatViT(arch=ARCH, img_size=32, patch_size=8).state_dict()
    assert 'mask_token' in encoder
    state_dict = OrderedDict()
    for key, value in encoder.items():
        state_dict[f'backbone.{key}'] = value
        state_dict[f'teacher.module.{key}'] = value + 1
    state_dict['neck.decoder.0.weight'] = torch.zeros(192, 32, 1, 1)
    src = str(tmp_path / 'ehm_simmim.pth')
    torch.save(dict(meta=runner_meta(), state_dict=state_dict), src)
    dropped = f'dropped mask_token: 1, neck: 1, teacher: {NUM_KEYS + 1}'
    for name, check in (
            ('ehm2mmpretrain', f'consumer check (VisionTransformer): loaded '
             f'{NUM_KEYS} / missing 0 / unexpected 0'),
            ('ehm2timm', f'consumer check (ViTDetBackbone): loaded '
             f'{NUM_KEYS - 3} / missing {2 * NUM_LAYERS} / unexpected 3'),
            ('ehm2mmseg', f'consumer check (StrictMAE): loaded '
             f'{NUM_KEYS - 2} / missing {4 * NUM_LAYERS} / unexpected 2')):
        converter(name)([src, str(tmp_path / f'{name}.pth')])
        printed = capsys.readouterr().out
        assert (f'extracted: kept {NUM_KEYS} encoder keys (ehm '
                f'checkpoint); {dropped}\n') in printed, name
        assert check in printed, name


def test_check_against_a_config(checkpoint, tmp_path):
    """A ViT-B config refuses the tiny encoder; no output is left behind."""
    src, _ = checkpoint
    dst = str(tmp_path / 'seg.pth')
    config = osp.join(REPO_ROOT, 'configs', 'benchmarks', 'mmseg',
                      'ehm-base_upernet_8xb2-amp-160k_ade20k-512x512.py')
    with pytest.raises(ValueError, match='shape mismatch'):
        converter('ehm2mmseg')([src, dst, '--config', config])
    assert not osp.exists(dst)
    with pytest.raises(ValueError, match="needs 'ViTDetBackbone'"):
        converter('ehm2timm')([src, dst, '--config', config])
    assert not osp.exists(dst)


def test_bad_inputs(checkpoint, tmp_path):
    src, _ = checkpoint
    dst = str(tmp_path / 'x.pth')
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        converter('ehm2mmseg')([str(tmp_path / 'missing.pth'), dst])
    with pytest.raises(FileNotFoundError, match='nope.py'):
        converter('ehm2mmseg')([src, dst, '--config', 'nope.py'])
    not_vit = str(tmp_path / 'resnet.pth')
    torch.save({'state_dict': {'conv1.weight': torch.zeros(4, 3, 3, 3)}},
               not_vit)
    with pytest.raises(ValueError, match='Unrecognised checkpoint layout'):
        converter('ehm2timm')([not_vit, dst])
    with pytest.raises(SystemExit):
        converter('ehm2timm')([src, dst, '--source', 'ema'])


def test_command_line(checkpoint, tmp_path, run_tool):
    src, _ = checkpoint
    dst = str(tmp_path / 'cli.pth')
    proc = run_tool(
        [sys.executable,
         osp.join(TOOLS, 'ehm2mmseg.py'), src, dst])
    assert f'saved to {dst}' in proc.stdout
    assert 'loaded 28 / missing 8 / unexpected 2' in proc.stdout


def test_failed_conversion_keeps_an_existing_output(checkpoint, tmp_path):
    """The output is written under a temporary name and renamed only when
    the consumer took it: a failed conversion leaves dst as it was."""
    src, _ = checkpoint
    dst = tmp_path / 'seg.pth'
    dst.write_bytes(b'an earlier, good conversion')
    config = osp.join(REPO_ROOT, 'configs', 'benchmarks', 'mmseg',
                      'ehm-base_upernet_8xb2-amp-160k_ade20k-512x512.py')
    with pytest.raises(ValueError, match='shape mismatch'):
        converter('ehm2mmseg')([src, str(dst), '--config', config])
    assert dst.read_bytes() == b'an earlier, good conversion'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['seg.pth']


def _without_last_block(src: str, path: str, meta: dict) -> str:
    state = torch.load(src, map_location='cpu')['state_dict']
    last = f'layers.{NUM_LAYERS - 1}.'
    kept = {
        k: v
        for k, v in state.items()
        if not k.startswith(('backbone.' + last, 'teacher.module.' + last))
    }
    torch.save(dict(meta=meta, state_dict=kept), path)
    return path


def test_missing_final_blocks_are_refused(checkpoint, tmp_path):
    """A checkpoint that lost its last block is not a shallower encoder.

    Its metadata (the runner's config text) declares 2 blocks; without any
    metadata, the shape must be a named mmpretrain ViT.
    """
    src, _ = checkpoint
    dst = str(tmp_path / 'out.pth')
    with_meta = _without_last_block(src, str(tmp_path / 'cut.pth'),
                                    runner_meta())
    with pytest.raises(ValueError, match='metadata declares'):
        converter('ehm2mmseg')([with_meta, dst])
    no_meta = _without_last_block(src, str(tmp_path / 'cut_bare.pth'), {})
    with pytest.raises(ValueError, match='no named mmpretrain ViT'):
        converter('ehm2timm')([no_meta, dst])
    assert not osp.exists(dst)
    # A gap in the middle is refused by the block count itself.
    state = torch.load(src, map_location='cpu')['state_dict']
    gap = {k: v for k, v in state.items() if '.layers.0.' not in k}
    torch.save(dict(meta=runner_meta(), state_dict=gap),
               tmp_path / 'gap.pth')
    with pytest.raises(ValueError, match=r'not layers.\[0\]'):
        converter('ehm2mmseg')([str(tmp_path / 'gap.pth'), dst])


def test_pretrain_profile_gets_the_install_command(checkpoint, tmp_path,
                                                   monkeypatch):
    """Without mmseg / mmdet (the pretrain profile) the mmseg and timm
    converters name the missing package and the full install at once."""
    installed = stack.module_available
    monkeypatch.setattr(
        stack, 'module_available', lambda name: name.split('.')[0] not in (
            'mmseg', 'mmdet') and installed(name))
    src, _ = checkpoint
    for name, package in (('ehm2mmseg', 'mmsegmentation (module mmseg)'),
                          ('ehm2timm', 'mmdet (module mmdet)')):
        dst = tmp_path / f'{name}.pth'
        with pytest.raises(StackError) as info:
            converter(name)([src, str(dst)])
        assert package in str(info.value)
        assert INSTALL_FULL in str(info.value)
        assert not dst.exists()
    # The mmpretrain converter needs neither.
    converter('ehm2mmpretrain')([src, str(tmp_path / 'mmpretrain.pth')])
    assert (tmp_path / 'mmpretrain.pth').is_file()
