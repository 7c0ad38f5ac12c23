"""The demo world: zipped Sentinel-1 products synthesised from real product metadata
(``templates/``) over a simulated landscape whose truth (land cover, tree cover, DEM,
backscatter per class) is written beside them, so every stage runs offline."""
