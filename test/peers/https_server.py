#!/usr/bin/env python3
"""Python's `http.server` over the `ssl` module (OpenSSL's libssl) for mop's integration tests,
with the endpoints of http11_server.py (keep-alive HTTP/1.1).

  https_server.py DIR [--late]

Serves HTTPS on 127.0.0.1, a free port, with DIR/server.pem and DIR/server.key, and prints
`port N` once it listens.

With --late the process starts WITHOUT libssl: it listens on the port with a plain socket
(importing neither `ssl` nor `http.server`, which imports it through `http.client`), prints
`port N`, and waits for a line `go` on stdin; only then does it import `ssl` (the dynamic
loader maps libssl into the running process), print `tls`, and serve HTTPS on that socket.
"""

import os
import socket
import sys


def main():
    tls_dir = sys.argv[1]
    late = "--late" in sys.argv[2:]
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    print("port", sock.getsockname()[1], flush=True)
    if late:
        assert "ssl" not in sys.modules
        for line in sys.stdin:
            if line.strip() == "go":
                break
    import http.server  # noqa: PLC0415 (late on purpose)
    import ssl  # noqa: PLC0415

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from http11_server import Handler  # noqa: PLC0415

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(os.path.join(tls_dir, "server.pem"), os.path.join(tls_dir, "server.key"))
    server = http.server.ThreadingHTTPServer(sock.getsockname(), Handler, bind_and_activate=False)
    server.daemon_threads = True
    server.socket = context.wrap_socket(sock, server_side=True)
    if late:
        print("tls", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
