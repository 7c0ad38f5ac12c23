"""The SAR chain: raw Sentinel-1 GRD product -> calibrated, terrain-corrected scene.

``safe`` reads products (SAFE folder or zip, validated against their manifest),
``geometry`` holds orbits and the range-Doppler model, ``calibration`` the calibration and
thermal/border-noise LUTs, ``speckle`` the filters, ``dem`` heights above the ellipsoid,
``geocoding`` terrain correction (layover/shadow, flattening), ``grid`` the map grid of an
area, ``window`` the one pixel-window type (radar windows, output tiles); ``preprocess`` is
the tiled driver behind ``sarssl preprocess`` and ``snap`` the optional ESA SNAP backend.
Contract: ``results/preprocessed/AREA/PRODUCT.tif`` (+ mask).
"""
