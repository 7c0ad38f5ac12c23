"""sarssl: from raw Sentinel-1 GRD products to self-supervised-learning results."""

__version__ = "0.1.0"

# One documented channel order for every composite, chip store and model (the study's
# loader order): VV-VH (dB difference) winter..fall, VV winter..fall, VH winter..fall.
SEASONS = ("winter", "spring", "summer", "fall")
CHANNELS = tuple(
    f"{band}_{season}" for band in ("vvvh", "vv", "vh") for season in SEASONS
)
