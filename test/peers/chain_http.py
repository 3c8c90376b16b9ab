#!/usr/bin/env python3
"""A thread-per-request HTTP/1.1 service that may call another one, for mop's trace-context
tests (standard library only).

    chain_http.py [--backend URL]

Binds 127.0.0.1 on a free port and prints `port N` on stdout once it listens. It is a
`ThreadingHTTPServer` (one thread per connection, keep-alive): every request of a
connection is read, handled and answered on that connection's thread.

  GET /work?delay_ms=D&...   without --backend: sleeps D ms (default 0), then 200 with the
                             body "backend\\n".
                             with --backend URL: on the same thread, sends
                             GET URL/work?<same query> on a new connection (closed after),
                             then 200 with the body "front+" followed by the backend's body
                             ("front+backend\\n"). A backend status other than 200 gives 502.
  anything else              404, body "not found\\n"

It sends no trace-context header of its own: linking its spans is the agent's job.
"""

import argparse
import http.client
import http.server
import sys
import time
import urllib.parse

BACKEND_BODY = b"backend\n"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    backend = None  # (host, port) when this is a frontend

    def log_message(self, format, *args):  # noqa: A002 (the base class's signature)
        pass

    def _send(self, status, body):
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path != "/work":
            self._send(404, b"not found\n")
            return
        if self.backend is None:
            query = dict(urllib.parse.parse_qsl(url.query))
            delay = float(query.get("delay_ms", "0")) / 1000.0
            if delay:
                time.sleep(delay)
            self._send(200, BACKEND_BODY)
            return
        host, port = self.backend
        conn = http.client.HTTPConnection(host, port, timeout=10)
        try:
            target = "/work" + ("?" + url.query if url.query else "")
            conn.request("GET", target, headers={"Connection": "close"})
            resp = conn.getresponse()
            body = resp.read()
            status = resp.status
        finally:
            conn.close()
        if status != 200:
            self._send(502, b"bad gateway\n")
        else:
            self._send(200, b"front+" + body)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", help="http://127.0.0.1:PORT to call while serving")
    args = parser.parse_args()
    if args.backend:
        u = urllib.parse.urlsplit(args.backend)
        Handler.backend = (u.hostname, u.port)
    server = Server(("127.0.0.1", 0), Handler)
    print(f"port {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
