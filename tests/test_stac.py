"""STAC metadata of preprocessed scenes (issue #16): Items with the sar, sat, projection,
processing and raster extensions, an area Collection linking them, and pystac's schema
validation run offline (core schemas bundled with pystac; extension schemas only from a
local cache, never fetched)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pystac
import pytest

from sarssl.sar import stac
from sarssl.sar.grid import area_grid
from sarssl.sar.safe import open_product

SAFE = (
    Path(__file__).resolve().parents[1]
    / ".."
    / "shared"
    / "data"
    / "sentinel1"
    / "S1B_IW_GRDH_1SDV_20211223T051122_20211223T051147_030148_039993_5371.SAFE"
)


def _item(folder: Path, name: str, start: str, bbox=(12.48, 41.98, 12.52, 42.01)):
    product = open_product(SAFE)
    grid = area_grid(bbox, 10.0)
    out = folder / f"{name}.tif"
    out.write_bytes(b"")  # the scene COG the Item describes (its content is not read)
    tags = {
        "PRODUCT_ID": product.id,
        "ACQUISITION_START": start,
        "CALIBRATION": "sigma0",
        "TERRAIN_FLATTENING": "false",
        "SPECKLE_FILTER": "refined_lee 7x7",
        "DEM": "dem.tif",
        "ORBIT_SOURCE": "annotation",
        "UNITS": "db",
        "PRODUCT_MODE": "sigma0",
    }
    assets = [
        dict(
            key="backscatter",
            path=out,
            dtype="float32",
            units=["dB", "dB"],
            nodata=float("nan"),
            descriptions=["VV", "VH"],
            title="sigma0 (dB)",
            roles=["data", "backscatter"],
        ),
        dict(
            key="mask",
            path=folder / f"{name}.mask.tif",
            dtype="uint8",
            units=["bit flags"],
            nodata=None,
            descriptions=["mask"],
            title="mask",
            roles=["metadata", "data-mask"],
        ),
    ]
    item = stac.scene_item(out, grid, tags, ["VV", "VH"], product, assets)
    stac.write_item(item, stac.item_path(out))
    return item, grid


def test_scene_item_content_and_offline_validation(tmp_path):
    item, grid = _item(tmp_path, "a", "2021-12-23T05:11:22.000000Z")
    d = json.loads((tmp_path / "a.json").read_text())
    assert d["type"] == "Feature" and d["id"] == "a"
    assert d["properties"]["sar:instrument_mode"] == "IW"
    assert d["properties"]["sar:frequency_band"] == "C"
    assert d["properties"]["sat:orbit_state"] == "descending"
    assert d["properties"]["proj:shape"] == [grid.height, grid.width]
    assert d["properties"]["proj:transform"][:3] == [10.0, 0.0, grid.transform.c]
    assert d["properties"]["processing:software"]["sarssl"]
    assert d["assets"]["backscatter"]["href"] == "./a.tif"
    assert d["assets"]["backscatter"]["raster:bands"][0] == {
        "data_type": "float32",
        "unit": "dB",
        "spatial_resolution": 10.0,
        "nodata": "nan",
    }
    assert "nodata" not in d["assets"]["mask"]["raster:bands"][0]
    lon0, lat0, lon1, lat1 = d["bbox"]
    assert lon0 < 12.48 + 1e-3 and lat1 > 42.01 - 1e-3 and lon1 > lon0 and lat1 > lat0
    report = stac.validate(pystac.Item.from_file(str(tmp_path / "a.json")))
    assert any(s.endswith("item.json") for s in report["validated"])
    assert any("/sar/" in s for s in report["skipped"])  # no network: not fetched
    # a broken Item fails the (offline) core validation
    broken = pystac.Item.from_file(str(tmp_path / "a.json"))
    broken.geometry = {"type": "Polygon", "coordinates": "nowhere"}
    with pytest.raises(pystac.errors.STACValidationError):
        stac.validate(broken)


def test_cached_extension_schema_is_enforced(tmp_path):
    """An extension schema found in the local cache is validated against (here a cached
    schema for the processing extension that demands another level)."""
    item, _ = _item(tmp_path, "a", "2021-12-23T05:11:22.000000Z")
    cache = tmp_path / "schemas" / "stac-extensions.github.io" / "processing" / "v1.2.0"
    cache.mkdir(parents=True)
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$id": stac.PROCESSING_SCHEMA,
        "type": "object",
        "properties": {
            "properties": {
                "type": "object",
                "required": ["processing:level"],
                "properties": {"processing:level": {"const": "L9"}},
            }
        },
    }
    (cache / "schema.json").write_text(json.dumps(schema))
    with pytest.raises(pystac.errors.STACValidationError, match="processing"):
        stac.validate(item, cache_dir=tmp_path / "schemas")
    schema["properties"]["properties"]["properties"]["processing:level"]["const"] = "L2"
    (cache / "schema.json").write_text(json.dumps(schema))
    report = stac.validate(item, cache_dir=tmp_path / "schemas")
    assert stac.PROCESSING_SCHEMA in report["validated"]


def test_area_collection_links_the_items(tmp_path):
    _item(tmp_path, "a", "2021-12-23T05:11:22.000000Z")
    _item(tmp_path, "b", "2021-06-11T05:11:22.000000Z", bbox=(12.50, 41.99, 12.55, 42.03))
    (tmp_path / "orphan.json").write_text("{}")  # no .tif beside it: not an Item of the area
    out = tmp_path / "stac" / "collection.json"
    assert stac.main([str(tmp_path), "--id", "rome", "--out", str(out)]) == 0
    coll = pystac.Collection.from_file(str(out))
    assert coll.id == "rome"
    items = sorted(coll.get_items(), key=lambda it: it.id)
    assert [it.id for it in items] == ["a", "b"]
    bbox = coll.extent.spatial.bboxes[0]
    assert bbox[0] == pytest.approx(min(it.bbox[0] for it in items))
    assert bbox[3] == pytest.approx(max(it.bbox[3] for it in items))
    t0, t1 = coll.extent.temporal.intervals[0]
    assert t0.isoformat().startswith("2021-06-11") and t1.isoformat().startswith("2021-12-23")
    assert coll.summaries.lists["sarssl:product_mode"] == ["sigma0"]
    links = [ln["href"] for ln in json.loads(out.read_text())["links"] if ln["rel"] == "item"]
    assert sorted(links) == ["../a.json", "../b.json"]
    assert stac.validate(coll)["validated"]
    assert np.isfinite(bbox).all()
