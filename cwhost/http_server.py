"""The production HTTP server: waitress, answering its own protocol errors in the API's JSON form.

Waitress refuses some requests before any WSGI application sees them (a raw
NUL in a header, bytes outside ASCII in the request target, a header section
too large) and answers them in plain text by default. A client of this API
gets the one error format whoever refused it.
"""

from __future__ import annotations

import json
import uuid

import waitress
from flask import Flask
from waitress.channel import HTTPChannel
from waitress.task import ErrorTask

from cwhost.api import error_body


class JsonErrorTask(ErrorTask):
    def execute(self):
        error = self.request.error
        request_id = uuid.uuid4().hex
        body = json.dumps(error_body(error.code, f"{error.reason}: {error.body}", request_id)).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.extend([("Content-Type", "application/json"), ("X-Request-Id", request_id)])
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class JsonErrorChannel(HTTPChannel):
    error_task_class = JsonErrorTask


def serve(app: Flask, **options) -> None:
    """Serve until interrupted; ``options`` are waitress's."""
    server = waitress.create_server(app, **options)
    server.channel_class = JsonErrorChannel
    server.run()
