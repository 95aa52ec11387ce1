"""file_import: a loaded file's rows into locaria_data.items, through the real job path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from locaria_batch.dispatch.wait import wait_for_file
from locaria_batch.files import register_upload, update_file
from locaria_batch.storage import open_storage
from tests import loader_fixtures as fx

PARKS = ("Park Name,Summary,Web Site,Kind,lon,lat\n"
         "Hyde Park,Royal park,https://example.org/hyde,royal,-0.1657,51.5073\n"
         "Victoria Park,East London,https://example.org/vic,public,-0.0386,51.5362\n"
         "Clapham Common,,,common,-0.1469,51.4613\n")


def loaded(conn: psycopg.Connection[Any], path: Path, **attributes: Any) -> dict[str, Any]:
    row = wait_for_file(register_upload(conn, open_storage(), path, attributes=attributes), timeout=90)
    return row


def request_import(conn: psycopg.Connection[Any], file_id: int, **attributes: Any) -> dict[str, Any]:
    with conn.transaction():
        update_file(conn, file_id, status="IMPORT_REQUESTED", attributes=attributes, message="Import requested")
    return wait_for_file(file_id, timeout=90)


def items(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    return conn.execute("SELECT i.title, i.attributes, ST_AsText(i.wkb_geometry) AS g, c.category, i.source_fid "
                        "FROM locaria_data.items i JOIN locaria_core.categories c ON c.id = i.category_id "
                        "ORDER BY i.source_fid").fetchall()


def test_import_maps_fields_and_is_safe_to_rerun(conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    conn.execute("INSERT INTO locaria_core.categories (category) VALUES ('Parks'), ('Places')")
    row = loaded(conn, fx.write_text(tmp_path / "parks.csv", PARKS))
    assert row["status"] == "FARGATE_PROCESSED"
    mapping = {"category": "Parks", "title_field": "Park Name", "text_field": "Summary", "url_field": "web_site",
               "tag_field": "Kind"}
    done = request_import(conn, row["id"], **mapping)
    assert done["status"] == "IMPORTED", done["attributes"].get("log_messages")
    assert done["attributes"]["imported_count"] == 3
    got = items(conn)
    assert [i["title"] for i in got] == ["Hyde Park", "Victoria Park", "Clapham Common"]
    assert got[0]["attributes"]["description"] == {"title": "Hyde Park", "text": "Royal park",
                                                   "url": "https://example.org/hyde"}
    assert got[0]["attributes"]["tags"] == ["royal"] and got[0]["g"] == "POINT(-0.1657 51.5073)"
    assert got[0]["attributes"]["data"]["kind"] == "royal" and got[0]["category"] == "Parks"
    statuses = [m.get("message", "") for m in done["attributes"]["log_messages"]]
    assert any("file_import started" in str(s) for s in statuses)

    again = request_import(conn, row["id"], category="Places")
    assert again["status"] == "IMPORTED"
    got = items(conn)
    assert len(got) == 3 and {i["category"] for i in got} == {"Places"}


def test_import_errors_name_the_problem(conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    conn.execute("INSERT INTO locaria_core.categories (category) VALUES ('Parks')")
    row = loaded(conn, fx.write_text(tmp_path / "parks.csv", PARKS))
    failed = request_import(conn, row["id"], category="Shops")
    assert failed["status"] == "ERROR"
    assert failed["attributes"]["error"] == "category 'Shops' does not exist; create it first or use one of: Parks"
    failed = request_import(conn, row["id"], category="Parks", title_field="Nonexistent")
    assert failed["status"] == "ERROR" and "title_field 'Nonexistent' is not a column" in failed["attributes"]["error"]
    assert items(conn) == []


def test_auto_mapped_loads_and_imports_in_one_go(conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    conn.execute("INSERT INTO locaria_core.categories (category) VALUES ('Walks')")
    row = loaded(conn, fx.gpx(tmp_path / "walk.gpx"), auto_mapped=True, category="Walks")
    assert row["status"] == "IMPORTED", row["attributes"].get("log_messages")
    got = items(conn)
    assert len(got) == 4  # two waypoints, one route, one track
    assert {i["title"] for i in got} >= {"Start", "End", "Route", "Walk"}
    missing = loaded(conn, fx.gpx(tmp_path / "walk2.gpx"), auto_mapped=True)
    assert missing["status"] == "ERROR" and "auto_mapped needs a category" in missing["attributes"]["error"]


def test_a_retry_that_works_clears_the_error(conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    from locaria_batch.files import get_file, retry_file
    from locaria_batch.files.categories import add_category

    row = loaded(conn, fx.write_text(tmp_path / "parks.csv", PARKS))
    failed = request_import(conn, row["id"], category="Gardens")
    assert failed["status"] == "ERROR" and "category 'Gardens' does not exist" in failed["attributes"]["error"]
    add_category(conn, "Gardens")
    retry_file(conn, row["id"])
    done = wait_for_file(row["id"], timeout=90)
    assert done["status"] == "IMPORTED", done["attributes"].get("log_messages")
    attributes = get_file(conn, row["id"])["attributes"]
    assert "error" not in attributes and "exit_code" not in attributes
    assert any("does not exist" in str(entry.get("message")) for entry in attributes["log_messages"])


def test_a_file_imports_only_its_own_tables(conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    conn.execute("INSERT INTO locaria_core.categories (category) VALUES ('Parks')")
    first = loaded(conn, fx.write_text(tmp_path / "parks.csv", PARKS))
    second = loaded(conn, fx.write_text(tmp_path / "other.csv", PARKS))
    done = request_import(conn, second["id"], category="Parks", table=f"upload_file_{first['id']}")
    assert done["status"] == "ERROR"
    assert f"belongs to parks.csv (file {first['id']})" in done["attributes"]["error"]
    assert items(conn) == []


def test_a_column_named_like_the_row_alias_loads_and_imports(conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    """Rows are turned into JSON whole (the preview, the items' data): a column named t is just a column."""
    conn.execute("INSERT INTO locaria_core.categories (category) VALUES ('Notes')")
    notes = "name,t,lon,lat\nfirst,hello,-0.1,51.5\nsecond,,0.2,51.6\n"
    row = loaded(conn, fx.write_text(tmp_path / "notes.csv", notes))
    assert row["status"] == "FARGATE_PROCESSED", row["attributes"].get("error")
    assert row["attributes"]["preview"]["features"][0]["properties"]["t"] == "hello"
    done = request_import(conn, row["id"], category="Notes", title_field="name")
    assert done["status"] == "IMPORTED", done["attributes"].get("error")
    assert [i["attributes"]["data"]["t"] for i in items(conn)] == ["hello", None]
