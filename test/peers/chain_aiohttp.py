#!/usr/bin/env python3
"""An asyncio (aiohttp) HTTP/1.1 frontend that calls a backend with aiohttp's client, for
mop's trace-context tests.

    chain_aiohttp.py --backend URL

Binds 127.0.0.1 on a free port and prints `port N` on stdout once it listens. One thread
runs one event loop: it serves every request and makes every backend call (aiohttp's client
with one pooled session, keep-alive connections to the backend), so requests served
concurrently interleave on that thread.

  GET /work?...   awaits GET URL/work?<same query> from the backend, then 200 with the body
                  "front+" followed by the backend's body; a backend status other than 200
                  gives 502.
  anything else   404, body "not found\\n"

It sends no trace-context header of its own.
"""

import argparse
import asyncio
import socket
import sys

from aiohttp import ClientSession, ClientTimeout, TCPConnector, web


async def work(request):
    session = request.app["session"]
    url = request.app["backend"] + "/work"
    if request.query_string:
        url += "?" + request.query_string
    async with session.get(url) as resp:
        body = await resp.read()
        status = resp.status
    if status != 200:
        return web.Response(status=502, body=b"bad gateway\n", content_type="text/plain")
    return web.Response(body=b"front+" + body, content_type="text/plain")


async def serve(backend):
    app = web.Application()
    app["backend"] = backend.rstrip("/")
    app.router.add_get("/work", work)
    session = ClientSession(
        connector=TCPConnector(limit=0), timeout=ClientTimeout(total=10)
    )
    app["session"] = session
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    print(f"port {sock.getsockname()[1]}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await session.close()
        await runner.cleanup()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", required=True, help="http://127.0.0.1:PORT")
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.backend))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
