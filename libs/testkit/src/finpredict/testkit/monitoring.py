"""The real Prometheus and Alertmanager (OS packages) on loopback, and receivers of what the
services send out: Alertmanager webhooks and OTLP spans.

The daemons are started with configs written by the test, on free loopback ports, and stopped by pid.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from finpredict.common.net import free_port
from finpredict.testkit.process import wait_for


def _binary(*names: str) -> str:
    for name in names:
        if path := shutil.which(name):
            return path
    raise FileNotFoundError(f"none of {names} is installed (run `task setup`)")


@dataclass
class Daemon:
    """A monitoring daemon started by a test."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get_json(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=5) as resp:
            return json.loads(resp.read())

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def _start(name: str, argv: list[str], port: int, work: Path, ready_path: str) -> Daemon:
    log_path = work / f"{name}.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=work)
    daemon = Daemon(name, proc, port, log_path)

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{daemon.logs()}")
        try:
            with urllib.request.urlopen(f"{daemon.url}{ready_path}", timeout=2) as resp:
                return bool(resp.status == 200)
        except urllib.error.HTTPError as err:  # 503 while starting: close it, try again
            err.close()
            return False

    try:
        wait_for(ready, 60, f"{name} ready")
    except BaseException:
        daemon.stop()
        raise
    return daemon


def start_prometheus(work: Path, config: dict[str, Any], rule_files: dict[str, str] | None = None) -> Daemon:
    """Runs Prometheus with ``config`` (rule files written beside it) and exemplar storage on."""
    work.mkdir(parents=True, exist_ok=True)
    for name, text in (rule_files or {}).items():
        (work / name).write_text(text)
    (work / "prometheus.yml").write_text(json.dumps(config))  # JSON is valid YAML
    port = free_port()
    argv = [
        _binary("prometheus"),
        f"--config.file={work / 'prometheus.yml'}",
        f"--storage.tsdb.path={work / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--enable-feature=exemplar-storage",
        "--web.enable-lifecycle",
    ]
    return _start("prometheus", argv, port, work, "/-/ready")


def start_alertmanager(work: Path, config_text: str) -> Daemon:
    """Runs Alertmanager (no clustering) with the given config."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "alertmanager.yml").write_text(config_text)
    port = free_port()
    argv = [
        _binary("prometheus-alertmanager", "alertmanager"),
        f"--config.file={work / 'alertmanager.yml'}",
        f"--storage.path={work / 'am-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
    ]
    return _start("alertmanager", argv, port, work, "/-/ready")


@dataclass
class WebhookReceiver:
    """An HTTP server that records the Alertmanager webhook payloads it receives."""

    payloads: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0
    _server: ThreadingHTTPServer | None = None

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.payloads.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/alerts"

    def alerts(self) -> list[dict[str, Any]]:
        return [alert for payload in self.payloads for alert in payload.get("alerts", [])]

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class OtlpTraceReceiver:
    """An OTLP/gRPC trace endpoint (the OpenTelemetry collector's wire format) that keeps every
    span it receives, for tests that follow a request across services."""

    def __init__(self) -> None:
        receiver = self
        self.spans: list[dict[str, Any]] = []
        self._lock = threading.Lock()

        class Servicer(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
            def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 (gRPC method)
                with receiver._lock:
                    for resource_spans in request.resource_spans:
                        attrs = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                        for scope_spans in resource_spans.scope_spans:
                            for span in scope_spans.spans:
                                receiver.spans.append(
                                    {
                                        "service": attrs.get("service.name", ""),
                                        "name": span.name,
                                        "trace_id": span.trace_id.hex(),
                                        "span_id": span.span_id.hex(),
                                        "parent_span_id": span.parent_span_id.hex(),
                                        "attributes": {a.key: _any_value(a.value) for a in span.attributes},
                                    }
                                )
                return trace_service_pb2.ExportTraceServiceResponse()

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Servicer(), self._server)  # type: ignore[no-untyped-call]
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spans_of(self, trace_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [s for s in self.spans if s["trace_id"] == trace_id]

    def stop(self) -> None:
        self._server.stop(None)


def _any_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None
