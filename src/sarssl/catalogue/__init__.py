"""Scene selection: which products of a folder (or a pyroSAR archive) enter an area.

``builtin`` validates every product, keeps one per acquisition and filters by area,
dates, orbit and polarisations; ``archive`` does the same through pyroSAR's scene
database. Contract: ``results/catalogue/AREA.csv`` and ``AREA.rejected.csv``.
"""
