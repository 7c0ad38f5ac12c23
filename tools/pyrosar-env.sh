#!/usr/bin/env bash
# Build the pyroSAR environment (.venv-pyrosar) used by `sarssl catalogue --backend pyrosar`.
#
#   tools/pyrosar-env.sh            build it if missing or out of date (idempotent, quiet
#                                   when already built)
#   tools/pyrosar-env.sh --check    exit 0 if it is built and works, 1 otherwise; installs
#                                   nothing
#   tools/pyrosar-env.sh --postgis  also install PostgreSQL + PostGIS from Debian (to use
#                                   or test the PostGIS database option)
#
# Why a separate environment: pyroSAR's scene Archive needs the GDAL Python bindings and a
# Python whose sqlite3 can load extensions (SpatiaLite). On Debian 12 the only GDAL is
# 3.6.2, whose bindings need numpy < 2, and current pyroSAR/spatialist need GDAL >= 3.7.
# Those pins must not constrain the main environment (.venv: numpy 2, torch, rasterio
# wheels with their own GDAL), so pyroSAR lives here and sarssl talks to it through a
# subprocess (src/sarssl/archive.py). The recipe (pins verified on Debian 12):
#   apt: libgdal-dev gdal-bin libsqlite3-mod-spatialite (+ python3-venv python3-dev)
#   venv from Debian's /usr/bin/python3 (its sqlite3 loads extensions; pyenv builds
#   often do not)
#   pip: numpy<2 pandas<3 setuptools wheel; gdal==<system GDAL version> built against
#   libgdal-dev without build isolation; spatialist==0.12.1 pyrosar==0.22.2; psycopg2
#   (PostGIS access).
# With conda, `conda install -c conda-forge pyrosar` gives a current pyroSAR instead: point
# SARSSL_PYROSAR_PYTHON at that environment's python.
#
# Environment variables: PYROSAR_VENV (default <repo>/.venv-pyrosar), PYROSAR_PYTHON
# (default /usr/bin/python3).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PYROSAR_VENV:-$ROOT/.venv-pyrosar}"
PYTHON="${PYROSAR_PYTHON:-/usr/bin/python3}"
STAMP="$VENV/.sarssl-pyrosar-installed"
# Bump when the recipe changes: a stamp with another value triggers a rebuild.
RECIPE="pyrosar==0.22.2 spatialist==0.12.1 numpy<2 pandas<3 psycopg2 r1"
APT_GET=(env DEBIAN_FRONTEND=noninteractive apt-get -y -q)
MODE="build"
WANT_POSTGIS=0
for arg in "$@"; do
  case "$arg" in
    --check) MODE="check" ;;
    --postgis) WANT_POSTGIS=1 ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "pyrosar-env.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

say() { echo "pyrosar-env: $*" >&2; }

# The smoke test: pyroSAR and GDAL import, and sqlite3 loads SpatiaLite.
works() {
  [ -x "$VENV/bin/python" ] || return 1
  "$VENV/bin/python" - <<'EOF' >/dev/null 2>"${1:-/dev/null}"
import sqlite3
from osgeo import gdal, ogr  # noqa: F401
import pyroSAR  # noqa: F401
from pyroSAR.drivers import Archive, identify  # noqa: F401  (pyroSAR 0.22: both here)
con = sqlite3.connect(":memory:")
con.enable_load_extension(True)
for name in ("mod_spatialite", "mod_spatialite.so"):
    try:
        con.load_extension(name)
        break
    except sqlite3.OperationalError:
        pass
else:
    raise SystemExit(1)
EOF
}

up_to_date() { [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$RECIPE" ] && works; }

if [ "$MODE" = "check" ]; then
  up_to_date && exit 0 || exit 1
fi

apt_install() {
  # Install missing Debian packages (needs root, or sudo without a password).
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
      || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo=(sudo); else
      say "missing Debian packages ${missing[*]}: install them as root" \
          "(apt-get install ${missing[*]}) and rerun"
      exit 1
    fi
  fi
  say "installing ${missing[*]} with apt-get"
  "${sudo[@]}" "${APT_GET[@]}" update >/dev/null
  "${sudo[@]}" "${APT_GET[@]}" install "${missing[@]}" >/dev/null
}

if [ "$WANT_POSTGIS" = 1 ]; then
  apt_install postgresql postgis
fi

if up_to_date; then
  touch "$STAMP"  # newer than this script: a Makefile rule on the stamp stays quiet
  exit 0
fi

command -v apt-get >/dev/null || { say "needs a Debian/Ubuntu system (apt-get);" \
  "with conda: conda create -p $VENV -c conda-forge pyrosar, then point" \
  "SARSSL_PYROSAR_PYTHON at $VENV/bin/python"; exit 1; }
apt_install libgdal-dev gdal-bin libsqlite3-mod-spatialite python3-venv python3-dev \
  build-essential libpq-dev

[ -x "$PYTHON" ] || { say "no Python at $PYTHON (set PYROSAR_PYTHON)"; exit 1; }
"$PYTHON" -c 'import sqlite3; sqlite3.connect(":memory:").enable_load_extension(True)' \
  2>/dev/null || { say "$PYTHON: its sqlite3 cannot load extensions (SpatiaLite);" \
  "use Debian's /usr/bin/python3 (PYROSAR_PYTHON=...)"; exit 1; }

GDAL_VERSION="$(gdal-config --version)"
say "building $VENV (Python $("$PYTHON" -c 'import platform; print(platform.python_version())'), GDAL $GDAL_VERSION)"
rm -f "$STAMP"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
"${PIP[@]}" "numpy<2" "pandas<3" setuptools wheel
# The bindings must match the system library exactly; build them against it.
"${PIP[@]}" --no-build-isolation --no-deps "gdal==$GDAL_VERSION"
"${PIP[@]}" "spatialist==0.12.1" "pyrosar==0.22.2" "psycopg2>=2.9"
works /dev/stderr || { say "built, but the smoke test above failed (pyroSAR/GDAL import or" \
  "SpatiaLite load)"; exit 1; }
echo "$RECIPE" > "$STAMP"
say "ready: $VENV"
