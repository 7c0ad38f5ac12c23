"""Scene selection: which products of a folder (or a pyroSAR archive) enter an area.

``screening`` finds products, validates them, keeps one per acquisition and holds the
filters (area, dates, orbit, polarisations); ``table`` the CSV rows and writers. Two
backends use both: ``builtin`` scans the manifests, ``archive`` selects through pyroSAR's
scene database; ``cli`` is ``sarssl catalogue``. Contract: ``results/catalogue/AREA.csv``
and ``AREA.rejected.csv``.
"""
