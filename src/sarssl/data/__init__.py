"""From preprocessed scenes to training data.

``composite`` makes the 12-channel seasonal composite of an area, ``labels`` reads land
cover and tree cover onto its grid, ``chips`` cuts labelled chips with spatial-band
splits (and draws the label fractions, ``sarssl fractions``), ``store`` owns the chip
store (its files, index, label fractions and normalisation statistics), ``loaders`` is
the one way a model reads it, and ``normalize`` the one input normalisation. Contract:
``results/chips/AREA/``.
"""
