"""The study's map and model figures, registered as ``sarssl plot NAME`` subcommands.

One module per figure family; importing this package registers every figure with
:func:`sarssl.figures.registry.register_figure` (``sarssl.figures.registry`` imports it at its end):

- :mod:`.qa` — ``preprocessing-qa`` (raw DN, calibrated and speckle-filtered sigma0)
- :mod:`.composites` — ``composites`` (seasonal false colour) and
  ``backscatter-distributions`` (per-class VV/VH violins per season)
- :mod:`.datastats` — ``data-statistics`` (scenes per season, chips and class shares per split)
- :mod:`.qualitative` — ``qualitative`` (input, truth and predicted land-cover/tree-cover maps)
- :mod:`.attention` — ``attention`` (DINO last-layer CLS attention per head)
- :mod:`.reconstruction` — ``mae-reconstructions`` (MAE input, mask, reconstruction)
- :mod:`.embeddings` — ``embeddings`` (PCA of mean-pooled encoder tokens)

Builders are plain functions of arrays/DataFrames returning a
:class:`matplotlib.figure.Figure`; the registered ``_build*`` adapters only load inputs.
"""

from . import attention, composites, datastats, embeddings, qa, qualitative, reconstruction  # noqa: F401
