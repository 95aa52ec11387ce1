"""The operator console: an ASGI app (server-rendered pages, a status event stream, /metrics) over
the same store and file API as the command line."""
