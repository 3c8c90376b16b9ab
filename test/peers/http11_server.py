#!/usr/bin/env python3
"""HTTP/1.1 keep-alive server for mop's integration tests (standard library only).

Binds 127.0.0.1 on the port given as the first argument (0: any free port) and prints
`port N` on stdout once it listens. Endpoints:

  GET  /ok                         200, body "ok\\n" (Content-Length)
  GET  /chunked?chunks=N&size=S    200, Transfer-Encoding: chunked, N chunks of S bytes,
                                   each chunk in its own write (decoded body: N*S bytes)
  POST /upload                     reads the Content-Length body (answering
                                   `Expect: 100-continue` with 100 Continue first), then
                                   200, body "ok\\n"
  anything else                    404, body "not found\\n"

Every response keeps the connection open (HTTP/1.1) unless the client asks to close it.
With `--tls CERT KEY` after the port it serves HTTPS through the `ssl` module (OpenSSL's
libssl, which the agent reads plaintext from).
"""

import http.server
import ssl
import sys
import time
import urllib.parse


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format, *args):  # noqa: A002 (the base class's signature)
        pass

    def _send(self, status, body):
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        if url.path == "/ok":
            self._send(200, b"ok\n")
        elif url.path == "/chunked":
            chunks = int(query.get("chunks", "3"))
            size = int(query.get("size", "100"))
            delay = float(query.get("delay_ms", "2")) / 1000.0
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if self.command == "HEAD":
                return
            for i in range(chunks):
                data = bytes([ord("a") + i % 26]) * size
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                if delay:
                    time.sleep(delay)
            self.wfile.write(b"0\r\n\r\n")
        else:
            self._send(404, b"not found\n")

    def do_HEAD(self):
        self.do_GET()

    def do_POST(self):
        url = urllib.parse.urlsplit(self.path)
        remaining = int(self.headers.get("Content-Length", "0"))
        while remaining > 0:
            data = self.rfile.read(min(remaining, 65536))
            if not data:
                break
            remaining -= len(data)
        if url.path == "/upload":
            self._send(200, b"ok\n")
        else:
            self._send(404, b"not found\n")


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    if sys.argv[2:3] == ["--tls"]:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(sys.argv[3], sys.argv[4])
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print("port", server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
