#!/usr/bin/env python3
"""A small WSGI application behind a minimal threaded HTTP/1.1 keep-alive gateway (the
standard library's `ThreadingHTTPServer`; werkzeug's development server closes every
connection), for mop's experiments. Optionally instrumented with the OpenTelemetry SDK (the baseline that mop's
overhead is compared against): `--otel` wraps the app in `OpenTelemetryMiddleware` with a
`TracerProvider` whose `BatchSpanProcessor` hands every span to an exporter that drops it (so
the SDK pays for creating, recording and batching spans, but not for any network export).

Usage: wsgi_app.py [--otel] PORT   (0: any free port; prints `port N` once it listens)

Endpoints: GET /hello -> 200 "hello world\n"; GET /work?n=N -> 200 after N rounds of sha256;
anything else -> 404.
"""

import hashlib
import http.server
import io
import sys


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path == "/hello":
        body = b"hello world\n"
        status = "200 OK"
    elif path == "/work":
        n = int((environ.get("QUERY_STRING", "n=100").split("=") + ["100"])[1] or 100)
        h = b"x"
        for _ in range(n):
            h = hashlib.sha256(h).digest()
        body = h.hex().encode() + b"\n"
        status = "200 OK"
    else:
        body = b"not found\n"
        status = "404 Not Found"
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def with_otel(wsgi):
    from opentelemetry import trace
    from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class DropExporter(SpanExporter):
        def export(self, spans):
            return SpanExportResult.SUCCESS

        def shutdown(self):
            pass

    provider = TracerProvider(resource=Resource.create({"service.name": "wsgi-otel"}))
    provider.add_span_processor(BatchSpanProcessor(DropExporter()))
    trace.set_tracer_provider(provider)
    return OpenTelemetryMiddleware(wsgi)


def gateway(wsgi):
    """A BaseHTTPRequestHandler that runs `wsgi` for every request, keeping connections open."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, format, *args):  # noqa: A002 (the base class's signature)
            pass

        def handle_any(self):
            path, _, query = self.path.partition("?")
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            environ = {
                "REQUEST_METHOD": self.command,
                "SCRIPT_NAME": "",
                "PATH_INFO": path,
                "QUERY_STRING": query,
                "SERVER_NAME": "127.0.0.1",
                "SERVER_PORT": str(self.server.server_port),
                "SERVER_PROTOCOL": self.request_version,
                "REMOTE_ADDR": self.client_address[0],
                "CONTENT_LENGTH": str(length),
                "wsgi.version": (1, 0),
                "wsgi.url_scheme": "http",
                "wsgi.input": io.BytesIO(body),
                "wsgi.errors": sys.stderr,
                "wsgi.multithread": True,
                "wsgi.multiprocess": False,
                "wsgi.run_once": False,
            }
            for k, v in self.headers.items():
                environ["HTTP_" + k.upper().replace("-", "_")] = v
            started = {}

            def start_response(status, headers, exc_info=None):
                started["status"], started["headers"] = status, headers

            chunks = wsgi(environ, start_response)
            try:
                out = b"".join(chunks)
            finally:
                if hasattr(chunks, "close"):
                    chunks.close()
            code, _, reason = started["status"].partition(" ")
            self.send_response(int(code), reason)
            for k, v in started["headers"]:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(out)

        do_GET = do_POST = handle_any

    return Handler


def main():
    args = sys.argv[1:]
    otel = "--otel" in args
    args = [a for a in args if a != "--otel"]
    port = int(args[0]) if args else 0
    wsgi = with_otel(app) if otel else app
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), gateway(wsgi))
    server.daemon_threads = True
    print(f"port {server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
