"""`locaria-batch categories`: the categories search data is imported into and downloaded by."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from locaria_batch.cli.common import (
    AttrOption,
    JsonOption,
    command,
    consoles,
    database,
    group,
    parse_attrs,
    print_json,
)
from locaria_batch.cli.output import has_control, one_line

categories_app = group("Categories of search data (locaria_core.categories): list, add, remove.")
NameArgument = Annotated[str, typer.Argument(metavar="NAME", help="The category's name (case-sensitive).")]


def printable_name(name: str) -> str:
    if has_control(name):
        raise typer.BadParameter(f"{name!r} holds a control character (a line break, a tab, an escape); "
                                 "give a name without one")
    return name


NewNameArgument = Annotated[str, typer.Argument(metavar="NAME", callback=printable_name,
                                                help="The category's name (case-sensitive).")]


@command(categories_app, "list")
def categories_list(as_json: JsonOption = False) -> None:
    """Every category and how many items it holds."""
    from locaria_batch.files.categories import list_categories

    with database() as conn:
        rows = list_categories(conn)
    if as_json:
        print_json(rows)
        return
    table = Table("id", "category", "items")
    for row in rows:
        table.add_row(str(row["id"]), one_line(row["category"]), str(row["items"]))
    consoles.out.print(table)


@command(categories_app, "add")
def categories_add(name: NewNameArgument, attr: AttrOption = [],  # noqa: B006 - Typer needs a literal default
                   as_json: JsonOption = False) -> None:
    """Add a category (one that exists already is left as it is)."""
    from locaria_batch.files.categories import add_category

    with database() as conn:
        result = add_category(conn, name, parse_attrs(attr))
    if as_json:
        print_json(result)
    else:
        verb = "added" if result["created"] else "already exists:"
        consoles.out.print(Text(f"category {verb} {result['category']} (id {result['id']})"))


@command(categories_app, "remove")
def categories_remove(
    name: NameArgument,
    with_items: Annotated[bool, typer.Option("--with-items", help="Also remove the items it holds.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Remove a category; one that holds items only with --with-items."""
    from locaria_batch.files.categories import remove_category

    with database() as conn:
        result = remove_category(conn, name, with_items)
    if as_json:
        print_json(result)
    else:
        items = f" and its {result['removed_items']} items" if result["removed_items"] else ""
        consoles.out.print(Text.assemble("removed category ", one_line(result["category"]), items))
