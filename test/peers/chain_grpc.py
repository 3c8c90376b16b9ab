#!/usr/bin/env python3
"""A grpcio server that may call another grpcio server while handling a call, for mop's
trace-context tests.

    chain_grpc.py [--backend 127.0.0.1:PORT]

Binds 127.0.0.1 on a free port (plaintext HTTP/2) and prints `port N` on stdout once it
listens. One unary method, `/mop.test.Chain/Call`, with raw bytes as messages (no protobuf
schema needed):
  without --backend: answers b"backend:" + the request bytes;
  with --backend: from the handler's thread, calls the same method on the backend (one
  channel, created at start) with the request bytes and answers b"front+" + its answer.

Threads (grpcio's sync server): a grpcio polling thread reads the sockets and hands each call
to a handler thread of a `ThreadPoolExecutor`; the call to the backend starts on the handler
thread, but grpcio's core may write it from whichever thread drives the connection.
It sends no trace-context metadata of its own.
"""

import argparse
import sys
import threading
from concurrent import futures

import grpc

METHOD = "/mop.test.Chain/Call"


class Chain(grpc.GenericRpcHandler):
    def __init__(self, backend):
        self.call_backend = None
        if backend:
            channel = grpc.insecure_channel(backend)
            self.call_backend = channel.unary_unary(METHOD)

    def service(self, handler_call_details):
        if handler_call_details.method == METHOD:
            return grpc.unary_unary_rpc_method_handler(self.call)
        return None

    def call(self, request, context):
        if self.call_backend is None:
            return b"backend:" + request
        return b"front+" + self.call_backend(request, timeout=10)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", help="127.0.0.1:PORT of a server to call")
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.workers))
    server.add_generic_rpc_handlers((Chain(args.backend),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"port {port}", flush=True)
    stop = threading.Event()
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    server.stop(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
