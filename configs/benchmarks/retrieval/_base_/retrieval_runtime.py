# Runtime of the retrieval benchmarks: test loop only, mmpretrain scope.
default_scope = 'mmpretrain'
custom_imports = dict(
    imports=['ehm_mm.retrieval'], allow_failed_imports=False)

test_cfg = dict(type='TestLoop')

default_hooks = dict(
    runtime_info=dict(type='RuntimeInfoHook'),
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=100),
)

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)

log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0, deterministic=False)
