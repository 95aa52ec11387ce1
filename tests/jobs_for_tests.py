"""Job handlers used by the dispatch tests (they run in real job subprocesses)."""

from __future__ import annotations

import os
import subprocess
import time

import psycopg

from locaria_batch.job import JobContext, JobError, JobResult


def record(ctx: JobContext) -> JobResult:
    """Note every execution, so a test can prove each job ran exactly once."""
    ctx.conn.execute(
        "INSERT INTO public.test_runs (file_id, job_id, attempt, pid) VALUES (%s, %s, %s, %s)",
        [ctx.file_id, ctx.job_id, ctx.attempt, os.getpid()],
    )
    ctx.conn.commit()
    time.sleep(float(ctx.attributes.get("sleep", 0)))
    return JobResult(attributes={"ran_in": os.getpid()})


def sleeper(ctx: JobContext) -> JobResult:
    """Report its pid, then sleep in small steps (so cancellation is noticed)."""
    seconds = float(ctx.attributes.get("sleep", 60))
    ctx.conn.execute("INSERT INTO public.test_runs (file_id, job_id, attempt, pid) VALUES (%s, %s, %s, %s)",
                     [ctx.file_id, ctx.job_id, ctx.attempt, os.getpid()])
    ctx.conn.commit()
    deadline = time.monotonic() + seconds
    done = 0
    while time.monotonic() < deadline:
        time.sleep(0.05)
        done += 1
        ctx.progress(done)
    return JobResult(attributes={"slept": seconds})


def refuse(ctx: JobContext) -> JobResult:
    raise JobError(f"file {ctx.attributes.get('name')} is not acceptable: send a CSV instead")


def explode(ctx: JobContext) -> JobResult:
    raise ZeroDivisionError("division by zero")


def noop(ctx: JobContext) -> JobResult:
    return JobResult()


def report_environment(ctx: JobContext) -> JobResult:
    return JobResult(attributes={"marker": os.environ.get("LOCARIA_TEST_MARKER")})


def hold_the_gil(ctx: JobContext) -> JobResult:
    """Report its pid, then sit in a C call that keeps the GIL (PyDLL does not release it): the
    heartbeat thread cannot run, and no Python signal handler either."""
    import ctypes

    ctx.conn.execute("INSERT INTO public.test_runs (file_id, job_id, attempt, pid) VALUES (%s, %s, %s, %s)",
                     [ctx.file_id, ctx.job_id, ctx.attempt, os.getpid()])
    ctx.conn.commit()
    ctypes.PyDLL("libc.so.6").sleep(int(ctx.attributes.get("sleep", 60)))
    return JobResult()


def unpack_then_sleep(ctx: JobContext) -> JobResult:
    """Leave a temporary folder with a file in it (as an unzip does), then sleep."""
    import tempfile

    folder = tempfile.mkdtemp(prefix="locaria-test-unpack-")
    with open(os.path.join(folder, "data.bin"), "wb") as out:
        out.write(b"x" * 1024)
    return sleeper(ctx)


# What a hostile job tries with the credentials it finds; each must be refused by the database.
ATTACKS = {
    "update another file's row": "UPDATE locaria_core.files SET status = 'HACKED' WHERE id = {victim_file}",
    "update_file on another file": "SELECT locaria_core.update_file('{{\"id\": {victim_file}, \"status\": \"X\"}}')",
    "add_file": "SELECT locaria_core.add_file('{{\"file_attributes\": {{}}}}')",
    "the gateway": "SELECT locaria_core.locaria_internal_gateway('{{\"method\": \"get_files\"}}')",
    "read the files table": "SELECT * FROM locaria_core.files",
    "change a docker's command": "UPDATE locaria_core.dockers SET command = ARRAY['sh', '-c', 'id']",
    "read attempt tokens": "SELECT attempt_token FROM locaria_core.jobs",
    "overwrite another job's token": "UPDATE locaria_core.jobs SET attempt_token = gen_random_uuid() "
                                     "WHERE id = {victim_job}",
    "claim jobs": "SELECT * FROM locaria_core.claim_jobs('intruder', 10, 30, 'local')",
    "fail another job": "SELECT locaria_core.job_attempt_failed({victim_job}, gen_random_uuid(), 1, 'x')",
    "write job_events": "INSERT INTO locaria_core.job_events (job_id, event) VALUES ({victim_job}, 'forged')",
    "read parameters": "SELECT * FROM locaria_core.parameters",
    "get_parameters": "SELECT locaria_core.get_parameters('{{\"parameter_name\": \"fargate_config\", "
                      "\"acl\": {{\"_groups\": [\"Admins\"]}}}}')",
    "set_parameters": "SELECT locaria_core.set_parameters('{{\"parameter_name\": \"fargate_config\", "
                      "\"parameters\": {{}}, \"acl\": {{\"_groups\": [\"Admins\"]}}}}')",
    "drop another file's table": "DROP TABLE locaria_uploads.upload_file_{victim_file}",
    "empty another file's table": "DELETE FROM locaria_uploads.upload_file_{victim_file}",
    "COPY TO PROGRAM": "COPY (SELECT 1) TO PROGRAM 'touch /tmp/locaria-intruder'",
    "COPY FROM PROGRAM": "COPY locaria_uploads.intruder_scratch FROM PROGRAM 'id'",
    "write a server file": "COPY (SELECT 1) TO '/tmp/locaria-intruder'",
    "read a server file": "SELECT pg_read_file('/etc/passwd')",
    "create a function in locaria_core": "CREATE FUNCTION locaria_core.intruder() RETURNS int LANGUAGE sql "
                                         "AS 'SELECT 1'",
    "become the dispatcher": "SET ROLE locaria_dispatcher",
    "promote itself": "ALTER ROLE current_user CREATEROLE",
}


def intruder(ctx: JobContext) -> JobResult:
    """Try every attack on its own connection (each in a savepoint); report what the database said."""
    victims = {"victim_file": int(ctx.attributes["victim_file"]), "victim_job": int(ctx.attributes["victim_job"])}
    ctx.conn.execute("CREATE TABLE locaria_uploads.intruder_scratch (line text)")  # its own staging table
    outcomes = {}
    for attack, statement in ATTACKS.items():
        try:
            with ctx.conn.transaction():
                ctx.conn.execute(statement.format(**victims))
            outcomes[attack] = "allowed"
        except psycopg.Error as exc:
            outcomes[attack] = f"refused: {exc.sqlstate}"
    ctx.conn.execute("DROP TABLE locaria_uploads.intruder_scratch")
    row = ctx.conn.execute("SELECT current_user AS who").fetchone()
    ctx.conn.commit()
    found = sorted(name for name in os.environ if name.endswith(("DB_URL", "DATABASE_URL", "_SECRET"))
                   or name.startswith("PGPASS"))
    return JobResult(attributes={"outcomes": outcomes, "connected_as": row["who"] if row else None,
                                 "credential_variables": found})


def long_statement(ctx: JobContext) -> JobResult:
    """Check that its session watches for a vanished client, report its pid, then run one statement for a
    minute (as a long index build would)."""
    watch = ctx.conn.execute("SELECT current_setting('client_connection_check_interval') AS interval, "
                             "current_setting('tcp_keepalives_idle') AS idle").fetchone()
    if (watch["interval"], watch["idle"]) != ("2s", "30"):
        raise JobError(f"the job's session does not watch its client: {watch}")
    ctx.conn.execute("INSERT INTO public.test_runs (file_id, job_id, attempt, pid) VALUES (%s, %s, %s, %s)",
                     [ctx.file_id, ctx.job_id, ctx.attempt, os.getpid()])
    ctx.conn.commit()
    ctx.conn.execute("SELECT pg_sleep(60), 'locaria long statement'")
    return JobResult()


def session_probe(ctx: JobContext) -> JobResult:
    """Record its database session and what it finds there of earlier jobs, then leave behind what a
    careless job could: a setting, a temporary table, a session lock, a prepared statement, a listener
    (and, when its file asks, a process of its own left running, or a transaction left open and an
    abrupt exit)."""
    found = ctx.conn.execute(
        "SELECT pg_backend_pid() AS backend, current_setting('locaria.leak', true) AS setting, "
        "to_regclass('pg_temp.leak') IS NOT NULL AS temp_table, "
        "(SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory') AS locks, "
        "(SELECT count(*) FROM pg_prepared_statements) AS prepared, "
        "(SELECT count(*) FROM pg_listening_channels()) AS listening").fetchone()
    ctx.conn.execute("INSERT INTO public.test_runs (file_id, job_id, attempt, pid) VALUES (%s, %s, %s, %s)",
                     [ctx.file_id, ctx.job_id, ctx.attempt, found["backend"]])
    ctx.conn.execute("SELECT set_config('locaria.leak', 'left behind', false), pg_advisory_lock(42)")
    ctx.conn.execute("CREATE TEMP TABLE leak (x int)")
    ctx.conn.execute("PREPARE leak AS SELECT 1")
    ctx.conn.execute("LISTEN leak")
    ctx.conn.commit()
    if ctx.attributes.get("leave_child"):  # it would hold the connection too
        subprocess.Popen(["sleep", "5"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if ctx.attributes.get("exit_code"):
        ctx.conn.execute("SELECT 1")  # a transaction open, never ended
        os._exit(int(ctx.attributes["exit_code"]))
    return JobResult(attributes={"found": {key: str(value) for key, value in found.items()}})
