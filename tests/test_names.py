"""The one unique-name rule, and the names each format's caller gets from it."""

from __future__ import annotations

from locaria_batch.jobs.file_download.ogr import shapefile_field_names
from locaria_batch.jobs.file_download.xlsx import sheet_names
from locaria_batch.jobs.file_loader.columns import unique_identifiers
from locaria_batch.jobs.file_loader.loader import table_names
from locaria_batch.jobs.names import unique_name


def test_first_free_name_is_taken_and_recorded() -> None:
    taken = {"name", "name_2"}
    assert unique_name("name", taken) == "name_3"
    assert unique_name("other", taken) == "other"
    assert taken == {"name", "name_2", "name_3", "other"}


def test_a_name_that_is_too_long_is_cut_so_the_suffix_fits() -> None:
    taken: set[str] = set()
    assert unique_name("abcdefghijkl", taken, max_length=10) == "abcdefghij"
    assert unique_name("abcdefghijkl", taken, max_length=10) == "abcdefgh_2"
    assert [unique_name("abcdefghij", taken, max_length=10) for _ in range(9)][-1] == "abcdefg_11"


def test_collisions_after_cutting() -> None:
    """Two stems that differ only beyond the limit become the same name once cut."""
    taken: set[str] = set()
    names = [unique_name(stem, taken, max_length=8) for stem in ("boundary_a", "boundary_b", "boundary_c")]
    assert names == ["boundary", "bounda_2", "bounda_3"]
    assert all(len(n) <= 8 for n in names)


def test_a_cut_counted_in_utf8_bytes_never_splits_a_character() -> None:
    taken: set[str] = set()
    stem = "é" * 40  # 80 bytes
    first = unique_name(stem, taken, max_length=63, utf8_bytes=True)
    second = unique_name(stem, taken, max_length=63, utf8_bytes=True)
    assert first == "é" * 31  # 62 bytes: half of a 32nd é would not be a character
    assert second == "é" * 30 + "_2"
    assert len(second.encode()) <= 63
    # counted in characters, the same stem keeps more
    assert unique_name(stem, set(), max_length=63) == stem


def test_a_cut_in_bytes_with_a_three_byte_character_at_the_edge() -> None:
    taken: set[str] = set()
    assert unique_name("ab€cd", taken, max_length=6, utf8_bytes=True) == "ab€c"  # 2 + 3 + 1 bytes
    assert unique_name("ab€cd", taken, max_length=6, utf8_bytes=True) == "ab_2"  # € is 3 bytes: 2 + 3 + 2 > 6


def test_case_folding() -> None:
    taken = {"name"}  # lower-cased when names are compared regardless of case
    assert unique_name("Name", taken, fold_case=True) == "Name_2"
    assert unique_name("NAME", taken, fold_case=True) == "NAME_3"
    assert taken == {"name", "name_2", "name_3"}
    assert unique_name("Name", {"name"}) == "Name"  # case matters by default


def test_separator_and_trim() -> None:
    taken = {"roads"}
    assert unique_name("roads'", taken, separator="~", trim="'") == "roads~2"
    assert unique_name("a'''", set(), max_length=3, trim="'") == "a"


def test_postgres_identifiers() -> None:
    long = "x" * 70
    assert unique_identifiers(["Name", "name", "NAME", "ogc_fid", long, long]) == [
        "name", "name_2", "name_3", "ogc_fid_2", "x" * 63, "x" * 61 + "_2"]


def test_table_names_per_layer() -> None:
    assert table_names("upload_file_1", ["roads"]) == ["upload_file_1"]
    assert table_names("t", ["Roads", "roads", "ROADS"]) == ["t_roads", "t_roads_2", "t_roads_3"]
    long = "b" * 70
    assert table_names("t", [long, long]) == [("t_" + long)[:63], ("t_" + long)[:61] + "_2"]


def test_shapefile_fields_are_ten_characters_unique_regardless_of_case() -> None:
    assert shapefile_field_names(["population", "Population", "population_2021", "", "éte"]) == [
        "population", "Populati_2", "populati_3", "field", "ete"]


def test_sheet_names_are_31_characters_unique_regardless_of_case() -> None:
    long = "s" * 28 + "'xyz"  # cut for a suffix, it would end in an apostrophe
    assert sheet_names(["Parks", "parks", "history", "a/b", long, long]) == [
        "Parks", "parks~2", "History_", "a_b", long[:31], "s" * 28 + "~2"]
