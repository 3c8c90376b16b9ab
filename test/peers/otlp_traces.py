#!/usr/bin/env python3
"""OTLP traces receiver for mop's integration tests: OTLP/HTTP (protobuf) and OTLP/gRPC.

Listens on 127.0.0.1, on free ports, and prints `http N` and `grpc M` on stdout once both
listen. Then prints every span it receives as one JSON object per line:

  {"transport": "http"|"grpc", "path": "/v1/traces" (http only),
   "resource": {attributes}, "scope": "...",
   "trace_id": hex, "span_id": hex, "parent_span_id": hex or "",
   "name": "...", "kind": "SPAN_KIND_SERVER", "start_unix_nano": int, "end_unix_nano": int,
   "status": "STATUS_CODE_UNSET"|"STATUS_CODE_OK"|"STATUS_CODE_ERROR",
   "attributes": {key: value}}

Attribute values keep their OTLP type: int_value as a JSON integer, string_value as a string,
bool_value as a boolean, double_value as a float, so tests can check integer attributes.
Needs `opentelemetry-proto` and `grpcio` (installed by `cargo xtask setup`).
"""

import gzip
import http.server
import json
import sys
import threading
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

LOCK = threading.Lock()


def value(any_value):
    kind = any_value.WhichOneof("value")
    if kind == "string_value":
        return any_value.string_value
    if kind == "int_value":
        return any_value.int_value
    if kind == "bool_value":
        return any_value.bool_value
    if kind == "double_value":
        return any_value.double_value
    if kind == "array_value":
        return [value(v) for v in any_value.array_value.values]
    return None


def attributes(key_values):
    return {kv.key: value(kv.value) for kv in key_values}


def emit(request, transport, path=None):
    lines = []
    for resource_spans in request.resource_spans:
        resource = attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                lines.append(json.dumps({
                    "transport": transport,
                    "path": path,
                    "resource": resource,
                    "scope": scope_spans.scope.name,
                    "trace_id": span.trace_id.hex(),
                    "span_id": span.span_id.hex(),
                    "parent_span_id": span.parent_span_id.hex(),
                    "name": span.name,
                    "kind": trace_pb2.Span.SpanKind.Name(span.kind),
                    "start_unix_nano": span.start_time_unix_nano,
                    "end_unix_nano": span.end_time_unix_nano,
                    "status": trace_pb2.Status.StatusCode.Name(span.status.code),
                    "attributes": attributes(span.attributes),
                }))
    with LOCK:
        for line in lines:
            print(line, flush=True)


class HttpHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 (the base class's signature)
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/v1/metrics":
            # The shared endpoint also receives metrics: accepted and ignored.
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.headers.get("Content-Encoding", "") == "gzip":
            body = gzip.decompress(body)
        request = trace_service_pb2.ExportTraceServiceRequest()
        request.ParseFromString(body)
        emit(request, "http", self.path)
        reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)


class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def Export(self, request, context):  # noqa: N802 (gRPC method name)
        emit(request, "grpc")
        return trace_service_pb2.ExportTraceServiceResponse()


def main():
    http_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HttpHandler)
    http_server.daemon_threads = True
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(), grpc_server)
    grpc_port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()
    with LOCK:
        print("http", http_server.server_address[1], flush=True)
        print("grpc", grpc_port, flush=True)
    try:
        http_server.serve_forever()
    finally:
        grpc_server.stop(0)


if __name__ == "__main__":
    sys.exit(main())
