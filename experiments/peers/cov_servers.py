#!/usr/bin/env python3
"""Python servers for mop's coverage matrix; each answers GET /cov with 200 "covered\\n" and
prints `port N` once it listens on 127.0.0.1.

  cov_servers.py h2c PORT             hypercorn (ASGI) serving HTTP/2 cleartext with prior
                                      knowledge (and HTTP/1.1)
  cov_servers.py tls PORT CERT KEY    the standard library's threaded HTTP/1.1 server behind
                                      ssl (OpenSSL through the `_ssl` module, libssl.so)
  cov_servers.py get URL N [--tls]    client: N GETs with urllib (one connection each), then
                                      prints `ok N`
"""

import asyncio
import http.server
import ssl
import sys
import urllib.request

BODY = b"covered\n"


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    status = 200 if scope["path"] == "/cov" else 404
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(BODY)).encode())]})
    await send({"type": "http.response.body", "body": BODY})


def h2c(port):
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = None

    async def main():
        server = asyncio.ensure_future(serve(app, config))
        await asyncio.sleep(0.5)
        print(f"port {port}", flush=True)
        await server

    asyncio.run(main())


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002
        pass

    def do_GET(self):
        status = 200 if self.path == "/cov" else 404
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)


def tls(port, cert, key):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print(f"port {server.server_port}", flush=True)
    server.serve_forever()


def get(url, n, use_tls):
    ctx = None
    if use_tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    for _ in range(n):
        with urllib.request.urlopen(url, context=ctx, timeout=10) as r:
            r.read()
    print(f"ok {n}", flush=True)


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "h2c":
        h2c(int(args[0]))
    elif mode == "tls":
        tls(int(args[0]), args[1], args[2])
    elif mode == "get":
        get(args[0], int(args[1]), "--tls" in args)
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
