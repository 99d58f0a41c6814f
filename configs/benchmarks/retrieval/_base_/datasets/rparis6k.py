# Revisited Paris 6k (revisitop layout): data/rparis6k/{gnd_rparis6k.pkl,
# jpg/*.jpg}. Queries are cropped to their box, then every image is resized
# (aspect kept) so that its longer edge is `rparis6k_long_edge`, as in
# DINO's eval_image_retrieval.py. Images differ in size: batch size 1.
rparis6k_long_edge = 224
rparis6k_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='CropToBBox'),
    dict(
        type='ResizeEdge',
        scale=rparis6k_long_edge,
        edge='long',
        backend='pillow',
        interpolation='bicubic'),
    dict(type='PackRetrievalInputs'),
]
rparis6k_test_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='RParis6k',
        data_root='data/rparis6k',
        pipeline=rparis6k_pipeline))
# mAP and mP@1/5/10 for the Easy, Medium and Hard setups.
rparis6k_test_evaluator = dict(type='RevisitedMAP', prefix='rparis6k')
