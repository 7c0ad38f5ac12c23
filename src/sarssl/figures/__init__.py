"""The study's map and model figures, registered as ``sarssl plot NAME`` subcommands.

One registry and house style (:mod:`.registry`), one module per figure family, each
registering its figures with :func:`.registry.register_figure`; :mod:`.cli` imports them
all and is the ``sarssl plot`` command:

- :mod:`.curves` — ``learning-curves`` and ``label-efficiency`` (results)

- :mod:`.qa` — ``preprocessing-qa`` (raw DN, calibrated and speckle-filtered sigma0)
- :mod:`.composites` — ``composites`` (seasonal false colour) and
  ``backscatter-distributions`` (per-class VV/VH violins per season)
- :mod:`.datastats` — ``data-statistics`` (scenes per season, chips and class shares per split)
- :mod:`.qualitative` — ``qualitative`` (input, truth and predicted land-cover/tree-cover maps)
- :mod:`.attention` — ``attention`` (DINO last-layer CLS attention per head)
- :mod:`.reconstruction` — ``mae-reconstructions`` (MAE input, mask, reconstruction)
- :mod:`.embeddings` — ``embeddings`` (PCA of mean-pooled encoder tokens)
- :mod:`.pretraining` — ``pretraining-curves`` (loss per step, DINO collapse diagnostics)

Builders are plain functions of arrays/DataFrames returning a
:class:`matplotlib.figure.Figure`; the registered ``_build*`` adapters only load inputs.
"""
