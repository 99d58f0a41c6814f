# k-NN evaluation stage of tiny_study.py: leave-one-out 3-NN accuracy of the
# pretrained student encoder's CLS feature on the fake ImageNet val split
# (tools/test.py CONFIG CHECKPOINT loads the encoder, every key used).
_base_ = 'mmpretrain::_base_/default_runtime.py'

custom_imports = dict(
    imports=['ehm_mm', 'ehm_mm.retrieval'], allow_failed_imports=False)
data_root = '{{$EHM_FAKE_IMAGENET:data/fake_imagenet}}'

model = dict(
    type='RetrievalFeatureExtractor',
    backbone=dict(
        type='VisionTransformer',
        arch=dict(
            embed_dims=48, num_layers=2, num_heads=3,
            feedforward_channels=96),
        img_size=32,
        patch_size=8),
    pooling='cls')
test_dataloader = dict(
    batch_size=8,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='CustomDataset',
        data_root=data_root,
        ann_file='meta/val.txt',
        data_prefix='val',
        pipeline=[dict(type='LoadImageFromFile'),
                  dict(type='ResizeEdge', scale=36, edge='short'),
                  dict(type='CenterCrop', crop_size=32),
                  dict(type='PackInputs')]))
test_evaluator = dict(
    type='KNNAccuracy', k=3, feature_key='retrieval_feature')
test_cfg = dict(type='TestLoop')
default_hooks = dict(logger=dict(interval=1))
