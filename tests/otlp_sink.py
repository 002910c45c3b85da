"""A real OTLP trace receiver process for tests: gRPC and HTTP/protobuf on loopback.

Started by the ``otlp_sink`` fixture as its own process (``python tests/otlp_sink.py DIR``): it
speaks the real wire protocols (``TraceService/Export`` over gRPC, ``POST /v1/traces`` with
protobuf), and writes each request as one line of OTLP JSON in the OpenTelemetry Collector's
file-exporter format to ``DIR/traces.jsonl``. Its ports are written to ``DIR/ports.json``.

We would rather run the OpenTelemetry Collector itself, but no registry this project can reach
ships a build with an OTLP receiver; this process plays the collector's part for export and
``tracer.testing``'s OTLP JSON loader reads what it writes.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from google.protobuf.json_format import MessageToJson
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

_lock = threading.Lock()


def _write(out_path: str, request) -> None:
    line = MessageToJson(request, indent=None)
    with _lock, open(out_path, "a") as f:
        f.write(line + "\n")


class _Service(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, out_path):
        self.out_path = out_path

    def Export(self, request, context):  # noqa: N802 (the generated name)
        _write(self.out_path, request)
        return trace_service_pb2.ExportTraceServiceResponse()


def main(directory: str) -> None:
    out_path = os.path.join(directory, "traces.jsonl")
    open(out_path, "a").close()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Service(out_path), server)
    grpc_port = server.add_insecure_port("127.0.0.1:0")
    server.start()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path != "/v1/traces":
                self.send_response(404)
                self.end_headers()
                return
            req = trace_service_pb2.ExportTraceServiceRequest()
            req.ParseFromString(body)
            _write(out_path, req)
            payload = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    tmp = os.path.join(directory, "ports.json.tmp")
    with open(tmp, "w") as f:
        json.dump({"grpc": grpc_port, "http": http.server_address[1]}, f)
    os.replace(tmp, os.path.join(directory, "ports.json"))
    server.wait_for_termination()


if __name__ == "__main__":
    main(sys.argv[1])
