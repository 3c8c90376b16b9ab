#!/usr/bin/env python3
"""A real OTLP receiver for mop's exporter tests: OTLP/gRPC (grpcio) and OTLP/HTTP
(protobuf bodies, optionally gzip) on loopback ports, built on the PyPI
`opentelemetry-proto` messages.

It prints one JSON line with the ports it listens on, then writes one JSON line per
received span and per histogram data point to --out (flushed per line), and one line
per request (accepted or failed) so tests can count attempts.

--tls-cert/--tls-key serve both transports over TLS instead.

--fail-first N answers the first N export requests of each transport with gRPC
UNAVAILABLE (with a RetryInfo delay of --retry-delay-ms) or HTTP 503 (with
Retry-After: 0), then recovers.
"""

import argparse
import gzip
import json
import signal
import ssl
import sys
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import (
    trace_service_pb2,
    trace_service_pb2_grpc,
)

KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


class Sink:
    """Serialises the JSON lines and counts requests per transport."""

    def __init__(self, path, fail_first, stall_first):
        self.lock = threading.Lock()
        self.out = open(path, "a", buffering=1) if path else sys.stdout
        self.fail_first = fail_first
        self.stall_first = stall_first
        self.requests = {"grpc": 0, "http": 0}

    def should_fail(self, transport):
        with self.lock:
            self.requests[transport] += 1
            n = self.requests[transport]
        if n <= self.stall_first:
            # Never answer: the test kills the receiver with this request in flight.
            time.sleep(3600)
        return n - self.stall_first <= self.fail_first

    def write(self, record):
        line = json.dumps(record, sort_keys=True)
        with self.lock:
            self.out.write(line + "\n")
            self.out.flush()


def any_value(v):
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "int_value":
        return v.int_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "double_value":
        return v.double_value
    return None


def attrs(kvs):
    return {kv.key: any_value(kv.value) for kv in kvs}


def record_traces(sink, transport, req):
    for rs in req.resource_spans:
        resource = attrs(rs.resource.attributes)
        for ss in rs.scope_spans:
            for s in ss.spans:
                sink.write({
                    "type": "span",
                    "transport": transport,
                    "trace_id": s.trace_id.hex(),
                    "span_id": s.span_id.hex(),
                    "parent_span_id": s.parent_span_id.hex(),
                    "name": s.name,
                    "kind": KINDS.get(s.kind, str(s.kind)),
                    "status_code": s.status.code,
                    "start_unix_nano": s.start_time_unix_nano,
                    "end_unix_nano": s.end_time_unix_nano,
                    "scope": ss.scope.name,
                    "scope_version": ss.scope.version,
                    "resource": resource,
                    "attributes": attrs(s.attributes),
                })


def record_metrics(sink, transport, req):
    for rm in req.resource_metrics:
        resource = attrs(rm.resource.attributes)
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.WhichOneof("data") != "histogram":
                    continue
                for p in m.histogram.data_points:
                    sink.write({
                        "type": "histogram_point",
                        "transport": transport,
                        "metric": m.name,
                        "unit": m.unit,
                        "temporality": m.histogram.aggregation_temporality,
                        "resource": resource,
                        "attributes": attrs(p.attributes),
                        "count": p.count,
                        "sum": p.sum,
                        "bucket_counts": list(p.bucket_counts),
                        "explicit_bounds": list(p.explicit_bounds),
                        "start_unix_nano": p.start_time_unix_nano,
                        "time_unix_nano": p.time_unix_nano,
                    })


class GrpcTraces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, sink, retry_delay_ms):
        self.sink = sink
        self.retry_delay_ms = retry_delay_ms

    def Export(self, request, context):
        if self.sink.should_fail("grpc"):
            self.sink.write({"type": "request", "transport": "grpc", "signal": "traces", "status": "failed"})
            fail_unavailable(context, self.retry_delay_ms)
            return trace_service_pb2.ExportTraceServiceResponse()
        self.sink.write({"type": "request", "transport": "grpc", "signal": "traces", "status": "ok",
                         "metadata": {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}})
        record_traces(self.sink, "grpc", request)
        return trace_service_pb2.ExportTraceServiceResponse()


class GrpcMetrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, sink, retry_delay_ms):
        self.sink = sink
        self.retry_delay_ms = retry_delay_ms

    def Export(self, request, context):
        if self.sink.should_fail("grpc"):
            self.sink.write({"type": "request", "transport": "grpc", "signal": "metrics", "status": "failed"})
            fail_unavailable(context, self.retry_delay_ms)
            return metrics_service_pb2.ExportMetricsServiceResponse()
        self.sink.write({"type": "request", "transport": "grpc", "signal": "metrics", "status": "ok"})
        record_metrics(self.sink, "grpc", request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


def fail_unavailable(context, retry_delay_ms):
    """UNAVAILABLE with a google.rpc.RetryInfo detail, encoded by hand (no googleapis dep)."""
    def varint(n):
        out = bytearray()
        while True:
            b = n & 0x7F
            n >>= 7
            out.append(b | (0x80 if n else 0))
            if not n:
                return bytes(out)

    def field(num, payload):
        return varint(num << 3 | 2) + varint(len(payload)) + payload

    secs, ms = divmod(retry_delay_ms, 1000)
    duration = b""
    if secs:
        duration += varint(1 << 3) + varint(secs)
    if ms:
        duration += varint(2 << 3) + varint(ms * 1_000_000)
    retry_info = field(1, duration)
    any_msg = field(1, b"type.googleapis.com/google.rpc.RetryInfo") + field(2, retry_info)
    message = b"receiver warming up"
    status = varint(1 << 3) + varint(grpc.StatusCode.UNAVAILABLE.value[0]) + field(2, message) + field(3, any_msg)
    context.set_trailing_metadata((("grpc-status-details-bin", status),))
    context.set_code(grpc.StatusCode.UNAVAILABLE)
    context.set_details(message.decode())


def http_handler(sink):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            if self.path.endswith("/v1/traces"):
                signal_name = "traces"
            elif self.path.endswith("/v1/metrics"):
                signal_name = "metrics"
            else:
                self.reply(404, b"")
                return
            if sink.should_fail("http"):
                sink.write({"type": "request", "transport": "http", "signal": signal_name, "status": "failed"})
                self.reply(503, b"", {"Retry-After": "0"})
                return
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            sink.write({"type": "request", "transport": "http", "signal": signal_name, "status": "ok",
                        "path": self.path, "content_type": self.headers.get("Content-Type"),
                        "content_encoding": self.headers.get("Content-Encoding"),
                        "headers": {k.lower(): v for k, v in self.headers.items()}})
            if signal_name == "traces":
                req = trace_service_pb2.ExportTraceServiceRequest()
                req.ParseFromString(body)
                record_traces(sink, "http", req)
                resp = trace_service_pb2.ExportTraceServiceResponse()
            else:
                req = metrics_service_pb2.ExportMetricsServiceRequest()
                req.ParseFromString(body)
                record_metrics(sink, "http", req)
                resp = metrics_service_pb2.ExportMetricsServiceResponse()
            self.reply(200, resp.SerializeToString(), {"Content-Type": "application/x-protobuf"})

        def reply(self, code, body, headers=None):
            self.send_response(code)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--grpc-port", type=int, default=0)
    ap.add_argument("--http-port", type=int, default=0)
    ap.add_argument("--out", default="")
    ap.add_argument("--fail-first", type=int, default=0)
    ap.add_argument("--retry-delay-ms", type=int, default=50)
    ap.add_argument("--stall-first", type=int, default=0,
                    help="never answer the first N requests of each transport")
    ap.add_argument("--tls-cert", default="", help="PEM certificate: serve both transports over TLS")
    ap.add_argument("--tls-key", default="", help="PEM private key of --tls-cert")
    args = ap.parse_args()

    sink = Sink(args.out, args.fail_first, args.stall_first)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(GrpcTraces(sink, args.retry_delay_ms), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(GrpcMetrics(sink, args.retry_delay_ms), server)
    if args.tls_cert:
        with open(args.tls_cert, "rb") as c, open(args.tls_key, "rb") as k:
            creds = grpc.ssl_server_credentials([(k.read(), c.read())])
        grpc_port = server.add_secure_port(f"127.0.0.1:{args.grpc_port}", creds)
    else:
        grpc_port = server.add_insecure_port(f"127.0.0.1:{args.grpc_port}")
    server.start()

    ThreadingHTTPServer.allow_reuse_address = True
    httpd = ThreadingHTTPServer(("127.0.0.1", args.http_port), http_handler(sink))
    if args.tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()

    print(json.dumps({"grpc_port": grpc_port, "http_port": httpd.server_address[1]}), flush=True)

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    httpd.shutdown()
    server.stop(0)


if __name__ == "__main__":
    main()
