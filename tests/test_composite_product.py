"""Composites say which product their scenes were (issue #16): sigma0 dB scenes (the
study's default) and CEOS-ARD NRB scenes (terrain-flattened gamma0, linear) both
composite, the ``SCENE_PRODUCT`` tag names which, and a mix of the two is refused."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from sarssl.data.composite import composite
from sarssl.errors import InputError
from sarssl.io import write_geotiff
from sarssl.sar.grid import area_grid

GRID = area_grid((12.46, 41.96, 12.47, 41.965), 10.0)
DATES = ("2021-01-10", "2021-04-10", "2021-07-10", "2021-10-10")


def _scene(path, when: str, nrb: bool) -> str:
    lin = np.stack([np.full(GRID.shape, 0.1), np.full(GRID.shape, 0.02)]).astype(np.float32)
    tags = {"ACQUISITION_START": when + "T05:11:22Z", "PRODUCT_ID": path.stem}
    if nrb:
        data = lin
        tags.update(
            PRODUCT_MODE="nrb", CALIBRATION="gamma0", TERRAIN_FLATTENING="true", UNITS="linear"
        )
    else:  # a scene as sarssl preprocess writes by default (sigma0 dB)
        data = 10 * np.log10(lin)
        tags.update(
            PRODUCT_MODE="sigma0", CALIBRATION="sigma0", TERRAIN_FLATTENING="false", UNITS="db"
        )
    write_geotiff(
        path,
        data,
        crs=GRID.crs,
        transform=GRID.transform,
        nodata=float("nan"),
        band_names=["VV", "VH"],
        tags=tags,
    )
    return str(path)


@pytest.mark.parametrize("nrb", [False, True])
def test_composite_records_the_scene_product(tmp_path, nrb):
    scenes = [_scene(tmp_path / f"s{i}.tif", d, nrb) for i, d in enumerate(DATES)]
    out = tmp_path / "comp.tif"
    composite(scenes, 2021, out, tmp_path / "count.tif", progress=False)
    with rasterio.open(out) as ds:
        tag = ds.tags()["SCENE_PRODUCT"]
        vv = ds.read(5)  # vv_winter (sarssl.CHANNELS)
    assert tag == ("nrb: gamma0 terrain-flattened" if nrb else "sigma0: sigma0")
    assert np.allclose(vv, -10.0, atol=1e-4)  # both products read as linear power


def test_composite_refuses_mixed_products(tmp_path):
    scenes = [_scene(tmp_path / f"s{i}.tif", d, nrb=i == 2) for i, d in enumerate(DATES)]
    with pytest.raises(InputError, match="different products.*nrb: gamma0.*s2.tif"):
        composite(scenes, 2021, tmp_path / "comp.tif", tmp_path / "count.tif", progress=False)
    assert not (tmp_path / "comp.tif").exists()
