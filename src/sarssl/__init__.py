"""sarssl: from raw Sentinel-1 GRD products to self-supervised-learning results.

The package is laid out by stage, each subpackage with one job and its data contract:

- :mod:`sarssl.vocabulary` the study's names (channels, seasons, tasks, classes), stdlib only
- :mod:`sarssl.sar`        raw GRD product -> calibrated, terrain-corrected scene
- :mod:`sarssl.catalogue`  which products enter an area
- :mod:`sarssl.data`       composites, labels, chips and the chip store
- :mod:`sarssl.selfsup`    MAE / DINO pretraining
- :mod:`sarssl.downstream` task models, fine-tuning, evaluation, tables
- :mod:`sarssl.figures`    every figure, one registry
- :mod:`sarssl.demo`       the simulated demo world
- :mod:`sarssl.acquire`    downloads of real inputs
- shared machinery: :mod:`sarssl.io` (atomic outputs), :mod:`sarssl.rasterio_blocks`,
  :mod:`sarssl.engine` (training loop services), :mod:`sarssl.encoders` (the shared ViT
  encoder: built, exported, loaded), :mod:`sarssl.errors`, :mod:`sarssl.cli`.
"""

from .vocabulary import CHANNELS, SEASONS

__version__ = "0.1.0"
__all__ = ["CHANNELS", "SEASONS", "__version__"]
