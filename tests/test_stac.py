"""STAC metadata of preprocessed scenes (issue #16): Items with the sar, sat, projection,
processing and raster extensions, an area Collection linking them, and pystac's schema
validation run offline: core schemas bundled with pystac, the official extension schemas
vendored in sarssl/sar/stac_schemas (every declared extension validated; one without a
schema is an error), nothing ever fetched."""

from __future__ import annotations

import json
import tomllib
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
    # every declared extension is validated against its vendored schema, none skipped
    assert set(d["stac_extensions"]) == set(EXTENSIONS.values())
    assert set(EXTENSIONS.values()) <= set(report["validated"])
    assert report["skipped"] == []
    # a broken Item fails the (offline) core validation
    broken = pystac.Item.from_file(str(tmp_path / "a.json"))
    broken.geometry = {"type": "Polygon", "coordinates": "nowhere"}
    with pytest.raises(pystac.errors.STACValidationError):
        stac.validate(broken)


EXTENSIONS = {
    "sar": "https://stac-extensions.github.io/sar/v1.0.0/schema.json",
    "sat": "https://stac-extensions.github.io/sat/v1.0.0/schema.json",
    "projection": "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "processing": "https://stac-extensions.github.io/processing/v1.1.0/schema.json",
    "raster": "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
}


def _del(key):
    return lambda d: d["properties"].pop(key)


def _set(key, value):
    return lambda d: d["properties"].__setitem__(key, value)


def _band(key, value):
    return lambda d: d["assets"]["backscatter"]["raster:bands"][0].__setitem__(key, value)


# one broken field per extension: each is caught by that extension's schema only
BROKEN = [
    ("sar", "instrument_mode missing", _del("sar:instrument_mode")),
    ("sar", "instrument_mode not a string", _set("sar:instrument_mode", 3)),
    ("sar", "unknown polarisation", _set("sar:polarizations", ["VV", "XX"])),
    ("sar", "undefined sar: field", _set("sar:incidence", 30.0)),
    ("sat", "orbit_state", _set("sat:orbit_state", "sideways")),
    ("sat", "relative_orbit < 1", _set("sat:relative_orbit", 0)),
    ("projection", "shape of 3", _set("proj:shape", [1, 2, 3])),
    ("projection", "code not a string", _set("proj:code", 32633)),
    ("processing", "software not an object", _set("processing:software", "sarssl")),
    ("raster", "data_type", _band("data_type", "float33")),
    ("raster", "nodata string", _band("nodata", "none")),
]


@pytest.mark.parametrize("ext,what,breaks", BROKEN, ids=[f"{e}: {w}" for e, w, _ in BROKEN])
def test_broken_extension_field_fails_naming_the_extension(tmp_path, ext, what, breaks):
    _item(tmp_path, "a", "2021-12-23T05:11:22.000000Z")
    d = json.loads((tmp_path / "a.json").read_text())
    breaks(d)
    with pytest.raises(pystac.errors.STACValidationError) as err:
        stac.validate(pystac.Item.from_dict(d))
    # the message names the extension's schema that the field fails
    assert f"against schema at {EXTENSIONS[ext]}" in str(err.value)


def test_extension_without_a_schema_is_an_error(tmp_path):
    """Strict by default: an extension with no vendored (or cached) schema fails instead of
    being skipped or fetched; ``strict=False`` reports it as skipped; a schema in the cache
    folder (laid out as the URI path) is enforced."""
    item, _ = _item(tmp_path, "a", "2021-12-23T05:11:22.000000Z")
    eo = "https://stac-extensions.github.io/eo/v1.1.0/schema.json"
    item.stac_extensions.append(eo)
    with pytest.raises(pystac.errors.STACValidationError, match="eo/v1.1.0"):
        stac.validate(item)
    assert stac.validate(item, strict=False)["skipped"] == [eo]
    cache = tmp_path / "schemas" / "stac-extensions.github.io" / "eo" / "v1.1.0"
    cache.mkdir(parents=True)
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$id": eo,
        "type": "object",
        "properties": {"properties": {"type": "object", "required": ["eo:cloud_cover"]}},
    }
    (cache / "schema.json").write_text(json.dumps(schema))
    with pytest.raises(pystac.errors.STACValidationError, match="eo/v1.1.0"):
        stac.validate(item, cache_dir=tmp_path / "schemas")
    item.properties["eo:cloud_cover"] = 0.0
    assert eo in stac.validate(item, cache_dir=tmp_path / "schemas")["validated"]


def test_vendored_schemas_match_their_uris_and_ship_with_the_package():
    """Each vendored schema is the one of its URI (the schema's own ``stac_extensions``
    constraint names it) and pyproject's package-data installs the folder."""
    schemas = stac.vendored_schemas()
    assert set(schemas) == set(EXTENSIONS.values())
    for uri, schema in schemas.items():
        assert uri in json.dumps(schema["definitions"]["stac_extensions"]), uri
    root = Path(__file__).resolve().parents[1]
    data = tomllib.loads((root / "pyproject.toml").read_text())
    patterns = data["tool"]["setuptools"]["package-data"]["sarssl"]
    pkg = root / "src" / "sarssl"
    shipped = {p for pat in patterns for p in pkg.glob(pat) if p.is_file()}
    for p in stac.SCHEMA_DIR.rglob("*"):
        if p.is_file():
            assert p in shipped, f"{p.relative_to(pkg)} is not in pyproject package-data"


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


def test_area_collection_of_a_hostile_folder_name(tmp_path):
    """A folder named with ';', quotes, '$(...)' and '&' (file names are hostile input):
    the Items are read as files, not parsed as URLs, and linked relative."""
    folder = tmp_path / "a b 'q' $(touch PWNED); touch PWNED2 & x"
    folder.mkdir()
    _item(folder, "a", "2021-12-23T05:11:22.000000Z")
    out = folder / "stac" / "collection.json"
    assert stac.main([str(folder), "--id", "rome", "--out", str(out)]) == 0
    links = [ln["href"] for ln in json.loads(out.read_text())["links"] if ln["rel"] == "item"]
    assert links == ["../a.json"]
    assert not list(tmp_path.rglob("PWNED*"))
