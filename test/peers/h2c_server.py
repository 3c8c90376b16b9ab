#!/usr/bin/env python3
"""A hypercorn (h11 + h2) ASGI server on cleartext for mop's integration tests: HTTP/2 with
prior knowledge, HTTP/1.1, and the `Upgrade: h2c` path from HTTP/1.1 to HTTP/2.

  h2c_server.py

Binds 127.0.0.1 on a free port, hands the socket to hypercorn and prints `port N` once it
serves. Routes:
  GET  /ok       200 "ok\\n"
  GET  /missing  404 "missing\\n"
  GET  /fail     500 "fail\\n"
  POST /upload   reads the body, 200 "stored\\n"
  GET  /size/N   200 with N bytes
"""

import asyncio
import os
import signal
import socket

from hypercorn.asyncio import serve
from hypercorn.config import Config


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    while True:
        message = await receive()
        if not message.get("more_body"):
            break
    if path == "/ok":
        status, body = 200, b"ok\n"
    elif path == "/fail":
        status, body = 500, b"fail\n"
    elif path == "/upload" and scope["method"] == "POST":
        status, body = 200, b"stored\n"
    elif path.startswith("/size/"):
        status, body = 200, b"x" * int(path[len("/size/"):])
    else:
        status, body = 404, b"missing\n"
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())],
    })
    await send({"type": "http.response.body", "body": body})


def main():
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.set_inheritable(True)
    config = Config()
    config.bind = [f"fd://{sock.fileno()}"]
    config.accesslog = None
    config.errorlog = None
    port = sock.getsockname()[1]

    # Stop at once on SIGTERM (hypercorn would otherwise wait for its connections to close).
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))

    async def run():
        forever = asyncio.Event()
        server = asyncio.ensure_future(serve(app, config, shutdown_trigger=forever.wait))
        await asyncio.sleep(0.2)
        print("port", port, flush=True)
        await server

    asyncio.run(run())


if __name__ == "__main__":
    main()
