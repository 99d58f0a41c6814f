# Revisited Oxford 5k (revisitop layout): data/roxford5k/{gnd_roxford5k.pkl,
# jpg/*.jpg}. Queries are cropped to their box, then every image is resized
# (aspect kept) so that its longer edge is `roxford5k_long_edge`, as in
# DINO's eval_image_retrieval.py. Images differ in size: batch size 1.
roxford5k_long_edge = 224
roxford5k_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='CropToBBox'),
    dict(
        type='ResizeEdge',
        scale=roxford5k_long_edge,
        edge='long',
        backend='pillow',
        interpolation='bicubic'),
    dict(type='PackRetrievalInputs'),
]
roxford5k_test_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='ROxford5k',
        data_root='data/roxford5k',
        pipeline=roxford5k_pipeline))
# mAP and mP@1/5/10 for the Easy, Medium and Hard setups.
roxford5k_test_evaluator = dict(type='RevisitedMAP', prefix='roxford5k')
