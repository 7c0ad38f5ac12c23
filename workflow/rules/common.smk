"""Helpers shared by the rules: config checks, target lists, input functions, CLI args.

Everything the rules need beyond literal paths is computed here from the validated config,
so that the rule files stay declarative (no lambdas in rules) and the same logic is
exercised by every rule that needs it.
"""

import csv as csv_module
import functools
import hashlib
import importlib.util
import json
import os
import re
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.sourcecache import LocalSourceFile

# The checkout of this workflow (the folder holding pyproject.toml), found from where this
# file lies, not from the working directory or the main Snakefile (both differ with
# --directory or when sarssl is used as a Snakemake module). The post-deploy scripts of the
# conda envs install the package from SARSSL_SOURCE (a value set by the user wins: a
# checkout path or a pip requirement); a remote (e.g. GitHub) module has no local checkout.
_rules_dir = workflow.current_basedir
SARSSL_CHECKOUT = (
    Path(_rules_dir.get_path_or_uri(secret_free=True)).parents[1]
    if isinstance(_rules_dir, LocalSourceFile)
    else None
)
if SARSSL_CHECKOUT is not None and (SARSSL_CHECKOUT / "pyproject.toml").is_file():
    os.environ.setdefault("SARSSL_SOURCE", str(SARSSL_CHECKOUT))

# The vocabulary of the study has one owner, sarssl.vocabulary (standard library only):
# found in the environment running Snakemake, else in src/ of this checkout.
if importlib.util.find_spec("sarssl") is None and SARSSL_CHECKOUT is not None:
    sys.path.insert(0, str(SARSSL_CHECKOUT / "src"))
from sarssl.vocabulary import (
    BUILTIN_INITS,
    PRETRAIN_METHODS,
    SeasonError,
    fraction_key,
    init_protocols,
    season_windows,
)

PRETRAINED_INITS = PRETRAIN_METHODS


wildcard_constraints:
    area=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    scene=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    method=r"mae|dino",
    task=r"landcover|treecover",
    init=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    protocol=r"finetune|linear|knn|decoder",
    fraction=r"[0-9.]+",
    seed=r"[0-9]+",


# --------------------------------------------------------------------------------------
# Config checks the JSON schema cannot express (cross-references, files on disk).
# They run at parse time, so a bad config stops the run before any job starts.
# --------------------------------------------------------------------------------------


def q(value):
    """Shell-quote one value (a path, a name, a number) for a rule's shell command.

    Rules quote their own ``{input.x:q}``/``{output.x:q}``/``{params.x:q}``; parameters that
    expand to several arguments are built here with every piece passed through this, so a
    file name or config value can never be read by the shell as code (``$(...)``, ``;``,
    quotes, spaces).
    """
    return shlex.quote(str(value))


def config_error(key, problem):
    """Raise a WorkflowError naming the config key (dotted path) and the problem."""
    raise WorkflowError(f"Invalid configuration: {key}: {problem}")


def check_unique_keys(paths):
    """Refuse a config file in which a mapping repeats a key (YAML keeps the last one).

    Snakemake's loader, like PyYAML, silently keeps the last of two ``rome:`` areas, so a
    copy-pasted area would quietly replace another; this re-reads each config file with a
    loader that raises on the second occurrence, naming the file, the line and the key.
    """
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        pass

    def construct_mapping(loader, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise WorkflowError(
                    f"Invalid configuration: {path}: line {key_node.start_mark.line + 1}: "
                    f"duplicate key {key!r} (first at line {seen[key] + 1}); YAML would "
                    "silently keep only the last one"
                )
            seen[key] = key_node.start_mark.line
        return loader.construct_mapping(node, deep=deep)

    UniqueKeyLoader.add_constructor(
        yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping
    )
    for path in paths:
        path = Path(path)
        if path.suffix.lower() not in (".yaml", ".yml") or not path.is_file():
            continue  # JSON configs: json.load has no duplicate-free mode we need here
        with open(path) as fh:
            yaml.load(fh, Loader=UniqueKeyLoader)


def check_bbox(name, bbox):
    """A bbox is [west, south, east, north] with west < east and south < north."""
    west, south, east, north = bbox
    if not -90 <= south <= 90 or not -90 <= north <= 90:
        config_error(
            f"areas.{name}.bbox",
            f"latitudes must lie in [-90, 90] (south {south}, north {north})",
        )
    if west >= east:
        config_error(
            f"areas.{name}.bbox",
            f"west ({west}) must be less than east ({east}); the order is [west, south, "
            "east, north] (areas crossing the antimeridian are not supported: split them)",
        )
    if south >= north:
        config_error(
            f"areas.{name}.bbox",
            f"south ({south}) must be less than north ({north}); the order is [west, "
            "south, east, north]",
        )


def check_config(cfg):
    """Check cross-key constraints and that every input file named in the config exists.

    * every area named in ``pretrain.areas`` / ``finetune.areas`` is defined in ``areas``;
    * ``chips.size`` is a multiple of ``pretrain.backbone.patch_size`` (a ViT tokenises the
      chip into non-overlapping patches);
    * ``composite.seasons`` windows are valid calendar days;
    * ``source: directory`` areas: the product directory and the DEM, land-cover and
      tree-cover rasters exist (paths relative to the working directory);
    * external encoder inits (``*.safetensors``) exist;
    * every area's bbox is ordered [west, south, east, north] with valid latitudes;
    * an unlabelled area (``labels: false``) is never a fine-tuning area, and no other
      pretraining area comes within one chip of a fine-tuning area (:func:`check_pools`).
    """
    for name, area in cfg["areas"].items():
        check_bbox(name, area["bbox"])
    for section in ("pretrain", "finetune"):
        for i, area in enumerate(cfg[section]["areas"]):
            if area not in cfg["areas"]:
                config_error(
                    f"{section}.areas[{i}]",
                    f"area {area!r} is not defined under 'areas' "
                    f"(defined: {', '.join(sorted(cfg['areas']))})",
                )
    size = cfg["chips"]["size"]
    patch = cfg["pretrain"]["backbone"]["patch_size"]
    if size % patch:
        config_error(
            "chips.size",
            f"{size} px is not a multiple of pretrain.backbone.patch_size ({patch} px)",
        )
    acquisition_window(2021, cfg["composite"]["seasons"])  # raises on 02-30, 04-31, ...
    for name, area in cfg["areas"].items():
        if area["source"] != "directory":
            continue
        keys = ("products", "dem") + (
            ("landcover", "treecover") if has_labels(name, cfg) else ()
        )
        for key in keys:
            path = Path(area[key])
            if not path.exists():
                config_error(
                    f"areas.{name}.{key}",
                    f"{path} does not exist (relative paths are relative to the "
                    f"working directory {os.getcwd()})",
                )
        if not Path(area["products"]).is_dir():
            config_error(
                f"areas.{name}.products", f"{area['products']} is not a directory"
            )
    for i, init in enumerate(cfg["finetune"]["inits"]):
        if init not in BUILTIN_INITS and not Path(init).is_file():
            config_error(f"finetune.inits[{i}]", f"encoder file {init} does not exist")
    orbit_dir = cfg["preprocess"].get("orbit_dir")
    if orbit_dir and not Path(orbit_dir).is_dir():
        config_error(
            "preprocess.orbit_dir",
            f"{orbit_dir} is not a directory (relative paths are relative to the "
            f"working directory {os.getcwd()})",
        )
    check_pools(cfg)


def check_pools(cfg):
    """Keep the pretraining pool away from what is tested.

    An unlabelled area has no labels to fine-tune or test on, so naming it in
    ``finetune.areas`` is an error. A pretraining area that is not itself a fine-tuning
    area must lie at least one chip (``chips.size`` x ``preprocess.resolution``) from every
    fine-tuning area's bbox, so that no pretraining window touches (or borders) a test band
    of a fine-tuning area; the distance is measured on the ground (WGS84 ellipsoid) between
    the bboxes.
    """
    for i, area in enumerate(cfg["finetune"]["areas"]):
        if area in cfg["areas"] and not has_labels(area, cfg):
            config_error(
                f"finetune.areas[{i}]",
                f"area {area!r} has labels: false (an unlabelled pretraining area): it "
                "cannot be fine-tuned or tested on",
            )
    chip_m = float(cfg["chips"]["size"]) * float(cfg["preprocess"]["resolution"])
    for p in cfg["pretrain"]["areas"]:
        if p in cfg["finetune"]["areas"] or p not in cfg["areas"]:
            continue
        for f in cfg["finetune"]["areas"]:
            if f not in cfg["areas"]:
                continue
            gap = bbox_gap_m(cfg["areas"][p]["bbox"], cfg["areas"][f]["bbox"])
            if gap < chip_m:
                config_error(
                    f"areas.{p}.bbox",
                    f"pretraining area {p!r} lies {gap:.0f} m from fine-tuning area {f!r} "
                    f"(less than one chip, {chip_m:.0f} m): its windows could touch "
                    f"{f}'s test bands; move it away or pretrain on {f} itself",
                )


def bbox_gap_m(a, b):
    """Ground distance (m, WGS84) between two lon/lat bboxes, 0 when they intersect: the
    east-west gap measured along the parallel of the highest latitude of either box (where
    degrees of longitude are shortest) combined with the north-south gap along a meridian,
    so never more than the true distance."""
    from pyproj import Geod

    geod = Geod(ellps="WGS84")
    dlon = max(b[0] - a[2], a[0] - b[2], 0.0)
    south, north = max(a[1], b[1]), min(
        a[3], b[3]
    )  # separating latitudes when south > north
    lat_hi = max(abs(v) for v in (a[1], a[3], b[1], b[3]))
    gx = geod.inv(0.0, lat_hi, dlon, lat_hi)[2] if dlon > 0 else 0.0
    gy = geod.inv(0.0, north, 0.0, south)[2] if south > north else 0.0
    return float((gx * gx + gy * gy) ** 0.5)


# --------------------------------------------------------------------------------------
# Seasons and dates (the windows are sarssl.vocabulary's, the one owner)
# --------------------------------------------------------------------------------------


def acquisition_window(year, seasons):
    """First and last day (inclusive) of the union of the season windows."""
    try:
        dates = season_windows(year, seasons)
    except SeasonError as exc:
        config_error("composite.seasons", str(exc))
    return (
        min(first for first, _ in dates.values()),
        max(last for _, last in dates.values()),
    )


# --------------------------------------------------------------------------------------
# Areas, seeds, labels
# --------------------------------------------------------------------------------------


def area_cfg(wildcards):
    """The config block of the wildcard's area (a clear error for an unknown area)."""
    try:
        return config["areas"][wildcards.area]
    except KeyError:
        raise WorkflowError(f"area {wildcards.area!r} is not defined under 'areas'")


def area_seed(area):
    """Per-area seed: the global seed plus a stable offset from the area's position.

    Areas are numbered in the order of the config file, so two areas never share a seed
    and re-running with the same config reproduces every draw.
    """
    return config["seed"] + 1000 * list(config["areas"]).index(area)


def bbox_arg(wildcards):
    """``W,S,E,N`` of the area for ``--bbox`` / ``--aoi``; pass it as ``--aoi=...``, since
    argparse reads a value starting with a minus (a west longitude) as an option."""
    return q(",".join(repr(float(v)) for v in area_cfg(wildcards)["bbox"]))


def crs_arg(wildcards):
    """``--crs`` value: ``auto`` or ``EPSG:NNNN``."""
    crs = area_cfg(wildcards).get("crs", "auto")
    return q(f"EPSG:{crs}" if isinstance(crs, int) else crs)


def simulated_areas():
    return [a for a, c in config["areas"].items() if c["source"] == "simulate"]


def has_labels(area, cfg=None):
    """Whether an area has land-cover/tree-cover labels (``labels: false``: an unlabelled
    area, used only for pretraining)."""
    return bool((cfg or config)["areas"][area].get("labels", True))


def area_pattern(labelled):
    """Regex of the simulated areas with (or without) labels, for the wildcard constraints
    that route them to ``simulate`` or ``simulate_unlabelled`` (never matches when none).
    """
    names = [re.escape(a) for a in simulated_areas() if has_labels(a) == labelled]
    return "|".join(names) if names else "(?!)"


def simulate_per_season(wildcards):
    """Acquisitions per season of a simulated area: its own ``per_season`` or the default."""
    return area_cfg(wildcards).get("per_season", config["simulate"]["per_season"])


def chips_label_inputs(wildcards):
    """Label rasters of ``chips`` (none for an unlabelled area)."""
    if not has_labels(wildcards.area):
        return {}
    return {
        "landcover": landcover_input(wildcards),
        "treecover": treecover_input(wildcards),
    }


def chips_label_args(wildcards, input):
    """``--landcover L --treecover T`` of ``sarssl chips``, or ``--no-labels``."""
    if not has_labels(wildcards.area):
        return "--no-labels"
    return f"--landcover {q(input.landcover)} --treecover {q(input.treecover)}"


def simulate_template(wildcards):
    return area_cfg(wildcards)["template"]


def truth_dir(wildcards, output):
    """The truth directory of ``simulate``/``simulate_unlabelled`` (its DEM's folder)."""
    return os.path.dirname(output.dem)


def simulate_dem_arg(wildcards):
    """``--dem PATH`` when a simulated area names a real DEM, else nothing."""
    dem = area_cfg(wildcards).get("dem")
    return f"--dem {q(dem)}" if dem else ""


def simulate_dem_input(wildcards):
    dem = area_cfg(wildcards).get("dem")
    return [dem] if dem else []


DOWNLOAD_FILES = {
    "dem": "dem.tif",
    "landcover": "worldcover.tif",
    "treecover": "treecover.tif",
}
"""What workflow/rules/acquire.smk writes per ``source: download`` area, under
``resources/download/{area}/``."""


def _area_file(wildcards, key, truth_name):
    cfg = area_cfg(wildcards)
    if cfg["source"] == "simulate":
        return f"resources/truth/{wildcards.area}/{truth_name}"
    if cfg["source"] == "download":
        return f"resources/download/{wildcards.area}/{DOWNLOAD_FILES[key]}"
    return cfg[key]


def products_input(wildcards):
    """The products of an area: the simulated directory, the config's ``products``, or
    (``source: download``) every product zip the area's search found."""
    cfg = area_cfg(wildcards)
    if cfg["source"] == "simulate":
        return f"resources/products/{wildcards.area}"
    if cfg["source"] == "download":
        return downloaded_products(wildcards)
    return cfg["products"]


def dem_input(wildcards):
    return _area_file(wildcards, "dem", "dem.tif")


def landcover_input(wildcards):
    return _area_file(wildcards, "landcover", "landcover.tif")


def treecover_input(wildcards):
    return _area_file(wildcards, "treecover", "treecover.tif")


# --------------------------------------------------------------------------------------
# `source: download` areas (workflow/rules/acquire.smk)
# --------------------------------------------------------------------------------------


def download_areas():
    return [a for a, c in config["areas"].items() if c["source"] == "download"]


def download_area_pattern():
    """Regex of the ``source: download`` areas (never matches when there are none)."""
    names = [re.escape(a) for a in download_areas()]
    return "|".join(names) if names else "(?!)"


def acquire_cfg():
    """The ``acquire:`` section with every default filled in (also for configs, like
    config/test.yaml, that replace the workflow config and leave it out)."""
    acq = dict(
        provider="asf",
        orbit_provider="step",
        max_products=None,
        worldcover_year=2021,
        dem_margin=0.01,
        retries=5,
    )
    acq.update(config.get("acquire") or {})
    acq["urls"] = dict(acq.get("urls") or {})
    return acq


def acquire_url_args(*pairs):
    """``--option URL`` for each (option, ``acquire.urls`` key) whose URL is set."""
    urls = acquire_cfg()["urls"]
    return " ".join(f"{opt} {q(urls[key])}" for opt, key in pairs if urls.get(key))


def acquire_common_args():
    """Options every ``sarssl acquire`` job of the workflow gets."""
    return f"--retries {q(acquire_cfg()['retries'])} --no-progress"


def search_args(wildcards):
    """Options of ``sarssl acquire sentinel1 --dry-run``: the catalogue's filters over the
    season windows of ``year`` (the same question ``sarssl catalogue`` asks afterwards).
    """
    first, last = acquisition_window(config["year"], config["composite"]["seasons"])
    cat = config["catalogue"]
    acq = acquire_cfg()
    args = [
        f"--aoi={bbox_arg(wildcards)}",
        f"--start {first.isoformat()}",
        f"--end {last.isoformat()}",
        f"--polarisations {q(','.join(cat['polarisations']))}",
        f"--orbit-direction {q(cat['orbit_direction'])}",
        f"--provider {q(acq['provider'])}",
    ]
    if cat["relative_orbits"]:
        orbits = ",".join(str(o) for o in cat["relative_orbits"])
        args.append(f"--relative-orbits {q(orbits)}")
    limit = area_cfg(wildcards).get("max_products", acq["max_products"])
    if limit:
        args.append(f"--max-products {q(limit)}")
    args.append(
        acquire_url_args(
            ("--search-url", "asf_search"),
            ("--login-url", "earthdata_login"),
            ("--catalogue-url", "cdse_catalogue"),
            ("--download-url", "cdse_download"),
            ("--token-url", "cdse_token"),
        )
    )
    return " ".join(a for a in args + [acquire_common_args()] if a)


def product_download_args():
    """Options of ``sarssl acquire product`` (login and token endpoints)."""
    urls = acquire_url_args(
        ("--login-url", "earthdata_login"),
        ("--download-url", "cdse_download"),
        ("--token-url", "cdse_token"),
    )
    return f"{urls} {acquire_common_args()}".strip()


def search_result(area):
    """The products (dicts) of an area's search result; re-evaluated after the
    ``acquire_search`` checkpoint has run (``checkpoints...get`` raises until then)."""
    path = checkpoints.acquire_search.get(area=area).output.search
    try:
        with open(path) as fh:
            return json.load(fh)["products"]
    except (OSError, ValueError, KeyError) as exc:
        raise WorkflowError(
            f"{path}: unreadable search result ({exc}); delete it to search again"
        )


def downloaded_products(wildcards):
    """Every product zip of a ``source: download`` area (after its search)."""
    products = search_result(wildcards.area)
    if not products:
        raise WorkflowError(
            f"resources/download/{wildcards.area}/search.json: the search found no "
            f"Sentinel-1 IW GRDH product over the bbox in the season windows of "
            f"{config['year']} with the catalogue filters"
        )
    return [
        f"resources/download/{wildcards.area}/products/{p['id']}.zip" for p in products
    ]


def area_orbit_dir(area):
    """The orbit folder preprocessing searches for an area: the one the ``acquire_orbits``
    job fills for a ``source: download`` area, else ``preprocess.orbit_dir`` (or None).
    """
    if config["areas"][area]["source"] == "download":
        return f"resources/download/{area}/orbits"
    return config["preprocess"].get("orbit_dir")


def acquired_orbits(wildcards):
    """The orbit list of a ``source: download`` area ([] otherwise): an input of
    preprocessing, so that scenes wait for their orbit files."""
    if area_cfg(wildcards)["source"] == "download":
        return f"resources/download/{wildcards.area}/orbits.tsv"
    return []


def orbit_args(wildcards):
    """Options of ``sarssl acquire orbits``."""
    acq = acquire_cfg()
    args = f"--provider {q(acq['orbit_provider'])} "
    args += acquire_url_args(
        ("--base-url", "orbits"),
        ("--login-url", "earthdata_login"),
        ("--catalogue-url", "cdse_catalogue"),
        ("--download-url", "cdse_download"),
        ("--token-url", "cdse_token"),
    )
    return f"{args} {acquire_common_args()}"


def dem_download_args(wildcards):
    """Options of ``sarssl acquire dem`` (GLO-30 tiles kept in resources/download/tiles/)."""
    args = (
        f"--aoi={bbox_arg(wildcards)} --margin {q(acquire_cfg()['dem_margin'])}"
        " --tile-dir resources/download/tiles/dem "
    )
    return args + f"{acquire_url_args(('--base-url', 'dem'))} {acquire_common_args()}"


def worldcover_download_args(wildcards):
    """Options of ``sarssl acquire worldcover``."""
    args = (
        f"--aoi={bbox_arg(wildcards)} --year {q(acquire_cfg()['worldcover_year'])}"
        " --tile-dir resources/download/tiles/worldcover "
    )
    return (
        args
        + f"{acquire_url_args(('--base-url', 'worldcover'))} {acquire_common_args()}"
    )


def treecover_download_args(wildcards):
    """Options of ``sarssl acquire modis`` (MOD44B of the composite year)."""
    args = (
        f"--aoi={bbox_arg(wildcards)} --year {q(config['year'])}"
        " --tile-dir resources/download/tiles/modis "
    )
    args += acquire_url_args(
        ("--url-template", "modis_template"),
        ("--base-url", "modis"),
        ("--login-url", "earthdata_login"),
    )
    return f"{args} {acquire_common_args()}"


# --------------------------------------------------------------------------------------
# Catalogue (checkpoint) -> scenes
# --------------------------------------------------------------------------------------


def catalogue_args(wildcards):
    """Filters of ``sarssl catalogue`` from ``catalogue:`` and the season windows."""
    first, last = acquisition_window(config["year"], config["composite"]["seasons"])
    cat = config["catalogue"]
    args = [
        f"--aoi={bbox_arg(wildcards)}",
        f"--start {first.isoformat()}",
        f"--end {last.isoformat()}",
        f"--polarisations {q(','.join(cat['polarisations']))}",
    ]
    if cat["orbit_direction"] != "any":
        args.append(f"--orbit-direction {q(cat['orbit_direction'])}")
    if cat["relative_orbits"]:
        orbits = ",".join(str(o) for o in cat["relative_orbits"])
        args.append(f"--relative-orbits {q(orbits)}")
    if cat["backend"] != "builtin":
        db = cat["db"].replace("{area}", wildcards.area)
        args.append(f"--backend {q(cat['backend'])} --db {q(db)}")
    return " ".join(args)


def catalogue_scenes(area):
    """Product id -> product path of the scenes kept by the area's catalogue.

    Asks the checkpoint for its CSV, so every rule calling this is re-evaluated after the
    catalogue of the area has been written (``checkpoints...get`` raises until then); the
    CSV itself is parsed once per version (see :func:`read_catalogue`).
    """
    csv = checkpoints.catalogue.get(area=area).output.csv
    stat = os.stat(csv)
    return read_catalogue(csv, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=None)
def read_catalogue(csv, mtime_ns, size):
    """Parse a catalogue CSV into ``{product id: product path}``, cached per file version.

    The DAG calls :func:`catalogue_scenes` once per preprocessing job (5,000 on a
    continental run), so parsing every time dominated the dry-run (benchmarks/dag.py);
    the modification time and size in the cache key make a rewritten CSV re-read. The
    standard ``csv`` module is used (no pandas start-up cost per file); the result must
    not be mutated by callers.
    """
    with open(csv, newline="") as fh:
        reader = csv_module.DictReader(fh)
        columns = reader.fieldnames or []
        id_col = _catalogue_column(columns, ("id", "product_id"), csv)
        path_col = _catalogue_column(columns, ("path", "product_path"), csv)
        return {row[id_col]: row[path_col] for row in reader}


def _catalogue_column(columns, names, csv):
    for name in names:
        if name in columns:
            return name
    raise WorkflowError(
        f"{csv}: catalogue has none of the columns {', '.join(names)} "
        f"(columns: {', '.join(columns)})"
    )


def preprocess_product(wildcards):
    """Input function of ``preprocess``: the product file of one scene."""
    scenes = catalogue_scenes(wildcards.area)
    try:
        return scenes[wildcards.scene]
    except KeyError:
        raise WorkflowError(
            f"scene {wildcards.scene!r} is not in results/catalogue/{wildcards.area}.csv"
        )


def composite_scenes(wildcards):
    """Input function of ``composite``: every preprocessed scene of the area."""
    scenes = sorted(catalogue_scenes(wildcards.area))
    if not scenes:
        raise WorkflowError(
            f"results/catalogue/{wildcards.area}.csv keeps no product: no scene "
            f"matches the area, the year {config['year']} and the catalogue filters"
        )
    return expand(
        "results/preprocessed/{area}/{scene}.tif", area=wildcards.area, scene=scenes
    )


def preprocess_orbit(wildcards):
    """Input function of ``preprocess``: what the scene's orbit correction waits for.

    A ``source: download`` area: the orbit list of ``acquire_orbits`` (issue #17,
    workflow/rules/acquire.smk; :func:`acquired_orbits`), whose folder
    (:func:`area_orbit_dir`) then holds the POEORB (else RESORB) file of every scene;
    otherwise ``preprocess.orbit_dir`` when set (a folder the user filled, checked to exist
    at start-up), else [] (the annotation's orbit). ``sarssl preprocess --orbit-dir``
    (:func:`preprocess_args`) searches that folder recursively and picks, per scene, the
    POEORB over the RESORB file whose validity covers the acquisition."""
    acquired = acquired_orbits(wildcards)
    if acquired:
        return acquired
    return config["preprocess"].get("orbit_dir") or []


def preprocess_args(wildcards):
    """Options of ``sarssl preprocess`` from ``preprocess:``."""
    pre = config["preprocess"]
    args = [
        f"--product {q(pre.get('product', 'sigma0'))}",
        f"--aoi={bbox_arg(wildcards)}",
        f"--crs {crs_arg(wildcards)}",
        f"--resolution {q(pre['resolution'])}",
        f"--calibration {q(pre['calibration'])}",
        f"--speckle-filter {q(pre['speckle_filter'])}",
        f"--speckle-window {q(pre['speckle_window'])}",
        f"--units {q(pre['units'])}",
        f"--backend {q(pre['backend'])}",
        f"--max-dem-void {q(pre['max_dem_void'])}",
        f"--max-gcp-residual-px {q(pre['max_gcp_residual_px'])}",
    ]
    orbit_dir = area_orbit_dir(wildcards.area)
    if orbit_dir:
        args.append(f"--orbit-dir {q(orbit_dir)}")
    if not pre["verify_checksums"]:
        args.append("--no-verify-checksums")
    if pre["terrain_flattening"]:
        args.append("--terrain-flattening")
    return " ".join(args)


def seasons_json():
    """``--seasons`` of ``sarssl composite``: the season windows as shell-quoted JSON."""
    return q(json.dumps(config["composite"]["seasons"]))


# --------------------------------------------------------------------------------------
# Chips, statistics, training
# --------------------------------------------------------------------------------------

CHIP_FILES = ("index.parquet", "x.npy", "landcover.npy", "treecover.npy")


def chips_args():
    """Options of ``sarssl chips`` (no label fractions: see :func:`fractions_arg`)."""
    ch = config["chips"]
    return " ".join(
        [
            f"--size {q(ch['size'])}",
            f"--overlap {q(ch['overlap'])}",
            f"--max-nodata {q(ch['max_nodata'])}",
            f"--split-angle {q(ch['split_angle'])}",
            f"--split-band-width {q(ch['split_band_width'])}",
            f"--split-pattern {q(','.join(ch['split_pattern']))}",
            f"--min-label-coverage {q(ch['min_label_coverage'])}",
            f"--dtype {q(ch['dtype'])}",
        ]
    )


def fractions_arg():
    """``--fractions`` of ``sarssl fractions``: the configured ones plus 1.0."""
    fractions = sorted({float(f) for f in config["finetune"]["fractions"]} | {1.0})
    return ",".join(fraction_key(f) for f in fractions)


def fraction_seeds_arg():
    """``--seeds`` of ``sarssl fractions``: every fine-tuning seed draws its own subsets."""
    return ",".join(str(int(s)) for s in config["finetune"]["seeds"])


def chips_dir(wildcards):
    """The chip store directory of the wildcard's area."""
    return f"results/chips/{wildcards.area}"


def chips_seed(wildcards):
    return area_seed(wildcards.area)


def store_files(areas):
    """The chip-store files of ``areas`` (what a consumer of the stores depends on)."""
    return expand("results/chips/{area}/{file}", area=areas, file=CHIP_FILES)


def pretrain_stores(wildcards):
    return store_files(config["pretrain"]["areas"])


def chips_dirs_args(areas, option="--chips-dir"):
    return " ".join(f"{option} {q(f'results/chips/{a}')}" for a in areas)


def stats_args():
    """``--chips-dir D --chips-dir ...`` of ``sarssl stats`` (the option repeats)."""
    return chips_dirs_args(config["pretrain"]["areas"])


def pretrain_chips_args():
    """``--chips-dir DIR...`` of ``sarssl pretrain`` (one option, several directories)."""
    return "--chips-dir " + " ".join(
        q(f"results/chips/{a}") for a in config["pretrain"]["areas"]
    )


def out_dir(wildcards, output):
    """The directory of a rule's first output (for ``--out-dir`` options)."""
    return os.path.dirname(output[0])


def backbone():
    """ViT backbone settings shared by pretraining and fine-tuning (with the chip size)."""
    return dict(config["pretrain"]["backbone"], img_size=config["chips"]["size"])


def pretraining_runs_arg():
    """``METHOD=DIR ...`` of the pretraining-curves figure (every configured method)."""
    return " ".join(
        q(f"{m}=results/pretrain/{m}") for m in config["pretrain"]["methods"]
    )


def knn_probe_area():
    """The labelled area of the pretraining figure's k-NN probe over pretraining steps: the
    first fine-tuning area that is also pretrained on (in-region), else the first one.
    """
    ft, pre = config["finetune"]["areas"], config["pretrain"]["areas"]
    return next((a for a in ft if a in pre), ft[0])


def knn_probe_inputs():
    """Chip store (+ stats) of the k-NN probe, when snapshots are taken."""
    if not int(config["pretrain"]["snapshot_every"]):
        return []
    store = expand(f"results/chips/{knn_probe_area()}/{{file}}", file=CHIP_FILES)
    return store + ["results/chips/stats.json"]


def knn_probe_args():
    """``--knn-chips-dir DIR --stats FILE`` of the pretraining figure (or nothing)."""
    if not int(config["pretrain"]["snapshot_every"]):
        return ""
    return (
        f"--knn-chips-dir {q(f'results/chips/{knn_probe_area()}')}"
        " --stats results/chips/stats.json"
    )


def pretrain_hparams(wildcards):
    """``--hparams`` of ``sarssl pretrain``: backbone + the method's section, as JSON."""
    hp = backbone()
    hp.update(config["pretrain"][wildcards.method])
    return q(json.dumps(hp, sort_keys=True))


def resume_dir(wildcards, output):
    """Where pretraining keeps its resume checkpoint: a folder beside the declared outputs
    that Snakemake neither declares nor deletes, so a rerun after a kill or preemption
    continues from the last checkpoint (sarssl removes it once the run has finished)."""
    return os.path.join(os.path.dirname(output.encoder), "resume")


def pretrain_launcher(wildcards, resources):
    """``sarssl``, or ``torchrun ... sarssl`` when the job was given several GPUs.

    With ``gpu: N`` (N > 1) in the profile's ``set-resources: pretrain:``, one job starts N
    processes on its node (``torchrun --standalone``, one per GPU: sarssl.engine picks
    ``LOCAL_RANK``'s GPU and initialises the NCCL process group), i.e. distributed data
    parallel inside one allocation; ``batch_size`` is the global batch (each process reads
    its share), so the run makes the updates of one process and needs no lr change.
    """
    gpus = int(getattr(resources, "gpu", 0) or 0)
    if gpus > 1:
        return f"torchrun --standalone --nproc_per_node {gpus} --no-python sarssl"
    return "sarssl"


def finetune_hparams():
    """``--hparams`` of ``sarssl finetune``: optimiser settings + backbone, as JSON."""
    ft = config["finetune"]
    hp = backbone()
    for key in (
        "epochs",
        "batch_size",
        "lr",
        "weight_decay",
        "layer_decay",
        "patience",
        "warmup_epochs",
        "steps_per_epoch",
        "augment",
        "encoder_lr_scale",
        "lr_grid",
        "lr_search",
        "probe_epochs",
        "probe_lr_grid",
        "knn_k",
        "knn_bank",
        "loader",
        "in_memory_max_mb",
    ):
        hp[key] = ft[key]
    return q(json.dumps(hp, sort_keys=True))


def finetune_run_files(name):
    """Output ``name`` of every fraction x seed run of one finetune job (its wildcards
    task, init, protocol and area stay wildcards)."""
    ft = config["finetune"]
    return expand(
        "results/finetune/{{task}}/{{init}}/{{protocol}}/{{area}}/f{fraction}_s{seed}/"
        + name,
        fraction=[fraction_key(f) for f in ft["fractions"]],
        seed=ft["seeds"],
    )


def finetune_fractions_arg():
    """``--fraction`` of ``sarssl finetune``: every fraction of the design."""
    return ",".join(fraction_key(f) for f in config["finetune"]["fractions"])


INIT_LABEL_MAX = 96
"""Longest init wildcard: it is one folder name of every fine-tuning output (255 bytes at
most on common file systems, and a results tree should stay readable)."""


def init_label(init):
    """Wildcard value of an init: its name, or a path flattened to ``file-...``.

    A flattened path longer than :data:`INIT_LABEL_MAX` keeps its last characters (the file
    name end) and gets 8 hex digits of the path's SHA-1, so two long paths never share a
    label and a deep absolute path still makes a valid folder name.
    """
    if init in BUILTIN_INITS:
        return init
    stem = re.sub(r"[^A-Za-z0-9]+", "-", str(Path(init).with_suffix(""))).strip("-")
    label = f"file-{stem}"
    if len(label) > INIT_LABEL_MAX:
        digest = hashlib.sha1(str(init).encode()).hexdigest()[:8]
        tail = stem[-(INIT_LABEL_MAX - len("file--") - len(digest)) :].strip("-")
        label = f"file-{digest}-{tail}"
    return label


def init_path(label):
    """Inverse of :func:`init_label` for external encoders (None for built-in inits)."""
    for init in config["finetune"]["inits"]:
        if init not in BUILTIN_INITS and init_label(init) == label:
            return init
    return None


def finetune_encoder(wildcards):
    """Encoder weights a fine-tuning run starts from ([] for scratch and unet)."""
    if wildcards.init in PRETRAINED_INITS:
        return f"results/pretrain/{wildcards.init}/encoder.safetensors"
    path = init_path(wildcards.init)
    return path if path else []


def finetune_init_args(wildcards, input):
    """``--init`` / ``--encoder`` / ``--pretrain-area`` of ``sarssl finetune``.

    ``pretrain_area`` records where the encoder was pretrained: the pretraining areas
    joined by '+' for MAE/DINO, ``none`` for scratch and U-Net, ``external`` for an
    encoder file from elsewhere.
    """
    init = wildcards.init
    if init in PRETRAINED_INITS:
        area = "+".join(config["pretrain"]["areas"])
        return (
            f"--init {q(init)} --encoder {q(input.encoder)} --pretrain-area {q(area)}"
        )
    if init in BUILTIN_INITS:
        return f"--init {q(init)} --pretrain-area none"
    return f"--init {q(input.encoder)} --pretrain-area external"


# --------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------


def finetune_metrics():
    """Every fine-tuning run of the study design: tasks x inits x protocols x areas x
    fractions x seeds, each init under the protocols it runs with
    (:data:`sarssl.vocabulary.INIT_PROTOCOLS`: the U-Net only end to end, the per-pixel
    control only as a linear model)."""
    ft = config["finetune"]
    runs = []
    for init in ft["inits"]:
        protocols = init_protocols(init, ft["protocols"])
        if not protocols:
            continue
        runs += expand(
            "results/finetune/{task}/{init}/{protocol}/{area}/f{fraction}_s{seed}/metrics.json",
            task=ft["tasks"],
            init=init_label(init),
            protocol=protocols,
            area=ft["areas"],
            fraction=[fraction_key(f) for f in ft["fractions"]],
            seed=ft["seeds"],
        )
    return runs


# --------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------


def used_areas():
    """Areas the study uses (pretraining areas, then fine-tuning areas), in config order."""
    used = set(config["pretrain"]["areas"]) | set(config["finetune"]["areas"])
    return [a for a in config["areas"] if a in used]


def qa_product(wildcards):
    """Input function of the preprocessing-QA figure: the area's first catalogued product
    (by product id, i.e. by mission and acquisition time)."""
    scenes = catalogue_scenes(wildcards.area)
    if not scenes:
        raise WorkflowError(
            f"results/catalogue/{wildcards.area}.csv keeps no product: nothing to plot"
        )
    return scenes[sorted(scenes)[0]]


def catalogue_csvs(wildcards):
    """Every used area's catalogue CSV (evaluated after the checkpoints ran)."""
    return [checkpoints.catalogue.get(area=a).output.csv for a in used_areas()]


def figure_dpi():
    return config["figures"]["dpi"]


def qualitative_run():
    """The (protocol, fraction, seed) whose predictions the qualitative maps show: full
    fine-tuning (when planned) with the most labels, first seed."""
    ft = config["finetune"]
    protocol = "finetune" if "finetune" in ft["protocols"] else ft["protocols"][0]
    return protocol, fraction_key(max(ft["fractions"])), ft["seeds"][0]


def qualitative_inits():
    """(init, protocol) of each init the qualitative maps show: the qualitative run's
    protocol where the init runs with it, else the first protocol it runs with."""
    protocol = qualitative_run()[0]
    ft = config["finetune"]
    pairs = []
    for init in ft["inits"]:
        ps = init_protocols(init, [protocol] + list(ft["protocols"]))
        if ps:
            pairs.append((init, ps[0]))
    return pairs


def qualitative_predictions(wildcards):
    """``{task}_{init}`` -> predictions.npz of the qualitative run of every task/init."""
    _, fraction, seed = qualitative_run()
    return {
        f"{task}_{init_label(init)}": (
            f"results/finetune/{task}/{init_label(init)}/{protocol}/{wildcards.area}/"
            f"f{fraction}_s{seed}/predictions.npz"
        )
        for task in config["finetune"]["tasks"]
        for init, protocol in qualitative_inits()
    }


def qualitative_args(wildcards, input):
    """``--landcover NAME=PATH ... --treecover NAME=PATH ...`` of the qualitative figure."""
    args = []
    for task in config["finetune"]["tasks"]:
        pairs = [
            q(f"{init_label(init)}={input[f'{task}_{init_label(init)}']}")
            for init, _ in qualitative_inits()
        ]
        args.append(f"--{task} " + " ".join(pairs))
    return " ".join(args)


def embeddings_encoders():
    return expand(
        "results/pretrain/{method}/encoder.safetensors",
        method=config["pretrain"]["methods"],
    )


def embeddings_args(wildcards, input):
    """``--encoder NAME=PATH...`` and ``--chips-dir DIR...`` of the embeddings figure."""
    encoders = " ".join(
        q(f"{m}={p}") for m, p in zip(config["pretrain"]["methods"], input.encoders)
    )
    chips = " ".join(q(f"results/chips/{a}") for a in used_areas())
    return f"--encoder {encoders} --chips-dir {chips}"


def has_label_efficiency():
    """The label-efficiency table/figure needs scratch fine-tuned on 100 % of the labels
    (the reference) and at least one pretrained init to compare with it."""
    ft = config["finetune"]
    return (
        "scratch" in ft["inits"]
        and "finetune" in ft["protocols"]
        and 1.0 in [float(f) for f in ft["fractions"]]
        and any(i not in ("scratch", "unet", "pixel") for i in ft["inits"])
    )


def label_efficiency_output():
    """Named output ``efficiency`` of the tables rule when the design has a reference."""
    if not has_label_efficiency():
        return {}
    return {
        "efficiency": report(
            "results/tables/label_efficiency.csv",
            caption="../report/label_efficiency_table.rst",
            category="Tables",
            labels={"table": "label efficiency"},
        )
    }


def tables_efficiency_arg(wildcards, output):
    """``--label-efficiency PATH`` of ``sarssl tables`` when the rule writes that table."""
    return (
        f"--label-efficiency {q(output.efficiency)}"
        if "efficiency" in output.keys()
        else ""
    )


def finetune_predictions():
    """The predictions.npz beside every run's metrics.json (the tables' bootstrap reads
    them)."""
    return [
        os.path.join(os.path.dirname(m), "predictions.npz") for m in finetune_metrics()
    ]


def table_targets():
    """Results tables: tidy CSV, summary with CIs, paired differences, regional claim,
    Markdown and LaTeX (+ label efficiency)."""
    out = [
        "results/tables/finetune_metrics.csv",
        "results/tables/finetune_summary.csv",
        "results/tables/differences.csv",
        "results/tables/regional.csv",
        "results/tables/results.md",
        "results/tables/results.tex",
    ]
    if has_label_efficiency():
        out.append("results/tables/label_efficiency.csv")
    return out


def training_curve_runs():
    """run.json of the runs that searched the learning rate: with ``lr_search:
    reference_run`` each job's run with the most labels and the first seed, else (every
    run searches) the same runs, one per job, to keep the figure readable."""
    ft = config["finetune"]
    fraction = fraction_key(max(float(f) for f in ft["fractions"]))
    return [
        f"results/finetune/{task}/{init_label(init)}/{protocol}/{area}/"
        f"f{fraction}_s{ft['seeds'][0]}/run.json"
        for task in ft["tasks"]
        for init in ft["inits"]
        for protocol in init_protocols(init, ft["protocols"])
        if protocol != "knn"
        for area in ft["areas"]
    ]


def figure_targets():
    """Every figure of the study (PNG; each rule writes the PDF beside it)."""
    methods = config["pretrain"]["methods"]
    areas = used_areas()
    figs = [
        "results/figures/data_statistics.png",
        "results/figures/learning_curves.png",
        "results/figures/training_curves.png",
    ]
    figs += expand(
        "results/figures/{area}/{name}.png",
        area=areas,
        name=("preprocessing_qa", "composites"),
    )
    # per-class and test-chip figures: areas with labels (an unlabelled pretraining area
    # has neither classes nor test chips)
    areas = [a for a in areas if has_labels(a)]
    figs += expand("results/figures/{area}/backscatter_distributions.png", area=areas)
    figs += expand(
        "results/figures/{area}/qualitative.png", area=config["finetune"]["areas"]
    )
    if "mae" in methods:
        figs += expand("results/figures/{area}/mae_reconstructions.png", area=areas)
    if "dino" in methods:
        figs += expand("results/figures/{area}/attention.png", area=areas)
    if methods:
        figs.append("results/figures/embeddings.png")
        figs.append("results/figures/pretraining_curves.png")
    if has_label_efficiency():
        figs.append("results/figures/label_efficiency.png")
    return figs


def final_targets():
    return (
        table_targets()
        + figure_targets()
        + [f.replace(".png", ".pdf") for f in figure_targets()]
        + expand(
            "results/pretrain/{method}/encoder.safetensors",
            method=config["pretrain"]["methods"],
        )
        # a STAC Collection of every area's preprocessed scenes (odc-stac, stackstac)
        + expand("results/stac/{area}/collection.json", area=used_areas())
    )


check_unique_keys(workflow.configfiles)
check_config(config)
