# UKBench: data/ukbench/full/ukbench%05d.jpg, 4 consecutive images per object.
# All images are 640x480, so a long-edge resize gives one size: batches work.
ukbench_long_edge = 224
ukbench_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='ResizeEdge',
        scale=ukbench_long_edge,
        edge='long',
        backend='pillow',
        interpolation='bicubic'),
    dict(type='PackRetrievalInputs'),
]
ukbench_test_dataloader = dict(
    batch_size=32,
    num_workers=4,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='UKBench', data_root='data/ukbench', pipeline=ukbench_pipeline))
# N-S score: group images among the top 4 (max 4).
ukbench_test_evaluator = dict(type='UKBenchScore', prefix='ukbench')
