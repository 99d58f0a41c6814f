# Global descriptors of a ViT-B/16 encoder (keys = mmpretrain MAEViT keys).
# pooling: 'cls', 'avg', 'gem' or a '+'-joined concatenation. 'cls+gem' with
# GeM p=4 is the descriptor of DINO's copy-detection protocol.
# scales: e.g. (1.0, 2 ** -0.5, 0.5) for multi-scale descriptors.
model = dict(
    type='RetrievalFeatureExtractor',
    backbone=dict(
        type='VisionTransformer',
        arch='b',
        img_size=224,
        patch_size=16,
        final_norm=True,
        out_type='raw'),
    pooling='cls+gem',
    gem_p=4.0,
    scales=(1.0, ),
    data_preprocessor=dict(
        type='ClsDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        to_rgb=True))
