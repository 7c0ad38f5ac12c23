"""Precise-orbit selection and interpolation with EOF files in ESA's real layout (issue
#16, item 2): POEORB over RESORB, only files whose validity covers the scene (plus the
interpolation margin), per mission; the orbit fitted to an EOF reproduces held-out state
vectors; a folder without a covering file falls back to the annotation's orbit."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from conftest import real_annotations, write_eof
from sarssl.sar.geometry import (
    ORBIT_MARGIN_S,
    RadarGeometry,
    StateVectors,
    apply_orbit_dir,
    find_orbit_file,
)


@pytest.fixture(scope="module")
def geom() -> RadarGeometry:
    ann = real_annotations()
    return RadarGeometry.from_annotation(
        ann[next(k for k in ann if k.startswith("s1b-iw-g0211223"))]
    )


def _stamp(t) -> str:
    return str(np.datetime64(t, "s")).replace("-", "").replace(":", "")


def _name(mission: str, kind: str, v0, v1, made: str = "20211224T000000") -> str:
    return f"{mission}_OPER_AUX_{kind}_OPOD_{made}_V{_stamp(v0)}_{_stamp(v1)}.EOF"


def _scene(geom: RadarGeometry):
    start = geom.epoch + np.timedelta64(int(geom.first_line_time * 1e9), "ns")
    stop = geom.epoch + np.timedelta64(int(geom.last_line_time * 1e9), "ns")
    return start, stop


def test_selection_prefers_poeorb_whose_validity_covers_the_scene(geom, tmp_path: Path):
    sv, m = geom.state_vectors, geom.mission
    start, stop = _scene(geom)
    margin = np.timedelta64(int(ORBIT_MARGIN_S), "s")
    hour = np.timedelta64(3600, "s")
    # a POEORB ending just before the scene's stop + margin does not cover it
    short = tmp_path / _name(m, "POEORB", start - hour, stop + margin - np.timedelta64(1, "s"))
    res = tmp_path / _name(m, "RESORB", start - hour, stop + hour)
    other = tmp_path / _name("S1A" if m != "S1A" else "S1B", "POEORB", start - hour, stop + hour)
    for p, kind in ((short, "POEORB"), (res, "RESORB"), (other, "POEORB")):
        write_eof(p, sv, kind)
    assert find_orbit_file(tmp_path, m, start, stop) == res  # RESORB: the only cover
    # a covering POEORB wins over the RESORB; of two, the later-produced file
    poe_old = tmp_path / "a" / _name(m, "POEORB", start - hour, stop + hour, "20211225T000000")
    poe_new = tmp_path / "b" / _name(m, "POEORB", start - hour, stop + hour, "20211226T000000")
    for p in (poe_old, poe_new):
        p.parent.mkdir()
        write_eof(p, sv, "POEORB")
    assert find_orbit_file(tmp_path, m, start, stop) == poe_new
    g2 = apply_orbit_dir(geom, tmp_path)
    assert g2.orbit_source == "POEORB" and Path(g2.orbit_file).name == poe_new.name


def test_no_covering_file_falls_back_to_the_annotation(geom, tmp_path: Path, caplog):
    start, stop = _scene(geom)
    day = np.timedelta64(86400, "s")
    write_eof(
        tmp_path / _name(geom.mission, "POEORB", start - 2 * day, start - day),
        geom.state_vectors,
        "POEORB",
    )
    with caplog.at_level(logging.WARNING):
        g2 = apply_orbit_dir(geom, tmp_path)
    assert g2 is geom and g2.orbit_source == "annotation"
    assert "no POEORB/RESORB file" in caplog.text


def test_eof_orbit_interpolates_held_out_state_vectors(geom, tmp_path: Path):
    """Every other annotation state vector goes into an EOF file; the orbit fitted to it
    reproduces the held-out vectors (positions to centimetres, velocities to mm/s)."""
    sv = geom.state_vectors
    keep = np.arange(len(sv.time)) % 2 == 0
    held = ~keep
    held[[0, -1]] = False  # interpolation only
    start, stop = _scene(geom)
    hour = np.timedelta64(3600, "s")
    path = tmp_path / _name(geom.mission, "POEORB", start - hour, stop + hour)
    write_eof(path, StateVectors(sv.time[keep], sv.position[keep], sv.velocity[keep]), "POEORB")
    g2 = geom.with_orbit_file(path)
    assert g2.orbit_source == "POEORB"
    pos, vel, _ = g2.orbit.evaluate(g2.seconds(sv.time[held]))
    assert np.abs(pos - sv.position[held]).max() < 0.05
    assert np.abs(vel - sv.velocity[held]).max() < 0.005
