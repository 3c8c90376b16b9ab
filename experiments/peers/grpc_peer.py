#!/usr/bin/env python3
"""gRPC server and load client (grpcio, no generated code) for mop's experiments.

  grpc_peer.py server [--otel] PORT
      Serves mop.bench.Echo/Say (unary: echoes the request bytes) on 127.0.0.1:PORT (0: any
      free port) with 4 worker threads; prints `port N`. `--otel` instruments the server with
      opentelemetry-instrumentation-grpc and a TracerProvider whose BatchSpanProcessor drops
      every span (the SDK's per-call cost, no network export).

  grpc_peer.py client PORT SECONDS CONCURRENCY [RATE]
      Calls Say with a 64-byte payload from CONCURRENCY threads on one channel, for SECONDS:
      closed loop, or RATE calls/s in total (open loop, latency from the scheduled time).
      Prints one JSON line: calls, errors, seconds, rps, p50_ms, p99_ms.

  grpc_peer.py calls PORT N
      N sequential calls (coverage and propagation cells); prints `ok N` or the error.
"""

import json
import sys
import threading
import time
from concurrent import futures

import grpc

METHOD = "/mop.bench.Echo/Say"


def identity(b):
    return b


def serve(port, otel):
    if otel:
        from opentelemetry import trace
        from opentelemetry.instrumentation.grpc import GrpcInstrumentorServer
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )

        class DropExporter(SpanExporter):
            def export(self, spans):
                return SpanExportResult.SUCCESS

            def shutdown(self):
                pass

        provider = TracerProvider(resource=Resource.create({"service.name": "grpc-otel"}))
        provider.add_span_processor(BatchSpanProcessor(DropExporter()))
        trace.set_tracer_provider(provider)
        GrpcInstrumentorServer().instrument()

    def say(request, context):
        return request

    handler = grpc.method_handlers_generic_handler(
        "mop.bench.Echo",
        {"Say": grpc.unary_unary_rpc_method_handler(say, identity, identity)},
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print(f"port {bound}", flush=True)
    server.wait_for_termination()


def client(port, seconds, concurrency, rate):
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    say = channel.unary_unary(METHOD, request_serializer=identity, response_deserializer=identity)
    grpc.channel_ready_future(channel).result(timeout=10)
    payload = b"p" * 64
    lat = []
    errors = [0]
    lock = threading.Lock()
    start = time.monotonic()
    deadline = start + seconds

    def worker(i):
        mine = []
        errs = 0
        interval = concurrency / rate if rate else None
        nxt = start + (interval * i / concurrency if interval else 0)
        while True:
            now = time.monotonic()
            if now >= deadline:
                break
            if interval:
                if nxt > now:
                    time.sleep(nxt - now)
                scheduled = nxt
                nxt += interval
            else:
                scheduled = time.monotonic()
            try:
                say(payload, timeout=10)
                mine.append(time.monotonic() - scheduled)
            except grpc.RpcError:
                errs += 1
        with lock:
            lat.extend(mine)
            errors[0] += errs

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    lat.sort()

    def q(p):
        return lat[min(len(lat) - 1, int(round((len(lat) - 1) * p)))] * 1000 if lat else float("nan")

    print(json.dumps({
        "calls": len(lat), "errors": errors[0], "seconds": elapsed,
        "rps": len(lat) / elapsed, "p50_ms": q(0.5), "p99_ms": q(0.99),
    }), flush=True)


def calls(port, n):
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    say = channel.unary_unary(METHOD, request_serializer=identity, response_deserializer=identity)
    for _ in range(n):
        say(b"hello", timeout=10)
    print(f"ok {n}", flush=True)


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "server":
        otel = "--otel" in args
        args = [a for a in args if a != "--otel"]
        serve(int(args[0]), otel)
    elif mode == "client":
        rate = float(args[3]) if len(args) > 3 else None
        client(int(args[0]), float(args[1]), int(args[2]), rate)
    elif mode == "calls":
        calls(int(args[0]), int(args[1]))
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
