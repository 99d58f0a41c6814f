# A tiny cluster study for CPU tests of tools/analysis/masking_study.py
# --launcher torchrun / slurm: the tiny EHM-MAE (32 px, 2 layers) pretrains
# 4 iterations on a fake ImageNet-style folder ($EHM_FAKE_IMAGENET: train/,
# val/ and the annotation files meta/train.txt, meta/val.txt), then each
# run is judged by a k-NN test and a linear probe (study_evaluation).
# The test hook KillAtIterHook (tests/study_test_hooks.py, imported from
# tests/) kills the whole study when $EHM_TEST_KILL_AT_ITER is set.
_base_ = '../ehm_mae_tiny_cpu.py'

custom_imports = dict(
    imports=['ehm_mm', 'study_test_hooks'], allow_failed_imports=False)
data_root = '{{$EHM_FAKE_IMAGENET:data/fake_imagenet}}'

train_dataloader = dict(
    batch_size=8,
    dataset=dict(
        _delete_=True,
        type='CustomDataset',
        data_root=data_root,
        ann_file='meta/train.txt',
        data_prefix='train',
        pipeline=[dict(type='LoadImageFromFile'),
                  dict(type='RandomResizedCrop', scale=32, crop_ratio_range=(0.5, 1.0)),
                  dict(type='RandomFlip', prob=0.5),
                  dict(type='PackInputs')]))
val_dataloader = None
val_cfg = None
val_evaluator = None
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=4)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.5, by_epoch=False, begin=0, end=2),
    dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=2, end=4),
]
default_hooks = dict(checkpoint=dict(interval=2, max_keep_ckpts=2))
custom_hooks = [dict(type='KillAtIterHook')]

study_baseline = 'mae'
study_arms = dict(
    mae=dict(model=dict(masking=dict(d_max=0.0))),  # MAE's random masks
    ehm=dict())
study_contrasts = [dict(name='EHM vs MAE', arms=['ehm'], reference=['mae'])]
study_metrics = [('knn/top1', 'k-NN top-1'), ('linear/top1', 'linear top-1')]
study_evaluation = [
    dict(name='knn', tool='test', checkpoint='argument',
         config='tests/data/configs/cluster_study/knn_tiny.py',
         metric='knn/top1', report_as='knn/top1'),
    dict(name='linear', tool='train',
         checkpoint='model.backbone.init_cfg.checkpoint',
         config='tests/data/configs/cluster_study/linear_tiny.py',
         metric='accuracy/top1', report_as='linear/top1'),
]
