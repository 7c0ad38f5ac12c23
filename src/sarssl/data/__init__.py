"""From preprocessed scenes to training data.

``composite`` makes the 12-channel seasonal composite of an area, ``labels`` reads land
cover and tree cover onto its grid, ``chips`` cuts labelled chips with spatial-band
splits, and ``store`` owns the chip store (its files, label fractions, normalisation
statistics and the loaders every model reads it with). Contract: ``results/chips/AREA/``.
"""
