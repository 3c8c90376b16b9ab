"""A threaded HTTP/1.0 server for the trace-context tests: `relay_server.py ADDR PORT [UPSTREAM]`.

Each request is served on its own thread. With UPSTREAM (a base URL), the handler first calls
`UPSTREAM + path` on that thread (a new connection each time, no trace headers) and answers
with its body; without it, the handler answers `pong`. Prints `ready` once it listens.
"""

import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ADDR, PORT = sys.argv[1], int(sys.argv[2])
UPSTREAM = sys.argv[3] if len(sys.argv) > 3 else None


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if UPSTREAM:
            with urllib.request.urlopen(UPSTREAM + self.path, timeout=10) as resp:
                body = resp.read()
        else:
            body = b"pong"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer((ADDR, PORT), Handler)
print("ready", flush=True)
server.serve_forever()
