"""``python tests/origin/moto_serve.py HOST PORT``: moto's S3 server (what ``python -m moto.server`` runs) with one
change: conditional writes are atomic, as they are on S3.

moto checks a PUT's ``If-Match``/``If-None-Match`` and then stores the object in a separate step of a threaded
server, so two concurrent PUTs made with the same ETag can both pass the check and both succeed (seen here with 8
writers and both cores busy: 2 rounds in 150 had two winners), and the later one silently replaces the other's
change. S3 itself lets one of them win and answers the others 412 (or 409 ConditionalRequestConflict): the catalog's
optimistic writers (gateway/catalog/files.py) rely on that. Here every write that carries a condition runs alone.
"""
from __future__ import annotations

import os
import sys
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple

CONDITIONS = ("HTTP_IF_MATCH", "HTTP_IF_NONE_MATCH")
WRITES = ("PUT", "POST", "DELETE")


class AtomicConditionalWrites:
    """WSGI middleware: a write with a condition holds one lock from its check to its store (moto does both inside
    the application call; the body is read there too, which on loopback is quick)."""

    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        if environ.get("REQUEST_METHOD") in WRITES and any(c in environ for c in CONDITIONS):
            with self.lock:
                return self.app(environ, start_response)
        return self.app(environ, start_response)


def main(host: str, port: int) -> None:
    os.environ.setdefault("MOTO_PORT", str(port))  # as moto.server
    app = DomainDispatcherApplication(create_backend_app)
    app.debug = True  # as moto.server: errors answered with their traceback in the log
    run_simple(host, port, AtomicConditionalWrites(app), threaded=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
