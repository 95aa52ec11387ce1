"""The fast GeoJSON reader against GDAL's: for every file it reads, the same columns, names, types,
values, geometries, CRS and geometry type; for every file it leaves to GDAL, GDAL's result."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from locaria_batch.jobs.file_loader import geojson, readers
from locaria_batch.jobs.file_loader.sources import GDAL_OPTIONS, DataFile


def feature(properties: Any, geometry: Any = None, **members: Any) -> dict[str, Any]:
    return {"type": "Feature", **members, "properties": properties,
            "geometry": geometry if geometry is not None else {"type": "Point", "coordinates": [1.5, 2.5]}}


def write(path: Path, features: list[Any], sequence: bool = False, **members: Any) -> Path:
    if sequence:
        path.write_text("".join(json.dumps(f) + "\n" for f in features))
    else:
        path.write_text(json.dumps({"type": "FeatureCollection", **members, "features": features}))
    return path


def read_both(path: Path, sequence: bool = False) -> tuple[pa.Table | None, pa.Table, tuple[Any, ...], tuple[Any, ...]]:
    """(fast table or None when it leaves the file to GDAL, GDAL's table, GDAL's (crs, type), ours)."""
    driver = "GeoJSONSeq" if sequence else "GeoJSON"
    data = DataFile(path, "gdal", path.name, driver, GDAL_OPTIONS[driver])
    with readers.open_gdal(data, path.stem, 1000) as raw:
        batches = list(raw.batches)
        gdal = pa.Table.from_batches(batches) if batches else pa.table({})
        expected = (raw.crs, raw.declared_type)
    try:
        spooled = geojson.spool(path, sequence)
    except geojson.NotFast:
        return None, gdal, expected, ()
    fast = pa.Table.from_batches(list(geojson.batches(spooled, 7)), schema=geojson.arrow_schema(spooled))
    return fast, gdal, expected, (spooled.crs, spooled.schema.declared_type())


def assert_same(path: Path, sequence: bool = False, fast_expected: bool = True) -> pa.Table | None:
    fast, gdal, expected, ours = read_both(path, sequence)
    if fast is None:
        assert not fast_expected, f"{path.name} was left to GDAL"
        return None
    assert [(f.name, str(f.type)) for f in fast.schema][:-1] == [(f.name, str(f.type)) for f in gdal.schema][:-1]
    assert fast.drop_columns(["wkb_geometry"]).to_pylist() == gdal.drop_columns([gdal.column_names[-1]]).to_pylist()
    assert fast.column("wkb_geometry").to_pylist() == gdal.column(gdal.column_names[-1]).to_pylist()
    assert ours == expected
    return fast


POINT = {"type": "Point", "coordinates": [1, 2]}
SQUARE = [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]
CASES: dict[str, list[Any]] = {
    "types": [feature({"i": 1, "f": 2.5, "s": "x", "b": True, "n": None, "big": 2**40})],
    "nested": [feature({"a": {"street": "High St", "number": 5, "deep": {"x": [1, 2]}}, "tags": ["x", "y"]})],
    "nested_then_plain": [feature({"o": {"a": 1}}), feature({"o": 5})],
    "key_orders": [feature({"z": 1, "b": 2}), feature({"c": 3, "b": 1}), feature({"b": 1, "z": 2})],
    "sparse_keys": [feature({"a": 1}), feature({}), feature({"q": "x", "a": 2})],
    "no_properties": [feature(None), {"type": "Feature", "geometry": POINT}],
    "promotions": [feature({"a": 1, "b": True, "c": 1, "d": "x", "e": [1]}),
                   feature({"a": 2.5, "b": 3, "c": 2**40, "d": 1, "e": "x"})],
    "numbers_then_text": [feature({"a": 2**40, "b": True, "c": 1}), feature({"a": 0.5, "b": 0.5, "c": True}),
                          feature({"a": "x", "b": "y", "c": "z"})],
    "json_text": [feature({"a": [0.1, 1e20, "x/y", {"k": [1, None, True]}, []], "b": "s"}),
                  feature({"a": None, "b": [1]})],
    "dates": [feature({"d": "2020-01-02", "t": "10:11:12", "dt": "2020-01-02T10:11:12", "slash": "2020/01/02",
                       "mixed": "2020-01-02", "words": "2020 was a year"}),
              feature({"d": None, "t": "10:11", "dt": "2020-01-02", "slash": "2021/12/31",
                       "mixed": "2020-01-02T03:04:05.250", "words": "x"})],
    "date_then_text": [feature({"d": "2020-01-02"}), feature({"d": "soon"})],
    "all_null": [feature({"a": None}), feature({"a": None})],
    "overflow_int64": [feature({"a": 1}), feature({"a": 123456789012345678901234567890})],
    "non_ascii_keys": [feature({"Straße": "ü", "名前": "東京", "emoji 🙂": 1})],
    "huge_property": [feature({"text": "x" * (3 << 20), "n": 1})] + [feature({"text": "y", "n": i}) for i in range(5)],
    "escapes": [feature({"q": 'say "hi" \\ back\\slash\n\t', "u": "\u00e9\u2013"})],
    "int_ids": [feature({"a": 1}, id=5), feature({"a": 2}, id=5), feature({"a": 3})],
    "null_geometry": [{"type": "Feature", "properties": {"n": 1}, "geometry": None}, feature({"n": 2})],
    "z": [feature({"a": 1}, {"type": "Point", "coordinates": [1, 2, 3]}),
          feature({"a": 2}, {"type": "Point", "coordinates": [1, 2]})],
    "mixed_geometry": [feature({"a": 1}, POINT), feature({"a": 2}, {"type": "Polygon", "coordinates": SQUARE}),
                       feature({"a": 3}, {"type": "MultiPolygon", "coordinates": [SQUARE, SQUARE]}),
                       feature({"a": 4}, {"type": "GeometryCollection", "geometries": [POINT]}),
                       feature({"a": 5}, {"type": "MultiPoint", "coordinates": [[1, 2], [3, 4]]})],
    "polygons": [feature({"a": i}, {"type": "Polygon", "coordinates": [[[i, 0], [i + 1, 0], [i, 1], [i, 0]],
                                                                       [[i, 0], [i, 0.5], [i + 0.5, 0], [i, 0]]]})
                 for i in range(20)],
    "multipolygons_z": [feature({"a": i}, {"type": "MultiPolygon", "coordinates": [
        [[[0, 0, i], [1, 0, i], [1, 1, i], [0, 0, i]]], [[[5, 5, 1], [6, 5, 1], [6, 6, 1], [5, 5, 1]]]]})
        for i in range(3)],
    "lines": [feature({}, {"type": "LineString", "coordinates": [[0, 0], [1, 1], [2, 0]]}),
              feature({}, {"type": "MultiLineString", "coordinates": [[[0, 0], [1, 1]], [[2, 2], [3, 3]]]})],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_same_as_gdal(tmp_path: Path, name: str) -> None:
    assert_same(write(tmp_path / f"{name}.geojson", CASES[name]))


@pytest.mark.parametrize("name", ["types", "nested", "dates", "sparse_keys", "mixed_geometry", "z"])
def test_same_as_gdal_for_geojsonseq(tmp_path: Path, name: str) -> None:
    assert_same(write(tmp_path / f"{name}.geojsonl", CASES[name], sequence=True), sequence=True)


def test_crs_member_and_layouts(tmp_path: Path) -> None:
    features = [feature({"n": i}, {"type": "Point", "coordinates": [530000 + i, 180000]}) for i in range(30)]
    crs = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::27700"}}
    path = write(tmp_path / "bng.geojson", features, crs=crs, name="bng")
    assert assert_same(path) is not None
    pretty = tmp_path / "pretty.geojson"
    pretty.write_text(json.dumps({"type": "FeatureCollection", "crs": crs, "features": features}, indent=2))
    assert_same(pretty)
    lines = tmp_path / "lines.geojson"  # a feature a line, as GDAL writes, behind a BOM
    lines.write_bytes(b"\xef\xbb\xbf{\n\"type\": \"FeatureCollection\",\n\"features\": [\n"
                      + b",\n".join(json.dumps(f).encode() for f in features) + b"\n]\n}\n")
    assert_same(lines)


def test_blocks_cut_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks smaller than a feature, cut inside strings holding brackets and escaped quotes."""
    monkeypatch.setattr(geojson, "BLOCK_BYTES", 64)
    features = [feature({"s": f'{{[ "x\\" ]}} \\\\" {i}', "n": i}) for i in range(40)]
    assert assert_same(write(tmp_path / "tricky.geojson", features)) is not None
    assert assert_same(write(tmp_path / "tricky.geojsonl", features, sequence=True), sequence=True) is not None


def test_random_files_read_as_gdal_reads_them(tmp_path: Path) -> None:
    """Random properties (types mixed across features, keys in varying order, nulls, nesting):
    whatever the fast reader accepts, it reads exactly as GDAL does."""
    rng = random.Random(7)
    values = [None, True, False, 0, 7, -3, 2**31, -(2**33), 0.5, 1e-7, "", "text", "2020-05-06", "12:30:00",
              "2020-05-06T12:30:00", [1, "a"], {"in": 1}, {"in": "x", "deep": {"er": 2.5}}]
    accepted = 0
    for round_ in range(120):
        keys = rng.sample(["a", "b", "c", "d", "e", "f"], rng.randint(1, 6))
        features = []
        for _ in range(rng.randint(1, 8)):
            chosen = rng.sample(keys, rng.randint(0, len(keys)))
            features.append(feature({k: rng.choice(values) for k in chosen}))
        if assert_same(write(tmp_path / f"r{round_}.geojson", features), fast_expected=False) is not None:
            accepted += 1
    assert accepted >= 80


@pytest.mark.parametrize("text", [
    '{"type": "FeatureCollection", "features": [{"type": ',  # truncated
    '{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"a": NaN}, "geometry": null}]}',
    '{"type": "Feature", "properties": {"a": 1}, "geometry": null}',  # a lone feature
    '{"type": "FeatureCollection", "features": [{"type": "Feature", "id": "x", "properties": {}, "geometry": null}]}',
    '{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"a": 9223372036854775808}, '
    '"geometry": null}]}',
    '{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"t": "2020-01-02T10:11:12Z"}, '
    '"geometry": null}]}',  # time zones, as GDAL keeps them
])
def test_left_to_gdal(tmp_path: Path, text: str) -> None:
    path = tmp_path / "odd.geojson"
    path.write_text(text)
    with pytest.raises(geojson.NotFast):
        geojson.spool(path, sequence=False)


def test_empty_collection(tmp_path: Path) -> None:
    path = write(tmp_path / "empty.geojson", [])
    spooled = geojson.spool(path, sequence=False)
    assert spooled.schema.rows == 0 and list(geojson.batches(spooled, 10)) == []


def test_helper_process_reads_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks parsed by a second process come back in file order: the same fields, order and types."""
    monkeypatch.setattr(geojson, "PARALLEL_BYTES", 0)
    monkeypatch.setattr(geojson, "usable_cpus", lambda: 2)
    monkeypatch.setattr(geojson, "BLOCK_BYTES", 512)
    rng = random.Random(3)
    features = [feature({rng.choice("abcdef"): rng.choice([1, 2**40, 0.5, "x", "2020-01-02", None, True]),
                         rng.choice("ghij"): i}) for i in range(300)]
    path = tmp_path / "many.geojson"
    path.write_text('{"type": "FeatureCollection", "features": [\n'
                    + ",\n".join(json.dumps(f) for f in features) + "\n]}")
    assert assert_same(path) is not None


def test_line_break_inside_a_feature(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A feature a line, except one whose property holds objects a line each: cut again by depth."""
    monkeypatch.setattr(geojson, "BLOCK_BYTES", 48)
    lines = [json.dumps(feature({"n": i})) for i in range(6)]
    lines[3] = lines[3].replace('"n": 3', '"n": 3, "parts": [{"x": 1},\n{"x": 2},\n{"x": 3}]')
    path = tmp_path / "parts.geojson"
    path.write_text('{"type": "FeatureCollection", "features": [\n' + ",\n".join(lines) + "\n]}")
    assert assert_same(path) is not None


def test_helper_that_cannot_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(geojson, "PARALLEL_BYTES", 0)
    monkeypatch.setattr(geojson, "usable_cpus", lambda: 2)
    monkeypatch.setattr(geojson.sys, "executable", "/bin/false")
    assert assert_same(write(tmp_path / "alone.geojson", CASES["polygons"])) is not None
