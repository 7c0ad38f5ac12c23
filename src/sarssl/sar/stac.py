"""STAC metadata of the preprocessed scenes (issue #16, item 3), written with pystac.

- :func:`scene_item`: the STAC Item of one scene, ``OUT.json`` beside ``OUT.tif``, with the
  ``sar``, ``sat``, ``projection``, ``processing`` and ``raster`` extensions; one asset
  per COG (``data``: the backscatter, then the mask and, in NRB mode, every sidecar layer
  ``OUT.<layer>.tif``), hrefs relative to the Item, so the folder can move; the scene's
  provenance tags go in as ``sarssl:*`` properties. Loadable with odc-stac or stackstac.
- :func:`area_collection`: the STAC Collection of an area's folder of Items (extent = the
  union of the Items' bboxes and time spans), ``python -m sarssl.sar.stac FOLDER --id AREA``.
- :func:`validate`: pystac's JSON-schema validation, offline. pystac ships the core STAC
  schemas (Item, Collection, GeoJSON); the schemas of the five extensions the Items declare
  are vendored in ``stac_schemas/<ext>/<version>/schema.json`` (the official files served at
  ``https://stac-extensions.github.io/<ext>/<version>/schema.json``; provenance and licence
  in ``stac_schemas/README.md``). Every declared extension is validated against its
  schema; one without a vendored schema is an error (``strict=False`` records it as
  skipped instead), and no schema is ever fetched (a validation must not hang on, or
  silently depend on, a network call). More schemas can come from a local folder
  (``SARSSL_STAC_SCHEMAS``, laid out as the URI path:
  ``stac-extensions.github.io/eo/v1.1.0/schema.json``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..errors import InputError
from ..io import write_json

log = logging.getLogger(__name__)

# v1.1.0: the newest processing release whose published schema is vendored (stac_schemas/);
# the Item uses only its level, lineage, software and facility fields
PROCESSING_SCHEMA = "https://stac-extensions.github.io/processing/v1.1.0/schema.json"
SCHEMA_CACHE_ENV = "SARSSL_STAC_SCHEMAS"
SCHEMA_DIR = Path(__file__).with_name("stac_schemas")
"""The vendored extension schemas: ``<ext>/<version>/schema.json``."""
EXTENSION_URI = "https://stac-extensions.github.io/{ext}/{version}/schema.json"
S1_CENTER_FREQUENCY_GHZ = 5.405


def item_path(out: str | os.PathLike) -> Path:
    """``OUT.json`` beside ``OUT.tif``."""
    return Path(out).with_suffix(".json")


def _raster_band(dtype: str, unit: str, nodata: float | None, resolution: float) -> Any:
    from pystac.extensions.raster import DataType, RasterBand

    band = RasterBand.create(data_type=DataType(dtype), unit=unit, spatial_resolution=resolution)
    if nodata is not None:
        band.nodata = "nan" if np.isnan(nodata) else nodata
    return band


def scene_item(
    out: str | os.PathLike,
    grid,
    tags: dict[str, str],
    pols: list[str],
    product,
    assets: list[dict[str, Any]],
) -> Any:
    """The pystac Item of the scene written to ``out``.

    ``assets``: one dict per COG (``key``, ``path``, ``title``, ``roles``, ``dtype``,
    ``units`` (one per band), ``nodata``, ``descriptions``), the first the backscatter."""
    import pystac
    from pyproj import Transformer
    from pystac.extensions.projection import ProjectionExtension
    from pystac.extensions.raster import RasterExtension
    from pystac.extensions.sar import (
        FrequencyBand,
        ObservationDirection,
        Polarization,
        SarExtension,
    )
    from pystac.extensions.sat import OrbitState, SatExtension
    from shapely.geometry import box, mapping

    out = Path(out)
    x0, y0, x1, y1 = grid.bounds
    tr = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    xs = np.concatenate([np.linspace(x0, x1, 11), np.full(11, x1), np.linspace(x1, x0, 11)])
    ys = np.concatenate([np.full(11, y0), np.linspace(y0, y1, 11), np.full(11, y1)])
    xs = np.concatenate([xs, np.full(11, x0)])
    ys = np.concatenate([ys, np.linspace(y1, y0, 11)])
    lon, lat = tr.transform(xs, ys)
    bbox = [float(np.min(lon)), float(np.min(lat)), float(np.max(lon)), float(np.max(lat))]
    start = np.datetime64(tags["ACQUISITION_START"].rstrip("Z")).astype("datetime64[us]").item()
    stop = product.stop_time.astype("datetime64[us]").item()
    from datetime import timezone

    start, stop = start.replace(tzinfo=timezone.utc), stop.replace(tzinfo=timezone.utc)
    props: dict[str, Any] = {
        "start_datetime": pystac.utils.datetime_to_str(start),
        "end_datetime": pystac.utils.datetime_to_str(stop),
        "platform": {"S1A": "sentinel-1a", "S1B": "sentinel-1b", "S1C": "sentinel-1c"}.get(
            product.mission, product.mission.lower()
        ),
        "constellation": "sentinel-1",
        "instruments": ["c-sar"],
        "gsd": float(grid.resolution),
    }
    props.update({f"sarssl:{k.lower()}": v for k, v in tags.items()})
    item = pystac.Item(
        id=out.stem,
        geometry=mapping(box(*bbox)),
        bbox=bbox,
        datetime=start,
        properties=props,
    )
    sar = SarExtension.ext(item, add_if_missing=True)
    sar.apply(
        instrument_mode=product.mode,
        frequency_band=FrequencyBand.C,
        polarizations=[Polarization(p) for p in pols],
        product_type=product.product_type,
        center_frequency=S1_CENTER_FREQUENCY_GHZ,
        pixel_spacing_range=float(grid.resolution),
        pixel_spacing_azimuth=float(grid.resolution),
        observation_direction=ObservationDirection.RIGHT,
    )
    sat = SatExtension.ext(item, add_if_missing=True)
    sat.apply(
        orbit_state=OrbitState(product.pass_direction.lower()),
        relative_orbit=int(product.relative_orbit),
        absolute_orbit=int(product.absolute_orbit),
    )
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    epsg = grid.crs.to_epsg() if hasattr(grid.crs, "to_epsg") else None
    proj.apply(
        code=f"EPSG:{epsg}" if epsg else None,
        wkt2=None if epsg else grid.crs.to_wkt(),
        bbox=[float(v) for v in grid.bounds],
        shape=[int(grid.height), int(grid.width)],
        transform=[float(v) for v in list(grid.transform)[:6]],
    )
    item.stac_extensions.append(PROCESSING_SCHEMA)
    item.properties.update(
        {
            "processing:level": "L2",
            "processing:lineage": (
                f"{tags.get('PRODUCT_ID')}: border and thermal noise removal, "
                f"{tags.get('CALIBRATION')} calibration"
                + (", terrain flattening" if tags.get("TERRAIN_FLATTENING") == "true" else "")
                + f", speckle filter {tags.get('SPECKLE_FILTER')}, range-Doppler terrain "
                f"correction on {tags.get('DEM')}, orbit {tags.get('ORBIT_SOURCE')}"
            ),
            "processing:software": {"sarssl": __version__},
            "processing:facility": "sarssl",
        }
    )
    for a in assets:
        asset = pystac.Asset(
            href=f"./{Path(a['path']).name}",
            media_type=pystac.MediaType.COG,
            title=a["title"],
            roles=a["roles"],
            extra_fields={"description": "; ".join(a["descriptions"])},
        )
        item.add_asset(a["key"], asset)
        RasterExtension.ext(asset, add_if_missing=True).apply(
            bands=[
                _raster_band(a["dtype"], unit, a["nodata"], float(grid.resolution))
                for unit in a["units"]
            ]
        )
    item.set_self_href(str(item_path(out).resolve()))
    return item


def write_item(item: Any, path: str | os.PathLike) -> None:
    """Write the Item atomically (hrefs of the assets kept relative)."""
    write_json(path, item.to_dict(include_self_link=False, transform_hrefs=False))


def vendored_schemas(folder: str | os.PathLike = SCHEMA_DIR) -> dict[str, dict]:
    """``{extension URI: schema}`` of the vendored extension schemas (``folder`` laid out as
    ``<ext>/<version>/schema.json``)."""
    out = {}
    for p in sorted(Path(folder).glob("*/*/schema.json")):
        uri = EXTENSION_URI.format(ext=p.parent.parent.name, version=p.parent.name)
        try:
            out[uri] = json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"{p}: not a JSON schema ({exc})") from exc
    return out


class OfflineValidator:
    """pystac's :class:`~pystac.validation.JsonSchemaSTACValidator` that never fetches a
    schema: the core schemas pystac ships, the vendored extension schemas
    (:func:`vendored_schemas`) and those of a local folder (``cache_dir`` or
    :data:`SCHEMA_CACHE_ENV`, laid out as the URI path). An extension (or a ``$ref``) with
    no schema here raises :class:`pystac.errors.STACValidationError` naming it; with
    ``strict=False`` an extension without a schema is recorded in :attr:`skipped` instead."""

    def __new__(cls, cache_dir: str | os.PathLike | None = None, strict: bool = True):
        from pystac.errors import STACValidationError
        from pystac.validation import JsonSchemaSTACValidator

        class _Validator(JsonSchemaSTACValidator):
            def __init__(self) -> None:
                super().__init__()
                self.skipped: list[str] = []
                self.validated: list[str] = []
                self.schema_cache.update(vendored_schemas())
                folder = cache_dir or os.environ.get(SCHEMA_CACHE_ENV)
                if folder:
                    for p in Path(folder).rglob("*.json"):
                        uri = "https://" + p.relative_to(folder).as_posix()
                        self.schema_cache[uri] = json.loads(p.read_text())

            def _get_schema(self, schema_uri: str) -> dict[str, Any]:
                if schema_uri not in self.schema_cache:  # never fetched
                    raise STACValidationError(
                        f"no local JSON schema for {schema_uri} (offline validation: the "
                        f"vendored ones are in {SCHEMA_DIR}; more can go in "
                        f"${SCHEMA_CACHE_ENV})"
                    )
                return self.schema_cache[schema_uri]

            def validate_extension(self, stac_dict, stac_object_type, stac_version, ext, href=None):
                if ext not in self.schema_cache:
                    if strict:
                        raise STACValidationError(
                            f"{stac_object_type} {stac_dict.get('id')!r}: extension {ext} has "
                            f"no vendored schema (offline validation; {SCHEMA_DIR})"
                        )
                    self.skipped.append(ext)
                    return None
                self.validated.append(ext)
                return super().validate_extension(
                    stac_dict, stac_object_type, stac_version, ext, href
                )

        return _Validator()


def validate(
    obj: Any, cache_dir: str | os.PathLike | None = None, strict: bool = True
) -> dict[str, list[str]]:
    """Validate a pystac object offline (:class:`OfflineValidator`) against the core schema
    and the schema of every extension it declares; raises pystac's ``STACValidationError``
    (naming the schema, e.g. ``.../sar/v1.0.0/schema.json``) on an invalid object or, when
    ``strict``, on an extension without a local schema. Returns the schemas validated
    against and the extensions skipped (``strict=False`` only)."""
    import pystac

    v = OfflineValidator(cache_dir, strict=strict)
    validated = pystac.validation.validate(obj, validator=v)
    return {"validated": [s for s in validated if s], "skipped": sorted(set(v.skipped))}


def area_collection(folder: str | os.PathLike, area: str) -> Any:
    """The STAC Collection of the scene Items (``*.json`` beside ``*.tif``) of ``folder``."""
    import pystac

    folder = Path(folder)
    items, paths = [], []
    for p in sorted(folder.glob("*.json")):
        if p.name == "collection.json" or not p.with_suffix(".tif").exists():
            continue
        # read the JSON here, not with pystac's from_file: pystac parses a path as a URL,
        # which a folder name with ';', '#' or '?' (any file name is allowed) would break
        try:
            items.append(pystac.Item.from_dict(json.loads(p.read_text())))
        except (ValueError, KeyError, json.JSONDecodeError) as exc:
            raise InputError(f"{p}: not a STAC Item ({exc})") from exc
        paths.append(p)
    if not items:
        raise InputError(f"{folder}: no scene STAC Item (<scene>.json beside <scene>.tif)")
    bboxes = np.array([it.bbox for it in items])
    bbox = [*bboxes[:, :2].min(axis=0), *bboxes[:, 2:].max(axis=0)]
    times = sorted(pystac.utils.str_to_datetime(it.properties["start_datetime"]) for it in items)
    ends = sorted(pystac.utils.str_to_datetime(it.properties["end_datetime"]) for it in items)
    modes = sorted({it.properties.get("sarssl:product_mode", "sigma0") for it in items})
    coll = pystac.Collection(
        id=area,
        description=f"sarssl preprocessed Sentinel-1 scenes of area {area} ({', '.join(modes)})",
        extent=pystac.Extent(
            pystac.SpatialExtent([[float(v) for v in bbox]]),
            pystac.TemporalExtent([[times[0], ends[-1]]]),
        ),
        license="other",
        summaries=pystac.Summaries(
            {
                "platform": sorted({it.properties["platform"] for it in items}),
                "sar:polarizations": sorted(
                    {p for it in items for p in it.properties["sar:polarizations"]}
                ),
                "sarssl:product_mode": modes,
            }
        ),
    )
    coll.extra_fields["sarssl:item_files"] = [str(p) for p in paths]
    return coll


def write_collection(coll: Any, path: str | os.PathLike) -> None:
    """Write the Collection atomically, one ``item`` link per scene Item, relative to the
    Collection's folder (the Items stay as they are)."""
    path = Path(path)
    d = coll.to_dict(include_self_link=False, transform_hrefs=False)
    files = d.pop("sarssl:item_files", [])
    base = path.resolve().parent
    d["links"] = [ln for ln in d["links"] if ln["rel"] not in ("root", "parent", "item")]
    d["links"] += [
        {
            "rel": "item",
            "href": os.path.relpath(Path(f).resolve(), base),
            "type": "application/geo+json",
        }
        for f in files
    ]
    write_json(path, d)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sarssl.sar.stac", description="STAC Collection of an area's scenes"
    )
    parser.add_argument("folder", help="folder of preprocessed scenes (<scene>.tif + .json)")
    parser.add_argument("--id", required=True, help="collection id (the area)")
    parser.add_argument("--out", default=None, help="output (default FOLDER/collection.json)")
    args = parser.parse_args(argv)
    coll = area_collection(args.folder, args.id)
    report = validate(coll)
    out = args.out or str(Path(args.folder) / "collection.json")
    write_collection(coll, out)
    n = len(coll.extra_fields.get("sarssl:item_files", []))
    log.info("wrote %s (%d items); validation %s", out, n, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
