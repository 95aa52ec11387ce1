"""The console's ASGI app: pages, row fragments for live updates, the status event stream, the
actions (each one call of the file API or the job store, as the CLI makes it) and /metrics."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from locaria_batch.dispatch.logs import attempt_log
from locaria_batch.dispatch.store import FilePageQuery, JobFilter, JobState, JobStore
from locaria_batch.errors import LocariaError, NotFound, first_line
from locaria_batch.files import (
    cancel_file,
    download_attributes,
    download_sources,
    get_file,
    register_upload,
    request_download,
    retry_file,
    statuses,
)
from locaria_batch.files.uploads import complete_upload, request_upload
from locaria_batch.settings import settings
from locaria_batch.storage import ObjectNotFound, Storage, download_key, open_storage
from locaria_batch.web import inputs, present
from locaria_batch.web.database import Pools
from locaria_batch.web.events import RESYNC, StatusBroadcaster
from locaria_batch.web.metrics import QueueCollector
from locaria_batch.web.security import Guard

HERE = Path(__file__).resolve().parent
log = logging.getLogger("locaria_batch.web")
PAGE_SIZE = 50
MAX_BULK = 1000  # files one request may retry or cancel
LOG_TAIL_LINES = 200
KEEPALIVE_SECONDS = 15.0
MAX_BODY_BYTES = 1 << 20  # a JSON body of an action; uploads stream, under their own limit
DATABASE_RETRY_SECONDS = 5  # what a page or call refused while the database is away says to wait
ACTIONS = ("retry", "cancel")
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # a download's stored name ({id}.{ext}), nothing else


@dataclass(frozen=True)
class ConsoleConfig:
    db_url: str  # actions (the file API and the job store)
    read_url: str | None = None  # pages and the status stream: a read-only login where there is one
    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None


class Console:
    """What the routes share: the pools, storage, the status broadcaster, templates."""

    def __init__(self, config: ConsoleConfig) -> None:
        self.config = config
        self.pools = Pools(config.db_url, read_url=config.read_url)
        self.storage: Storage = open_storage()
        self.broadcaster = StatusBroadcaster(config.read_url or config.db_url)
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        present.install(self.templates.env)
        self.metrics = CollectorRegistry()
        self.metrics.register(QueueCollector(self.pools.read))
        self.formats = download_formats()

    # -- helpers -----------------------------------------------------------------------------
    def page(self, request: Request, template: str, *, status_code: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("active", template.removesuffix(".html"))
        context.setdefault("page", template.removesuffix(".html"))
        response = self.templates.TemplateResponse(request, template, {"csrf": request.scope["state"]["csrf"],
                                                                       **context}, status_code=status_code)
        response.headers["cache-control"] = "no-store"
        return response

    @contextmanager
    def read(self) -> Iterator[JobStore]:
        with self.pools.read() as conn:
            yield JobStore(conn)

    # -- files -------------------------------------------------------------------------------
    def files_query(self, request: Request) -> FilePageQuery:
        params = request.query_params
        before = params.get("before", "")
        return FilePageQuery(status=inputs.optional_text(params.get("status"), "status"),
                             docker=inputs.optional_text(params.get("docker"), "docker"),
                             text=inputs.text(params.get("q", ""), "the search text").strip() or None,
                             deleted=params.get("deleted") == "1",
                             before_id=inputs.id_text(before, "before") if before else None, limit=PAGE_SIZE)

    def files(self, request: Request) -> Response:
        query = self.files_query(request)
        with self.read() as store:
            rows = store.file_page(query)
            counts = store.file_status_counts()
            dockers = store.docker_names()
            sources = download_sources(store.conn)
        return self.page(request, "files.html", rows=rows, query=query, counts=counts, dockers=dockers,
                         statuses=sorted(set(statuses.ALL) | set(counts)), sources=sources, formats=self.formats,
                         more=len(rows) == PAGE_SIZE)

    def file_rows(self, request: Request) -> Response:
        """Rows of the table: the next page (`before`), or the rows of given ids (live updates)."""
        listed = request.query_params.get("ids", "")
        ids = [inputs.id_text(part, "ids") for part in listed.split(",")][:200] if listed else []
        with self.read() as store:
            if ids:
                rows = store.file_page(FilePageQuery(ids=tuple(ids), limit=len(ids)))
                more = False
            else:
                query = self.files_query(request)
                rows = store.file_page(query)
                more = len(rows) == PAGE_SIZE
        response = self.templates.TemplateResponse(request, "file_rows.html", {"rows": rows})
        response.headers["x-more"] = "1" if more else "0"
        return response

    def file(self, request: Request) -> Response:
        file_id = request.path_params["file_id"]
        with self.read() as store:
            try:
                row = get_file(store.conn, inputs.file_id_in_path(file_id))
            except NotFound:
                return self.page(request, "missing.html", file_id=file_id, status_code=404)
            attempts = store.attempts_of_file(file_id)
        logs = {}
        for attempt in attempts:
            if attempt.handle:
                try:
                    logs[(attempt.job_id, attempt.attempt)] = attempt_log(
                        attempt.handle, settings().logs_dir).tail(LOG_TAIL_LINES)
                except (LocariaError, OSError) as exc:
                    logs[(attempt.job_id, attempt.attempt)] = f"({exc})"
        return self.page(request, "file.html", row=row, attempts=attempts, logs=logs, active="files")

    def download(self, request: Request) -> Response:
        """The object of a completed download: a redirect to its presigned URL on S3, else the bytes."""
        file_id = inputs.file_id_in_path(request.path_params["file_id"])
        with self.pools.read() as conn:
            row = get_file(conn, file_id)  # an unknown id: NotFound, answered 404
        attrs = row["attributes"] or {}
        name = str(attrs.get("fileName") or "")
        if row["status"] != statuses.DOWNLOAD_COMPLETED or attrs.get("expired") or not SAFE_NAME.fullmatch(name):
            return PlainTextResponse(f"file {file_id} has no download to fetch", status_code=404)
        key = download_key(name)
        link = self.storage.url(key)
        if urlsplit(link).scheme in {"http", "https"}:
            return RedirectResponse(link, status_code=303)
        try:
            stream = self.storage.open(key)
        except ObjectNotFound:
            return PlainTextResponse(f"the download of file {file_id} is no longer in storage", status_code=410)

        def chunks() -> Iterator[bytes]:
            with stream:
                while chunk := stream.read(1 << 16):
                    yield chunk

        return StreamingResponse(chunks(), media_type=attrs.get("file_type") or "application/octet-stream",
                                 headers={"content-disposition": f'attachment; filename="{name}"'})

    # -- queue -------------------------------------------------------------------------------
    def queue(self, request: Request) -> Response:
        with self.read() as store:
            stats, alive = store.queue_stats(), store.dispatchers_alive()
        template = "queue_body.html" if request.query_params.get("fragment") else "queue.html"
        return self.page(request, template, stats=stats, alive=alive)

    # -- actions (POST, CSRF-checked by the guard) -------------------------------------------
    async def body(self, request: Request) -> dict[str, Any]:
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > MAX_BODY_BYTES:
                raise inputs.BadInput(f"the request body is larger than {MAX_BODY_BYTES} bytes")
        try:
            value = json.loads(bytes(data) or b"{}")
        except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested beyond reason
            raise inputs.BadInput("the request body is not JSON") from None
        if not isinstance(value, dict):
            raise inputs.BadInput("the request body must be a JSON object")
        return value

    def file_action(self, action: str, file_ids: list[int]) -> dict[str, Any]:
        """Retry or cancel files one by one, as `files retry ID` / `files cancel ID` do."""
        done, refused = [], []
        with self.pools.write() as conn:
            for file_id in file_ids:
                try:
                    result = retry_file(conn, file_id) if action == "retry" else cancel_file(conn, file_id)
                    done.append({"id": file_id, **result})
                except LocariaError as exc:
                    refused.append({"id": file_id, "reason": str(exc)})
        return {"done": done, "refused": refused}

    async def files_action(self, request: Request) -> Response:
        action = request.path_params["action"]
        if action not in ACTIONS:
            return JSONResponse({"error": f"no action {action!r}"}, status_code=404)
        payload = await self.body(request)
        ids = inputs.id_list(payload.get("ids"), "ids", limit=MAX_BULK)
        if not ids:
            return JSONResponse({"error": f"name between 1 and {MAX_BULK} files"}, status_code=400)
        return JSONResponse(await asyncio.to_thread(self.file_action, action, ids))

    def job_filter(self, payload: dict[str, Any]) -> JobFilter:
        states = [JobState(inputs.choice(value, "states", list(JobState)))
                  for value in inputs.items(payload.get("states"), "states")]
        since = inputs.age(payload["since"], "since") if payload.get("since") not in (None, "") else None
        return JobFilter(states=tuple(states), dockers=tuple(inputs.text_list(payload.get("dockers"), "dockers")),
                         since=since)

    async def jobs_action(self, request: Request) -> Response:
        """`jobs retry` / `jobs cancel` with filters: {"count_only": true} answers how many first."""
        action = request.path_params["action"]
        if action not in ACTIONS:
            return JSONResponse({"error": f"no action {action!r}"}, status_code=404)
        payload = await self.body(request)
        where = self.job_filter(payload)
        if where.empty:
            return JSONResponse({"error": "name the jobs: a state, a docker or an age"}, status_code=400)

        def act() -> dict[str, Any]:
            with self.pools.write() as conn:
                store = JobStore(conn)
                ids = store.job_ids(where)
                if payload.get("count_only") or not ids:
                    return {"count": len(ids)}
                result = store.retry_jobs(ids) if action == "retry" else store.cancel_jobs(ids)
                return {"count": len(ids), **result}

        return JSONResponse(await asyncio.to_thread(act))

    async def upload_start(self, request: Request) -> Response:
        """Local storage takes the bytes here; S3 storage gets a presigned PUT the browser sends them to."""
        name = inputs.upload_name((await self.body(request)).get("name"))
        if not hasattr(self.storage, "upload_url"):
            return JSONResponse({"mode": "local"})

        def ticket() -> dict[str, Any]:
            with self.pools.write() as conn:
                made = request_upload(conn, self.storage, name)
            return {"mode": "presigned", "id": made.file_id, "url": made.url}

        return JSONResponse(await asyncio.to_thread(ticket))

    async def upload_local(self, request: Request) -> Response:
        name = inputs.upload_name(request.query_params.get("name"))
        limit = settings().loader_limits.max_file_bytes
        size = 0
        with tempfile.TemporaryDirectory(prefix="locaria-console-") as folder:
            path = Path(folder) / "upload"
            with path.open("wb") as out:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        return JSONResponse({"error": f"{name} is larger than LOCARIA_LOADER_MAX_FILE_BYTES "
                                                      f"({limit} bytes)"}, status_code=413)
                    out.write(chunk)

            def register() -> int:
                with self.pools.write() as conn:
                    return register_upload(conn, self.storage, path, name=name)

            file_id = await asyncio.to_thread(register)
        return JSONResponse({"id": file_id})

    async def upload_complete(self, request: Request) -> Response:
        file_id = inputs.file_id_in_path(request.path_params["file_id"])

        def complete() -> dict[str, Any]:
            with self.pools.write() as conn:
                return complete_upload(conn, self.storage, file_id)

        return JSONResponse(await asyncio.to_thread(complete))

    async def download_request(self, request: Request) -> Response:
        payload = await self.body(request)
        fmt = inputs.choice(payload.get("format"), "format", self.formats)
        table = inputs.optional_text(payload.get("table"), "table")
        category = inputs.optional_text(payload.get("category"), "category")
        attributes = download_attributes(fmt, table=table, categories=[category] if category else [],
                                         name=inputs.optional_text(payload.get("name"), "name", inputs.NAME_LIMIT))

        def make() -> int:
            with self.pools.write() as conn:
                return request_download(conn, attributes)

        return JSONResponse({"id": await asyncio.to_thread(make)})

    # -- live and metrics --------------------------------------------------------------------
    async def events(self, request: Request) -> Response:
        """Server-Sent Events: each file status change as Locaria's {"id": ..., "status": ...}."""
        queue = self.broadcaster.subscribe()

        async def stream() -> AsyncIterator[str]:
            try:
                yield "retry: 1000\n\n"
                while True:
                    try:
                        message = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
                    except TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                    yield f"event: {RESYNC}\ndata: {{}}\n\n" if message == RESYNC else f"data: {message}\n\n"
            finally:
                self.broadcaster.unsubscribe(queue)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"cache-control": "no-store", "x-accel-buffering": "no"})

    def metrics_page(self, request: Request) -> Response:
        return Response(generate_latest(self.metrics), media_type=CONTENT_TYPE_LATEST)


def refusal(request: Request, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """An error answer of one line: JSON {"error": ...} to the API, plain text to pages."""
    if request.scope["path"].startswith("/api/"):
        return JSONResponse({"error": message}, status_code=status, headers=headers)
    return PlainTextResponse(message, status_code=status, headers=headers)


def download_formats() -> list[str]:
    from locaria_batch.jobs.file_download.formats import FORMATS

    return [item.name for item in FORMATS]


def security_headers(app: Any, connect_sources: str) -> Any:
    """Every answer forbids framing, sniffing and outside scripts, and says in Server-Timing how long
    the server took to start it (the benchmark reads that)."""
    policy = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
              f"connect-src 'self'{connect_sources}; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
    extra = [(b"content-security-policy", policy.encode()), (b"x-content-type-options", b"nosniff"),
             (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY")]

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        started = time.perf_counter()

        async def sending(message: Any) -> None:
            if message["type"] == "http.response.start":
                took = f"app;dur={(time.perf_counter() - started) * 1000:.2f}".encode()
                message["headers"] = [*message.get("headers", []), *extra, (b"server-timing", took)]
            await send(message)

        await app(scope, receive, sending)

    return wrapped


def upload_origin(storage: Storage) -> str:
    """Where the browser sends presigned PUTs (S3 storage), for the page's connect-src."""
    presign = getattr(storage, "upload_url", None)
    if presign is None:
        return ""
    parts = urlsplit(presign("incoming/0.csv", 60))
    return f" {parts.scheme}://{parts.netloc}"


def create_app(config: ConsoleConfig) -> Any:
    console = Console(config)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await asyncio.to_thread(console.pools.open)
        console.broadcaster.start()
        try:
            yield
        finally:
            await console.broadcaster.stop()
            await asyncio.to_thread(console.pools.close)

    def sync(handler: Any) -> Any:
        """A blocking handler (it reads the database) run in the thread pool."""
        async def run(request: Request) -> Response:
            return await asyncio.to_thread(handler, request)
        return run

    def actions(handler: Any) -> Any:
        """An action: any error it raises on purpose is the caller's to fix (400), or names nothing (404)."""
        async def run(request: Request) -> Response:
            try:
                return await handler(request)  # type: ignore[no-any-return]
            except LocariaError as exc:
                return refusal(request, 404 if isinstance(exc, NotFound) else 400, str(exc))
        return run

    routes = [
        Route("/", sync(console.files)),
        Route("/files/rows", sync(console.file_rows)),
        Route("/files/{file_id:int}", sync(console.file)),
        Route("/files/{file_id:int}/download", sync(console.download)),
        Route("/queue", sync(console.queue)),
        Route("/events", console.events),
        Route("/metrics", sync(console.metrics_page)),
        Route("/api/files/{action:str}", actions(console.files_action), methods=["POST"]),
        Route("/api/jobs/{action:str}", actions(console.jobs_action), methods=["POST"]),
        Route("/api/uploads", actions(console.upload_start), methods=["POST"]),
        Route("/api/uploads/local", actions(console.upload_local), methods=["POST"]),
        Route("/api/uploads/{file_id:int}/complete", actions(console.upload_complete), methods=["POST"]),
        Route("/api/downloads", actions(console.download_request), methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    async def database_away(request: Request, exc: Exception) -> Response:
        """The database is down or unreachable: say so at once, with when to try again (the pools
        reconnect on their own), instead of an internal error."""
        log.warning("%s %s: the database cannot be reached (%s)", request.method, request.scope["path"],
                    first_line(exc))
        message = "The database cannot be reached right now; the console reconnects on its own. Try again in a moment."
        return refusal(request, 503, message, headers={"Retry-After": str(DATABASE_RETRY_SECONDS)})

    async def input_refused(request: Request, exc: Exception) -> Response:
        """A value the checks refused (400), or an id of nothing (404)."""
        return refusal(request, 404 if isinstance(exc, NotFound) else 400, first_line(exc))

    async def refused_by_database(request: Request, exc: Exception) -> Response:
        """Last resort for a value the checks at the edge let through: the database's refusal is the
        caller's (400), and the traceback is logged, since a check is missing."""
        log.error("%s %s: a value the console did not check", request.method, request.scope["path"], exc_info=exc)
        return refusal(request, 400, f"the database refused a value of this request: {first_line(exc)}")

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={
        psycopg.OperationalError: database_away, inputs.BadInput: input_refused, NotFound: input_refused,
        psycopg.DataError: refused_by_database})
    app.state.console = console
    guarded = Guard(app, config.host, config.port, config.token)
    return security_headers(guarded, upload_origin(console.storage))

