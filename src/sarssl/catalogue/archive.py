"""Scene catalogue in a spatial database: pyroSAR's ``Archive`` (SpatiaLite or PostGIS).

``sarssl catalogue PRODUCT_OR_DIR... --backend pyrosar --db scenes.db --aoi ... --out A.csv``

The *builtin* catalogue backend (:mod:`sarssl.catalogue.builtin`) scans product manifests on every
run. This backend keeps a persistent scene database instead, the scene archive of pyroSAR
(Truckenbrodt et al. 2019, "Towards Sentinel-1 SAR analysis-ready data: a best practices
assessment on preparing backscatter data for the cube", Data 4(3):93):

1. **ingest** (:func:`ingest`): every product given is identified by
   ``pyroSAR.drivers.identify`` (manifest metadata) and inserted with
   ``Archive.insert``. Products already registered (same file name) are skipped; the same
   acquisition under another file name (a ``.zip`` and its ``.SAFE``) goes to pyroSAR's
   ``duplicates`` table; rows whose file or SAFE folder has disappeared are dropped first.
2. **select** (:func:`select`): ``Archive.select`` with the AOI as a
   ``spatialist`` bounding-box vector (``ST_Intersects`` in the database), the dates,
   ``orbit`` (``A``/``D``), ``orbitNumber_rel`` and the polarisation flags.
3. The CSV rows come from the selected products' manifests (read with :mod:`sarssl.sar.safe`)
   through :mod:`sarssl.catalogue.table`, exactly the builtin backend's columns.

Products given are screened exactly as by the builtin backend before anything reaches the
database (:func:`sarssl.catalogue.screening.screen_products`: unreadable products, products that are
not IW GRD or whose name disagrees with the manifest, and all but the newest processing of
each acquisition are rejected and never ingested). A selected scene that the database holds
under another name than the product kept for its acquisition (an older processing ingested
earlier, which pyroSAR then keeps in ``data`` and the newer one in ``duplicates``) stands
for the kept product. With no products given (the whole database), the selected scenes
are screened the same way.

Equivalence with the builtin backend (tested product for product):

* Dates: the contract keeps a product whose *start time* falls on a date in
  ``[start, end]`` (UTC, inclusive). pyroSAR stores ``start``/``stop`` as
  ``YYYYmmddTHHMMSS``; its ``date_strict=True`` query gives ``start >= mindate`` (and
  ``stop <= maxdate``), ``date_strict=False`` gives ``start <= maxdate`` (and
  ``stop >= mindate``). The selection is the intersection of ``select(mindate=START
  T000000, date_strict=True)`` and ``select(maxdate=ENDT235959, date_strict=False)``,
  i.e. exactly ``START <= start <= END 23:59:59``.
* Area: pyroSAR's ``bbox`` column holds the lon/lat *envelope* of the manifest footprint,
  not the footprint itself, so the database answer is a superset near the envelope's
  corners (a Sentinel-1 IW footprint is a tilted quadrilateral covering about 70% of its
  envelope). As in any two-step spatial query (index filter, then exact geometry)
  each selected product's manifest footprint is then tested against the AOI; products
  dropped by this refinement are logged.
* Pass direction, relative orbit and polarisations are answered by the database alone.

Environment. pyroSAR needs the GDAL Python bindings and a ``sqlite3`` that loads
SpatiaLite; on Debian 12 that means GDAL 3.6 with numpy < 2, which must not constrain the
main environment. pyroSAR therefore lives in its own virtual environment
(``.venv-pyrosar``, built by ``tools/pyrosar-env.sh``) and this module runs a small
self-contained worker script (:data:`WORKER`) in it through :mod:`subprocess`, JSON on
stdin and stdout. The worker's Python is, in order: ``$SARSSL_PYROSAR_PYTHON``,
``<repository>/.venv-pyrosar/bin/python``, ``./.venv-pyrosar/bin/python``. GDAL/PROJ data
variables of the main environment (``GDAL_DATA``, ``PROJ_DATA``...) are not passed on:
they point at the rasterio wheel's newer data, which Debian's GDAL 3.6/PROJ 9.1 reject.

Databases (``--db``):

* a file path (``scenes.db``, ``results/catalogue/scenes.sqlite``): SQLite + SpatiaLite,
  created on first use. The name needs a file extension (pyroSAR would silently append
  ``.db`` otherwise).
* ``postgresql://USER@HOST:PORT/DBNAME``: PostgreSQL + PostGIS. The database is created
  (``CREATE EXTENSION postgis``) when missing. The password comes from ``$PGPASSWORD``
  (or the URL, discouraged: it ends up in logs and shell history); it is handed to the
  worker on stdin, never on its command line.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import unquote, urlsplit

import pandas as pd
from shapely.geometry import box
from tqdm import tqdm

from ..errors import InputError, SarsslError
from ..sar.safe import open_product, parse_product_name
from .screening import Filters, exclusion_reason, find_products, screen_products
from .table import Rejection, product_row, table_from_rows

log = logging.getLogger(__name__)

#: Repository root (``src/sarssl/catalogue/archive.py`` -> ``.``) when running from a checkout.
REPO_ROOT = Path(__file__).resolve().parents[3]
ENV_SCRIPT = "tools/pyrosar-env.sh"
VENV_NAME = ".venv-pyrosar"
#: Environment variables of the main environment not handed to the worker.
_DROP_ENV = (
    "PYTHONPATH",
    "PYTHONHOME",
    "VIRTUAL_ENV",
    "GDAL_DATA",
    "PROJ_DATA",
    "PROJ_LIB",
    "GDAL_DRIVER_PATH",
)
#: Seconds a worker call may take (ingesting thousands of zips reads each manifest once).
WORKER_TIMEOUT_S = 3600

# The worker runs in the pyroSAR environment (its own numpy/GDAL): standard library,
# pyroSAR and spatialist only, nothing from sarssl. Request and answer are JSON.
WORKER = r"""
import json, logging, os, sys, traceback

request = json.load(sys.stdin)
answer_stream = sys.stdout
sys.stdout = sys.stderr  # anything pyroSAR prints must not corrupt the JSON answer
logging.basicConfig(level=request.get("log_level", "WARNING"), stream=sys.stderr,
                    format="pyroSAR worker %(levelname)s %(name)s: %(message)s")


def answer(obj):
    answer_stream.write(json.dumps(obj))
    answer_stream.flush()


def open_archive(db):
    from pyroSAR.drivers import Archive
    # cleanup=False: pyroSAR's own cleanup treats SAFE folders (not files) as missing and
    # would drop them; missing entries are handled in ingest() below instead.
    if db["kind"] == "sqlite":
        return Archive(db["path"], cleanup=False)
    return Archive(db["name"], postgres=True, user=db["user"], password=db["password"],
                   host=db["host"], port=db["port"], cleanup=False)


def ingest(arc, products):
    from pyroSAR.drivers import identify
    dropped = []
    for (scene,) in list(arc.conn.execute("SELECT scene FROM data")):
        if not os.path.exists(scene):
            arc.drop_element(scene, with_duplicates=False)
            dropped.append(scene)
    names = {os.path.basename(s) for (s,) in arc.conn.execute("SELECT scene FROM data")}
    names |= {os.path.basename(s) for (s,) in arc.conn.execute("SELECT scene FROM duplicates")}
    status, failed, todo, dups = {}, [], [], []
    for path in products:
        try:
            scene = identify(path)
        except BaseException as exc:  # pyroSAR raises RuntimeError, OSError, zipfile errors...
            failed.append([path, f"{type(exc).__name__}: {exc}"])
            continue
        if os.path.basename(scene.scene) in names:
            status[path] = "registered before"
        elif arc.is_registered(scene) or any(
                t.outname_base() == scene.outname_base() and t.product == scene.product
                for t in todo):
            status[path] = "duplicate"
            dups.append(scene)
        else:
            status[path] = "inserted"
            todo.append(scene)
        names.add(os.path.basename(scene.scene))
    # two rounds: pyroSAR only sees committed rows when it sorts new from duplicate
    for batch in (todo, dups):
        if batch:
            arc.insert(batch)
    return {"status": status, "failed": failed, "dropped": dropped}


def select(arc, q):
    from spatialist.vector import bbox
    w, s, e, n = q["aoi"]
    kw = {}
    if q.get("polarisations"):
        kw["polarizations"] = q["polarisations"]
    if q.get("orbit"):
        kw["orbit"] = q["orbit"]
    allowed = None
    if q.get("relative_orbits") and arc.driver == "postgresql":
        # pyroSAR 0.22.2 writes the mixed-case column name unquoted into its SQL, which
        # PostgreSQL folds to lower case ("orbitnumber_rel" does not exist): filter the
        # relative orbit through SQLAlchemy's ORM (quoted names) instead
        session = arc.Session()
        try:
            allowed = {s for (s,) in session.query(arc.Data.scene).filter(
                arc.Data.orbitNumber_rel.in_([int(r) for r in q["relative_orbits"]]))}
        finally:
            session.close()
    elif q.get("relative_orbits"):
        kw["orbitNumber_rel"] = list(q["relative_orbits"])
    with bbox({"xmin": w, "xmax": e, "ymin": s, "ymax": n}, crs=4326) as site:
        # start >= mindate (strict) and start <= maxdate (not strict): see sarssl.catalogue.archive
        lower = arc.select(vectorobject=site, mindate=q["mindate"], date_strict=True, **kw)
        upper = set(arc.select(vectorobject=site, maxdate=q["maxdate"], date_strict=False,
                               **kw))
    return [x for x in lower if x in upper and (allowed is None or x in allowed)]


try:
    arc = open_archive(request["db"])
except BaseException as exc:  # SystemExit('Server not found!') from pyroSAR included
    answer({"ok": False, "stage": "open",
            "error": f"{type(exc).__name__}: {exc}".strip().rstrip(":")})
    sys.exit(0)
try:
    with arc:
        if request["op"] == "run":  # ingest (optional), then every query
            result = {}
            if request.get("products"):
                result["ingest"] = ingest(arc, request["products"])
            result["selections"] = [select(arc, q) for q in request.get("queries", [])]
            result["size"] = list(arc.size)
        elif request["op"] == "version":
            import pyroSAR, spatialist
            from osgeo import gdal
            result = {"pyroSAR": pyroSAR.__version__, "spatialist": spatialist.__version__,
                      "gdal": gdal.__version__}
        else:
            raise ValueError(f"unknown op {request['op']!r}")
except BaseException as exc:
    traceback.print_exc()
    answer({"ok": False, "stage": request.get("op"), "error": f"{type(exc).__name__}: {exc}"})
    sys.exit(0)
answer(dict(ok=True, **result))
"""


# --------------------------------------------------------------------------------------
# database and environment
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Database:
    """Where the scene archive lives: a SpatiaLite file or a PostGIS database."""

    kind: str  # "sqlite" | "postgresql"
    path: Path | None = None  # sqlite file (absolute)
    name: str = ""  # PostgreSQL database name
    user: str = "postgres"
    host: str = "localhost"
    port: int = 5432
    password: str = field(default="", repr=False)

    def describe(self) -> str:
        """Human-readable location, without the password."""
        if self.kind == "sqlite":
            return f"SpatiaLite database {self.path}"
        return f"PostGIS database postgresql://{self.user}@{self.host}:{self.port}/{self.name}"

    def worker_spec(self) -> dict[str, Any]:
        if self.kind == "sqlite":
            return {"kind": "sqlite", "path": str(self.path)}
        return {
            "kind": "postgresql",
            "name": self.name,
            "user": self.user,
            "password": self.password,
            "host": self.host,
            "port": self.port,
        }


def parse_db(text: str | os.PathLike) -> Database:
    """A :class:`Database` from ``--db``: a SQLite file path or ``postgresql://...``.

    SQLite: the parent folder is created; an existing path must be a SQLite file (not a
    folder, not another kind of file) and the name needs an extension. PostgreSQL:
    ``postgresql://USER[:PASSWORD]@HOST[:PORT]/DBNAME``, password from ``$PGPASSWORD``
    when not in the URL (pyroSAR's default ``1234`` otherwise, as pyroSAR itself does).
    """
    raw = str(text).strip()
    if not raw:
        raise SarsslError("--db: empty database path")
    if "://" in raw:
        url = urlsplit(raw)
        if url.scheme not in ("postgresql", "postgres", "postgis"):
            raise SarsslError(
                f"--db {raw}: unsupported database URL scheme {url.scheme!r}; use a SQLite "
                f"file path or postgresql://USER@HOST:PORT/DBNAME"
            )
        name = url.path.lstrip("/")
        if not name or "/" in name:
            raise SarsslError(f"--db {raw}: no database name (postgresql://USER@HOST:PORT/DBNAME)")
        try:
            port = url.port or 5432
        except ValueError as exc:
            raise SarsslError(f"--db {raw}: bad port: {exc}") from exc
        password = unquote(url.password) if url.password else os.environ.get("PGPASSWORD", "1234")
        return Database(
            kind="postgresql",
            name=unquote(name),
            user=unquote(url.username) if url.username else "postgres",
            host=url.hostname or "localhost",
            port=port,
            password=password,
        )
    path = Path(raw).expanduser().resolve()
    if path.is_dir():
        raise SarsslError(
            f"--db {raw}: is a directory; give a database file such as {raw}/scenes.db"
        )
    if not path.suffix:
        raise SarsslError(
            f"--db {raw}: the database file name needs an extension (e.g. {path.name}.db); "
            f"pyroSAR would otherwise write {path.name}.db"
        )
    if path.exists():
        with open(path, "rb") as fh:
            head = fh.read(16)
        if head and head != b"SQLite format 3\x00":
            raise SarsslError(f"--db {raw}: exists but is not a SQLite database")
    else:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SarsslError(f"--db {raw}: cannot create folder {path.parent}: {exc}") from exc
    if not os.access(path.parent, os.W_OK):
        raise SarsslError(f"--db {raw}: folder {path.parent} is not writable")
    return Database(kind="sqlite", path=path)


def pyrosar_python() -> Path:
    """The Python of the pyroSAR environment (see the module docstring for the order)."""
    tried: list[str] = []
    env = os.environ.get("SARSSL_PYROSAR_PYTHON")
    if env:
        p = Path(env)
        if p.is_file() and os.access(p, os.X_OK):
            return p
        raise SarsslError(f"SARSSL_PYROSAR_PYTHON={env}: no executable Python there")
    for root in dict.fromkeys([REPO_ROOT, Path.cwd()]):
        p = root / VENV_NAME / "bin" / "python"
        tried.append(str(p))
        if p.is_file():
            return p
    raise SarsslError(
        f"pyroSAR environment not found (looked for {', '.join(tried)}): build it with "
        f"{ENV_SCRIPT} (Debian: installs GDAL and SpatiaLite with apt-get, then pyroSAR "
        f"into {VENV_NAME}) or set SARSSL_PYROSAR_PYTHON to a Python with pyroSAR"
    )


def _worker_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _DROP_ENV}
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _check_server(db: Database, timeout_s: float = 5.0) -> None:
    """Fail fast when the PostgreSQL server does not answer (pyroSAR itself retries for
    10 s and then calls ``sys.exit('Server not found!')``)."""
    try:
        with socket.create_connection((db.host, db.port), timeout=timeout_s):
            pass
    except OSError as exc:
        raise SarsslError(
            f"cannot open {db.describe()}: no PostgreSQL server reachable at "
            f"{db.host}:{db.port} ({exc.strerror or exc})"
        ) from exc


def call_worker(op: str, db: Database, **payload: Any) -> dict[str, Any]:
    """Run one worker request in the pyroSAR environment and return its answer.

    Raises :class:`SarsslError` naming the database when pyroSAR cannot open it or the
    request fails, with the worker's error (and the tail of its stderr when it crashed).
    """
    python = pyrosar_python()
    if db.kind == "postgresql":
        _check_server(db)
    request = {
        "op": op,
        "db": db.worker_spec(),
        "log_level": "INFO" if log.isEnabledFor(logging.DEBUG) else "WARNING",
        **payload,
    }
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            [str(python), "-c", WORKER],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            env=_worker_env(),
            timeout=WORKER_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise SarsslError(f"{db.describe()}: pyroSAR {op} took more than {exc.timeout} s") from exc
    except OSError as exc:
        raise SarsslError(f"pyroSAR environment {python}: cannot run it: {exc}") from exc
    for line in proc.stderr.splitlines():
        log.debug("%s", line)
    try:
        answer = json.loads(proc.stdout)
    except json.JSONDecodeError:
        tail = "\n".join(proc.stderr.strip().splitlines()[-8:])
        raise SarsslError(
            f"{db.describe()}: the pyroSAR worker ({python}) failed with exit status "
            f"{proc.returncode} and no answer; its last messages:\n{tail}\n(check the "
            f"environment with {ENV_SCRIPT} --check)"
        ) from None
    log.debug("pyroSAR %s on %s: %.2f s", op, db.describe(), time.perf_counter() - t0)
    if not answer.get("ok"):
        what = "cannot open" if answer.get("stage") == "open" else f"pyroSAR {op} failed on"
        raise SarsslError(f"{what} {db.describe()}: {answer.get('error')}")
    return answer


# --------------------------------------------------------------------------------------
# ingest and select
# --------------------------------------------------------------------------------------


@dataclass
class IngestReport:
    """What :func:`ingest` did, per product path."""

    inserted: list[str]
    duplicates: list[str]  # same acquisition as a registered product, other file name
    registered_before: list[str]  # this file name was already in the archive
    failed: list[tuple[str, str]]  # (path, pyroSAR's error)
    dropped_missing: list[str]  # archive rows whose file had disappeared
    size: tuple[int, int]  # rows in the data and duplicates tables afterwards


def _as_db(db: Database | str | os.PathLike) -> Database:
    return db if isinstance(db, Database) else parse_db(db)


def _query(filters: Filters) -> dict[str, Any]:
    """Worker query from :class:`~sarssl.catalogue.screening.Filters` (dates bound the
    start time)."""
    return {
        "aoi": [float(v) for v in filters.aoi],
        "mindate": str(filters.start)[:10].replace("-", "") + "T000000",
        "maxdate": str(filters.end)[:10].replace("-", "") + "T235959",
        "orbit": {"ASCENDING": "A", "DESCENDING": "D"}.get((filters.orbit_direction or "").upper()),
        "relative_orbits": [int(r) for r in filters.relative_orbits],
        "polarisations": [p.upper() for p in filters.polarisations],
    }


def _run(
    db: Database, products: Sequence[str] | None, queries: Sequence[dict]
) -> tuple[IngestReport | None, list[list[str]]]:
    """One worker call: ingest ``products`` (if any), then answer every query."""
    answer = call_worker("run", db, products=list(products or []), queries=list(queries))
    size = (int(answer["size"][0]), int(answer["size"][1]))
    report = None
    if "ingest" in answer:
        status: dict[str, str] = answer["ingest"]["status"]
        report = IngestReport(
            inserted=[p for p, s in status.items() if s == "inserted"],
            duplicates=[p for p, s in status.items() if s == "duplicate"],
            registered_before=[p for p, s in status.items() if s == "registered before"],
            failed=[(p, e) for p, e in answer["ingest"]["failed"]],
            dropped_missing=list(answer["ingest"]["dropped"]),
            size=size,
        )
        for scene in report.dropped_missing:
            log.warning("%s: dropped %s (no longer on disk)", db.describe(), scene)
        for path, err in report.failed:
            log.warning("pyroSAR cannot identify %s: %s", path, err)
        log.info(
            "%s: %d inserted, %d duplicates, %d registered before, %d failed; %d scenes "
            "(+%d duplicates) in the archive",
            db.describe(),
            len(report.inserted),
            len(report.duplicates),
            len(report.registered_before),
            len(report.failed),
            *size,
        )
    selections = [list(s) for s in answer["selections"]]
    for sel in selections:
        log.info("%s: %d of %d scenes match the query", db.describe(), len(sel), size[0])
    return report, selections


def ingest(products: Sequence[str | os.PathLike], db: Database | str) -> IngestReport:
    """Register products (``.zip`` / ``.SAFE``; absolute paths are stored) in the archive.

    Idempotent: products already registered under the same file name are skipped. Products
    pyroSAR cannot identify are reported in ``failed`` (nothing is inserted for them).
    """
    report, _ = _run(_as_db(db), [str(Path(p).resolve()) for p in products], [])
    assert report is not None
    return report


def select(db: Database | str, filters: Filters) -> list[str]:
    """Scene paths registered in the archive that match ``filters`` (pyroSAR's answer).

    The AOI is matched against the footprint *envelope* (pyroSAR's ``bbox`` column); the
    dates bound the acquisition start (inclusive, UTC); every polarisation listed must be
    present.
    """
    return _run(_as_db(db), None, [_query(filters)])[1][0]


def product_key(path: str | os.PathLike) -> str:
    """The product id a path holds, from its name (``X.zip``, ``X.SAFE``, ``X.SAFE.zip``)."""
    name = Path(path).name
    for suffix in (".zip", ".ZIP", ".SAFE", ".safe"):
        name = name.removesuffix(suffix)
    return name


def build_catalogue_pyrosar(
    inputs: Sequence[str | os.PathLike],
    filters: Filters,
    db: Database | str,
    rejected: list[Rejection] | None = None,
) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Like :func:`sarssl.catalogue.builtin.build_catalogue`, the selection made by the archive.

    With ``inputs``, they are screened (validated, one per acquisition), the kept ones
    ingested, and only they can be selected (a product held under several paths is reported
    from the path the builtin backend keeps); with no inputs, the whole archive is queried.
    Rejected products are appended to ``rejected`` (:class:`sarssl.catalogue.table.Rejection`).
    """
    return build_catalogues_pyrosar(inputs, [filters], db, rejected=rejected)[0]


def build_catalogues_pyrosar(
    inputs: Sequence[str | os.PathLike],
    filters_list: Sequence[Filters],
    db: Database | str,
    rejected: list[Rejection] | None = None,
) -> list[tuple[pd.DataFrame, list[tuple[str, str]]]]:
    """:func:`build_catalogue_pyrosar` for several filter sets (e.g. one per area) with a
    single ingest and a single start of the pyroSAR environment (``rejected`` collects the
    rejections of every set, each product once)."""
    db = _as_db(db)
    excluded: list[tuple[str, str]] = []
    screened: list[Rejection] = []
    given: dict[str, str] = {}  # product id -> path kept for its acquisition
    kept: list[tuple[str | Path, Any]] = []
    if inputs:
        paths = find_products(inputs)
        if not paths:
            raise InputError(f"no .zip or .SAFE products in {', '.join(map(str, inputs))}")
        kept = screen_products(paths, excluded, screened)
    report, selections = _run(
        db, [str(Path(p).resolve()) for p, _ in kept], [_query(f) for f in filters_list]
    )
    if report is not None:
        failed = dict(report.failed)
        for path, prod in kept:
            err = failed.get(str(Path(path).resolve()))
            if err is not None:
                log.warning("excluded %s: unreadable: pyroSAR: %s", path, err)
                excluded.append((str(path), f"unreadable: pyroSAR: {err}"))
                screened.append(Rejection(str(path), prod.id, f"unreadable: pyroSAR: {err}"))
            else:
                given[product_key(path)] = str(path)
    out = []
    for scenes, filters in zip(selections, filters_list):
        rej = list(screened)
        out.append(_table(scenes, filters, given if inputs else None, list(excluded), rej))
        if rejected is not None:
            rejected.extend(r for r in rej if r not in rejected)
    return out


def _acquisition(name: str) -> tuple[str, int, dt.datetime] | None:
    """(mission, absolute orbit, start) of a product from its name, or None."""
    f = parse_product_name(Path(name).name)
    if f is None:
        return None
    return f["mission"], f["orbit"], dt.datetime.strptime(f["start"], "%Y%m%dT%H%M%S")


def _same_acquisition(
    scene: str, index: dict[tuple[str, int], list[tuple[dt.datetime, str]]]
) -> str | None:
    """The key of the given product of the same acquisition as the scene ``scene`` (by
    their names: mission, absolute orbit, start within 2 s), or None. ``index`` maps
    (mission, orbit) to the (start, key) of the given products."""
    acq = _acquisition(scene)
    if acq is None:
        return None
    for start, key in index.get(acq[:2], []):
        if abs((start - acq[2]).total_seconds()) <= 2:
            return key
    return None


def _table(
    scenes: list[str],
    filters: Filters,
    given: dict[str, str] | None,
    excluded: list[tuple[str, str]],
    rejected: list[Rejection] | None = None,
) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Catalogue rows for the archive's selection (footprint refinement included) and the
    reasons the other given products were left out."""
    index: dict[tuple[str, int], list[tuple[dt.datetime, str]]] = {}
    for key in given or {}:
        acq = _acquisition(key)
        if acq is not None:
            index.setdefault(acq[:2], []).append((acq[2], key))
    chosen: dict[str, str] = {}
    for scene in scenes:
        key = product_key(scene)
        if given is None:
            chosen.setdefault(key, scene)
            continue
        if key not in given:
            key = _same_acquisition(scene, index)
            if key is not None:
                log.info(
                    "%s: selected by the archive, stands for %s (same acquisition)",
                    scene,
                    given[key],
                )
        if key is not None:
            chosen.setdefault(key, given[key])
    aoi_poly = box(*filters.aoi)
    rows: list[dict] = []
    if given is None:  # the whole database: screen what it selected
        products = screen_products(list(chosen.values()), excluded, rejected)
    else:  # screened before ingest
        products = []
        for path in chosen.values():
            try:
                prod = open_product(path)
                prod.close()
                products.append((path, prod))
            except SarsslError as exc:
                log.warning("excluded %s: selected by the archive but unreadable: %s", path, exc)
                excluded.append((path, f"unreadable: {exc}"))
                if rejected is not None:
                    rejected.append(Rejection(path, product_key(path), f"unreadable: {exc}"))
    for path, prod in tqdm(products, desc="catalogue (pyroSAR)", unit="product", leave=False):
        key = prod.id
        if not prod.footprint.intersects(aoi_poly):
            log.info(
                "excluded %s: its footprint envelope meets the AOI, the footprint does not", key
            )
            excluded.append((path, "footprint does not intersect the AOI"))
            continue
        rows.append(product_row(prod, path))
    # why the other given products were left out (for the log: the archive decided)
    for key, path in (given or {}).items():
        if key in chosen:
            continue
        try:
            reason = exclusion_reason(open_product(path), filters, aoi_poly)
        except SarsslError as exc:
            reason = f"unreadable: {exc}"
        if reason is None:
            log.warning(
                "%s: not selected by the archive although its manifest matches the filters (%s)",
                path,
                filters.describe(),
            )
            reason = "not selected by the pyroSAR archive query"
        log.info("excluded %s: %s", key, reason)
        excluded.append((path, reason))
    return table_from_rows(rows), excluded
