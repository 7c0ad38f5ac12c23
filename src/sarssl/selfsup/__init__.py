"""Self-supervised pretraining of the ViT encoder: the methods (MAE, DINO) and the
``sarssl pretrain`` entry point that trains them on chip stores and exports the encoder
(``results/pretrain/METHOD/encoder.safetensors`` + ``encoder.json``, loadable by timm).

- :mod:`~sarssl.selfsup.method`: the :class:`~sarssl.selfsup.method.Method` interface
  (loss of a batch + hooks around the optimiser step), the per-step context
  :class:`~sarssl.selfsup.method.Step` (seeded generators) and the shared
  hyper-parameters (:class:`~sarssl.selfsup.method.BackboneConfig`,
  :class:`~sarssl.selfsup.method.OptimConfig`);
- :mod:`~sarssl.selfsup.mae`, :mod:`~sarssl.selfsup.dino`: one module per method: its
  config dataclass (the one owner of its defaults), its model, its ``Method``;
- :mod:`~sarssl.selfsup.registry`: method name -> class (``--method`` choices);
- :mod:`~sarssl.selfsup.batches`: the input (chip stores' batch path, seeded order);
- :mod:`~sarssl.selfsup.pretrain`: the training loop, checkpoints and the CLI; it knows
  no method.

Adding a method is one new module, one entry in ``registry.METHODS``, and a
``pretrain.NAME`` section in ``workflow/schemas/config.schema.yaml`` whose keys and
defaults are the config's fields (``tests/test_selfsup_defaults.py`` checks it; the
workflow also lists the name in ``sarssl.vocabulary.PRETRAIN_METHODS`` and the schema's
``pretrain.methods`` enum). For example (a denoising objective; the tests train it)::

    from dataclasses import dataclass
    import torch
    from sarssl.selfsup.method import Method, OptimConfig

    @dataclass(frozen=True)
    class DenoiseConfig(OptimConfig):  # every default of the method, once
        lr: float = 1e-3
        betas: tuple[float, float] = (0.9, 0.999)
        noise_std: float = 0.5

    class Denoiser(torch.nn.Module):  # a noisy chip's class token -> its clean channel means
        def __init__(self, encoder):
            super().__init__()
            self.encoder = encoder
            self.head = torch.nn.Linear(encoder.embed_dim, encoder.patch_embed.proj.in_channels)

        def forward(self, noisy, clean):
            means = clean.mean((2, 3))
            return torch.nn.functional.mse_loss(self.head(self.encoder(noisy)), means)

    class DenoiseMethod(Method):
        name, Config = "denoise", DenoiseConfig

        def build(self, backbone):
            return Denoiser(backbone)

        def loss(self, images, step, micro, trainable):
            g = step.rank_generator(micro)  # seeded: resumes and DDP draw alike
            noise = torch.randn(images.shape, generator=g).to(images.device)
            return trainable(images + self.config.noise_std * noise, images)
"""
