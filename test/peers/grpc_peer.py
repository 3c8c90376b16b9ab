#!/usr/bin/env python3
"""gRPC peers for mop's integration tests, on grpcio with generic (bytes) handlers.

  grpc_peer.py server [--tls DIR]
      Serves the service `mop.test.Echo` on 127.0.0.1, a free port, and prints `port N` once
      it listens. With --tls, serves TLS with DIR/server.pem and DIR/server.key.

  grpc_peer.py client PORT [--tls DIR]
      A client with ONE channel to 127.0.0.1:PORT (connected lazily, on the first call). It
      also listens on a free port of its own, so that a test can select it with `open_ports`
      (every Python process has the same executable), and prints `port M` (that port) when it
      is ready. Then it reads commands on stdin, one per line, runs each on the channel and
      prints one JSON object per command: {"codes": [status code numbers, one per call]} plus
      per-command fields. With --tls, trusts DIR/ca.pem.

Methods (requests and responses are raw bytes):
  Unary         echoes the request
  ServerStream  answers int(request) messages of 10 bytes each
  ClientStream  answers the number of messages received, as ASCII
  Missing       aborts with NOT_FOUND (5)
  Broken        aborts with INTERNAL (13)
  Slow          sleeps int(request) milliseconds, then answers

Client commands:
  unary N                  N unary calls, one after the other
  concurrent N             N unary calls in flight at once on the one channel
  server_stream K          one ServerStream call answered with K messages ("messages": K seen)
  client_stream K          one ClientStream call sending K messages ("reply": the answer)
  missing                  one Missing call
  broken                   one Broken call
  slow MS DEADLINE_MS      one Slow call sleeping MS with a deadline of DEADLINE_MS
  quit                     closes the channel and exits
"""

import json
import os
import socket
import sys
import time
from concurrent import futures

import grpc

SERVICE = "mop.test.Echo"


def unary(request, context):
    return request


def server_stream(request, context):
    for _ in range(int(request)):
        yield b"0123456789"


def client_stream(request_iterator, context):
    return str(sum(1 for _ in request_iterator)).encode()


def missing(request, context):
    context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")


def broken(request, context):
    context.abort(grpc.StatusCode.INTERNAL, "it broke")


def slow(request, context):
    time.sleep(int(request) / 1000)
    return b"late"


def serve(tls_dir):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=64))
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "Missing": grpc.unary_unary_rpc_method_handler(missing),
        "Broken": grpc.unary_unary_rpc_method_handler(broken),
        "Slow": grpc.unary_unary_rpc_method_handler(slow),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    if tls_dir:
        with open(os.path.join(tls_dir, "server.key"), "rb") as f:
            key = f.read()
        with open(os.path.join(tls_dir, "server.pem"), "rb") as f:
            cert = f.read()
        creds = grpc.ssl_server_credentials([(key, cert)])
        port = server.add_secure_port("127.0.0.1:0", creds)
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print("port", port, flush=True)
    try:
        server.wait_for_termination()
    except KeyboardInterrupt:
        pass


def code_of(error):
    return error.code().value[0]


def call(fn):
    try:
        return 0, fn()
    except grpc.RpcError as e:
        return code_of(e), None


def run_client(port, tls_dir):
    target = f"127.0.0.1:{port}"
    if tls_dir:
        with open(os.path.join(tls_dir, "ca.pem"), "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        channel = grpc.secure_channel(target, creds)
    else:
        channel = grpc.insecure_channel(target)
    path = lambda m: f"/{SERVICE}/{m}"  # noqa: E731
    unary_call = channel.unary_unary(path("Unary"))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    print("port", listener.getsockname()[1], flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        cmd, args = words[0], [int(w) for w in words[1:]]
        out = {}
        if cmd == "quit":
            break
        if cmd == "unary":
            out["codes"] = [call(lambda: unary_call(b"hello"))[0] for _ in range(args[0])]
        elif cmd == "concurrent":
            calls = [unary_call.future(b"hello %d" % i) for i in range(args[0])]
            codes = []
            for f in calls:
                try:
                    f.result()
                    codes.append(0)
                except grpc.RpcError as e:
                    codes.append(code_of(e))
            out["codes"] = codes
        elif cmd == "server_stream":
            stream = channel.unary_stream(path("ServerStream"))
            code, n = call(lambda: sum(1 for _ in stream(str(args[0]).encode())))
            out["codes"], out["messages"] = [code], n
        elif cmd == "client_stream":
            upload = channel.stream_unary(path("ClientStream"))
            code, reply = call(lambda: upload(iter([b"x" * 10] * args[0])))
            out["codes"], out["reply"] = [code], reply and reply.decode()
        elif cmd == "missing":
            out["codes"] = [call(lambda: channel.unary_unary(path("Missing"))(b"?"))[0]]
        elif cmd == "broken":
            out["codes"] = [call(lambda: channel.unary_unary(path("Broken"))(b"!"))[0]]
        elif cmd == "slow":
            slow_call = channel.unary_unary(path("Slow"))
            code, _ = call(lambda: slow_call(str(args[0]).encode(), timeout=args[1] / 1000))
            out["codes"] = [code]
        else:
            out["error"] = f"unknown command {cmd}"
        print(json.dumps(out), flush=True)
    channel.close()


def main():
    args = sys.argv[1:]
    tls_dir = None
    if "--tls" in args:
        i = args.index("--tls")
        tls_dir = args[i + 1]
        del args[i : i + 2]
    if args[0] == "server":
        serve(tls_dir)
    elif args[0] == "client":
        run_client(int(args[1]), tls_dir)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
