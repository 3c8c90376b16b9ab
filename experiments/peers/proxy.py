#!/usr/bin/env python3
"""An HTTP/1.1 service that calls another one, for mop's propagation experiment: every GET is
answered after a GET /ok to the upstream on 127.0.0.1:UPSTREAM (one keep-alive connection per
server thread). It sends no trace header of its own: whatever links its spans is mop's doing.

Usage: proxy.py PORT UPSTREAM   (PORT 0: any free port; prints `port N` once it listens)
"""

import http.client
import http.server
import sys
import threading

UPSTREAM = int(sys.argv[2])
local = threading.local()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format, *args):  # noqa: A002
        pass

    def do_GET(self):
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection("127.0.0.1", UPSTREAM, timeout=10)
        try:
            conn.request("GET", "/ok")
            r = conn.getresponse()
            upstream = r.read()
            status = 200 if r.status == 200 else 502
        except (OSError, http.client.HTTPException):
            local.conn = None
            upstream, status = b"", 502
        body = b"proxied " + upstream
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    print(f"port {server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
