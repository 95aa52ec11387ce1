"""Coordinate systems: a user's choice validated, a file's read, or one inferred from the values."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import psycopg

from locaria_batch.job import JobError

EPSG_CODE = re.compile(r"^\s*(?:EPSG\s*:\s*)?(\d{4,9})\s*$", re.IGNORECASE)
WGS84 = 4326


def known_srid(conn: psycopg.Connection[Any], srid: int) -> bool:
    if not 0 < srid < 2**31:
        return False
    return conn.execute("SELECT 1 FROM spatial_ref_sys WHERE srid = %s", [srid]).fetchone() is not None


OPTIONS = {"source_crs": "--crs", "s_srs": "--crs", "target_crs": "--target-crs"}  # the CLI's names for them
# how files name EPSG codes: EPSG:27700, urn:ogc:def:crs:EPSG::27700, urn:ogc:def:crs:EPSG:6.6:27700,
# http://www.opengis.net/def/crs/EPSG/0/27700
NAMED_EPSG = re.compile(r"(?:^|[:/])EPSG(?::[\d.]*:|:|/\d+/)(\d+)\s*$", re.IGNORECASE)
NAMED_CRS84 = re.compile(r"(?:^|[:/])(?:OGC(?::[\d.]*:|:|/[\d.]+/))?CRS84\s*$", re.IGNORECASE)


def srid_from_attribute(conn: psycopg.Connection[Any], value: object, key: str) -> int:
    """An EPSG code from a file attribute (`EPSG:27700` or `27700`); nothing else is accepted."""
    match = EPSG_CODE.match(str(value))
    if not match or not known_srid(conn, int(match.group(1))):
        raise JobError(f"{OPTIONS.get(key, key)} (the {key} attribute) {str(value)[:60]!r} is not a known EPSG code; "
                       "use a value such as EPSG:27700 or EPSG:4326")
    return int(match.group(1))


def declared_srid(conn: psycopg.Connection[Any], name: str, label: str) -> int | None:
    """The SRID of a CRS name a file gives itself (GeoJSON's crs member).  An EPSG code PostGIS does not
    know is refused; a name that is no EPSG code at all is left to GDAL (None)."""
    if NAMED_CRS84.search(name.strip()):
        return WGS84
    match = NAMED_EPSG.search(name.strip())
    if match is None:
        return None
    if not known_srid(conn, int(match.group(1))):
        raise JobError(f"{label} declares the coordinate system {name[:80]!r}, which is not a known EPSG code; "
                       "correct the file's crs member, or remove it and give the coordinate system with --crs "
                       "(the source_crs attribute)")
    return int(match.group(1))


def srid_from_crs(conn: psycopg.Connection[Any], crs: str, label: str) -> int | None:
    """The SRID of a CRS a file declares (GDAL gives `EPSG:n` when it recognises it); None for a
    definition without an EPSG code (a local projection), which the rows are transformed from as it is."""
    text = crs.strip()
    if text.upper() in ("OGC:CRS84", "CRS84", "EPSG:4326"):
        return WGS84
    match = re.match(r"^EPSG:(\d+)$", text, re.IGNORECASE)
    if match and known_srid(conn, int(match.group(1))):
        return int(match.group(1))
    if match:
        raise JobError(f"{label} uses the coordinate system {text}, which is not a known EPSG code; give the "
                       "right one with --crs (the source_crs attribute, for example EPSG:27700) and load it again")
    found = conn.execute("SELECT srid FROM spatial_ref_sys WHERE srtext = %s OR proj4text = %s LIMIT 1",
                         [text, text]).fetchone()
    if found:
        return int(found["srid"] if isinstance(found, dict) else found[0])
    return None


def fits_lon_lat(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    fits: np.ndarray = (np.abs(x) <= 180) & (np.abs(y) <= 90)
    return fits


def infer_srid(x: np.ndarray, y: np.ndarray) -> int | None:
    """Longitude/latitude when most values fit; else unknown.  The values that do not fit are left to the
    per-row range check (a typo, a swapped pair), which empties their geometry with a warning.  Projected
    numbers are never guessed: the same eastings and northings are valid in the British, Irish, Dutch,
    Belgian and Swiss grids, and a wrong guess puts the data in another country."""
    if np.count_nonzero(fits_lon_lat(x, y)) >= 0.5 * len(x):
        return WGS84
    return None
