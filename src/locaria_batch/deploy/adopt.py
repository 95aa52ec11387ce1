"""`locaria-batch locaria adopt` and `rollback`: switch a live Locaria database from Locaria's own
batch system (the files trigger invoking the ecsRunner Lambda through aws_lambda_interface, tasks
polling every REGISTERED row) to Locaria Batch, in place and in one transaction, and back.

Adopting sets Locaria's file functions and trigger aside (db/adoption.py), installs our schema
beside Locaria's tables, registers docker/dockers.json, maps parameters.fargate_config to the
stage's stack (or, without one, takes its entries out, for the local and docker runners), and takes
over the rows Locaria left: stuck in FARGATE_PROCESSING / DOWNLOAD_PROCESSING (queued again, or
failed with a message) and waiting in REGISTERED / DOWNLOAD_REQUESTED (queued).  No row is deleted.
A dry run does all of it and rolls the transaction back.  Rolling back restores Locaria's functions,
trigger and fargate_config; our tables stay, and `adopt` takes the database over again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from locaria_batch.db import dockers, scalar
from locaria_batch.db.adoption import (
    CORE,
    ORIGINAL,
    PARKED,
    TAKEN_OVER,
    AdoptionError,
    AdoptionState,
    adoption_state,
    create_triggers,
    drop_file_triggers,
    functions,
    last_entry,
    locaria_functions,
    move_functions,
    record,
)
from locaria_batch.db.migrate import MIGRATION_LOCK, migrate
from locaria_batch.deploy.stages import Target
from locaria_batch.fargate import load_fargate_config, save_fargate_config

WAKE_TRIGGER = "jobs_wake_launcher"  # 0031: invokes the launcher Lambda as each job is queued
UNUSED_PARAMETERS = ("file_upload", "file_download")  # read by Locaria's containers, never used


@dataclass(frozen=True)
class Stack:
    """The stage's deployed stack, whose task definitions and launcher fargate_config will name."""

    target: Target
    outputs: dict[str, str]


@dataclass
class Report:
    action: str
    database: str
    dry_run: bool
    steps: list[tuple[str, str]] = field(default_factory=list)  # (what, what happened)
    details: dict[str, Any] = field(default_factory=dict)

    def step(self, what: str, detail: str) -> None:
        self.steps.append((what, detail))

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "steps": [{"what": what, "detail": detail} for what, detail in self.steps]}


def _ids(rows: list[dict[str, Any]]) -> str:
    return ", ".join(str(row["id"]) for row in rows)


def _grouped(rows: list[dict[str, Any]], *keys: str) -> str:
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(" → ".join(str(row[key]) for key in keys), []).append(row)
    return "; ".join(f"{label}: {_ids(members)}" for label, members in groups.items())


def map_fargate_config(original: dict[str, Any], names: list[str], stack: Stack | None,
                       report: Report) -> dict[str, Any]:
    """Our entries for our dockers (from the stack), Locaria's others kept as they were."""
    config = dict(original)
    for name in names:
        before = original.get(name) or {}
        what = f"fargate_config.{name}"
        if stack is None:
            if config.pop(name, None) is not None:
                report.step(what, "taken out (kept for rollback): with no stack, jobs run on the local or docker "
                                  "runner; `locaria-batch deploy apply` records where they run on Fargate")
            continue
        from locaria_batch.deploy.workflow import fargate_target

        after = fargate_target(stack.target, name, stack.outputs).to_entry()
        changed = [f"{key} {before[key]} → {after[key]}" for key in after
                   if key in before and before[key] != after[key]]
        added = [key for key in after if key not in before]
        config[name] = after
        report.step(what, "; ".join(changed + ([f"added {', '.join(added)}"] if added else [])) or "unchanged")
    for name in original:
        if name not in names:
            report.step(f"fargate_config.{name}", "kept as it was: no docker of that name here, so nothing launches it")
    return config


def parameters_kept(conn: psycopg.Connection[Any], report: Report) -> None:
    rows = conn.execute("SELECT parameter_name, parameter FROM locaria_core.parameters WHERE usage = 'SYSTEM' "
                        "AND parameter_name = ANY(%s) ORDER BY 1",
                        [["lambda_config", *UNUSED_PARAMETERS]]).fetchall()
    for row in rows:
        name = row["parameter_name"]
        if name == "lambda_config" and (row["parameter"] or {}).get("ws_broadcast"):
            report.step("lambda_config.ws_broadcast", "kept: the files_broadcast trigger sends Locaria's "
                                                      "fileStatus packets to the admin pages, now with the file id")
        elif name in UNUSED_PARAMETERS:
            report.step(name, "kept: neither system reads it")


def set_wake_trigger(conn: psycopg.Connection[Any], enabled: bool) -> bool:
    if not scalar(conn, "SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = %s "
                        "AND tgrelid = 'locaria_core.jobs'::regclass)", [WAKE_TRIGGER]):
        return False
    conn.execute(sql.SQL("ALTER TABLE locaria_core.jobs {} TRIGGER {}").format(
        sql.SQL("ENABLE" if enabled else "DISABLE"), sql.Identifier(WAKE_TRIGGER)))
    return True


def take_over_files(conn: psycopg.Connection[Any], fail_stuck: bool, report: Report) -> dict[str, Any]:
    # one launcher pass (its schedule) takes the whole backlog, instead of one invocation per row
    woken = set_wake_trigger(conn, False)
    files = dict(scalar(conn, "SELECT locaria_core.take_over_files(%s)", [fail_stuck]))
    if woken:
        set_wake_trigger(conn, True)
    if files["requeued"]:
        report.step("files stuck", f"{len(files['requeued'])} queued again "
                                   f"({_grouped(files['requeued'], 'from', 'to')})")
    if files["failed"]:
        report.step("files stuck", f"{len(files['failed'])} failed with a message "
                                   f"({_grouped(files['failed'], 'from', 'to')})")
    if not files["requeued"] and not files["failed"]:
        report.step("files stuck", "none in FARGATE_PROCESSING or DOWNLOAD_PROCESSING")
    report.step("files waiting", f"{len(files['queued'])} queued ({_grouped(files['queued'], 'status')})"
                if files["queued"] else "none in REGISTERED or DOWNLOAD_REQUESTED")
    return files


def adopt(conn: psycopg.Connection[Any], database: str, dockers_file: Path, *, stack: Stack | None = None,
          fail_stuck: bool = False, dry_run: bool = False) -> Report:
    """Take the database over from Locaria's batch system (see the module's comment)."""
    report = Report("adopt", database, dry_run)
    state = adoption_state(conn)
    if state is AdoptionState.ADOPTED:
        at = last_entry(conn, "adopt")["at"]
        raise AdoptionError(f"{database} was taken over on {at:%Y-%m-%d %H:%M}: nothing to adopt "
                            "(`locaria-batch db migrate` applies newer migrations; `locaria-batch locaria rollback` "
                            "hands it back)")
    if state is AdoptionState.OURS:
        raise AdoptionError(f"{database} is a Locaria Batch database from the start, not Locaria's: nothing to adopt")
    if state is AdoptionState.NONE:
        raise AdoptionError(f"{database} has no Locaria tables (locaria_core.files): point at Locaria's database")
    specs = dockers.load(dockers_file)
    with conn.transaction(force_rollback=dry_run):
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [MIGRATION_LOCK])
        theirs = drop_file_triggers(conn)
        set_aside = move_functions(conn, TAKEN_OVER, CORE, ORIGINAL)
        again = state is AdoptionState.ROLLED_BACK
        # every other function Locaria has stays its own, whatever later migrations define
        cms = locaria_functions(conn) if again else functions(conn, CORE)
        if again:
            move_functions(conn, TAKEN_OVER, PARKED, CORE)
            create_triggers(conn, last_entry(conn, "rollback")["detail"]["saved_triggers"])
        # from here on the database counts as adopted: migrations keep Locaria's own functions
        record(conn, "adopt", {"saved_triggers": theirs, "locaria_functions": cms})
        applied = migrate(conn)
        ours = sorted(scalar(conn, "SELECT array_agg(tgname::text) FROM pg_trigger WHERE tgrelid = "
                                   "'locaria_core.files'::regclass AND NOT tgisinternal") or [])
        report.step("schema", (f"{len(applied)} migration(s) applied beside Locaria's tables"
                               if applied else "our schema was there already") +
                    f"; Locaria's {', '.join(set_aside)} set aside in schema {ORIGINAL} for a rollback")
        report.step("trigger", f"removed {', '.join(theirs) or 'none'} (Locaria's: aws_lambda_interface → the "
                               f"ecsRunner Lambda); installed {', '.join(ours)}")
        report.step("dockers", f"{', '.join(dockers.sync(conn, specs))} registered from {dockers_file}")
        original = load_fargate_config(conn)
        config = map_fargate_config(original, list(specs), stack, report)
        if config != original:
            save_fargate_config(conn, config)
        parameters_kept(conn, report)
        files = take_over_files(conn, fail_stuck, report)
        report.details = {"migrations": [f"{m.version:04d}_{m.name}" for m in applied], "set_aside": set_aside,
                          "triggers": {"removed": sorted(theirs), "installed": ours}, "dockers": list(specs),
                          "fargate_config": config, "files": files, "again": again}
        conn.execute(f"UPDATE {ORIGINAL}.adoption_log SET detail = detail || %s "
                     f"WHERE id = (SELECT max(id) FROM {ORIGINAL}.adoption_log)",
                     [Jsonb({**report.details, "original_fargate_config": original or None, "fail_stuck": fail_stuck,
                             "stack": stack.target.stack_name if stack else None})])
    return report


def rollback(conn: psycopg.Connection[Any], database: str, *, dry_run: bool = False) -> Report:
    """Hand the database back to Locaria's batch system."""
    report = Report("rollback", database, dry_run)
    state = adoption_state(conn)
    if state is not AdoptionState.ADOPTED:
        raise AdoptionError(f"{database} is not taken over from Locaria ({state}): nothing to roll back")
    with conn.transaction(force_rollback=dry_run):
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [MIGRATION_LOCK])
        handed = dict(scalar(conn, "SELECT locaria_core.hand_back_files()"))
        if "error" in handed:
            running = ", ".join(str(file_id) for file_id in handed["running"])
            raise AdoptionError(f"jobs are running for files {running}: wait for them to end (`locaria-batch files "
                                "show ID`) or cancel them (`locaria-batch files cancel ID`), then roll back")
        adopted = last_entry(conn, "adopt")["detail"]
        ours = drop_file_triggers(conn)
        parked = move_functions(conn, TAKEN_OVER, CORE, PARKED)
        restored = move_functions(conn, TAKEN_OVER, ORIGINAL, CORE)
        create_triggers(conn, adopted["saved_triggers"])
        report.step("functions", f"Locaria's {', '.join(restored)} back in {CORE}; ours parked in {PARKED}")
        report.step("trigger", f"removed {', '.join(ours)}; Locaria's {', '.join(adopted['saved_triggers'])} restored")
        original = adopted.get("original_fargate_config")
        save_fargate_config(conn, original or {})
        report.step("fargate_config", "Locaria's restored" if original else "emptied, as it was")
        released = handed["released"]
        report.step("files", (f"{len(released)} queued job(s) ended; their files wait for Locaria's next task "
                              f"({_grouped(released, 'status')})") if released else "no queued job")
        if handed["uploading"]:
            report.step("uploads", f"files {', '.join(map(str, handed['uploading']))} are UPLOADING, which Locaria "
                                   "never completes: complete or delete them")
        report.details = {"triggers": {"removed": sorted(ours), "restored": sorted(adopted["saved_triggers"])},
                          "functions": {"restored": restored, "parked": parked}, "files": handed}
        record(conn, "rollback", {**report.details, "saved_triggers": ours})
    return report
