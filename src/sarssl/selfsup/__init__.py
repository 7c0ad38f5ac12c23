"""Self-supervised pretraining of the ViT encoder: the MAE and DINO methods and the
``sarssl pretrain`` entry point that trains them on chip stores and exports the encoder
(``results/pretrain/METHOD/encoder.safetensors`` + ``encoder.json``, loadable by timm)."""
