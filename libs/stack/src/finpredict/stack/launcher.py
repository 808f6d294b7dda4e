"""Start and stop the finpredict services on this machine (``finpredict up`` / ``finpredict down``).

Each service runs as its own process (``python -m finpredict.<service>``) with its settings
from the environment; Prometheus and Alertmanager (the OS packages) run beside them on loopback
with the project's configs (``infra/prometheus``, ``infra/alertmanager``). Logs, ready files,
pid files and the local tokens go to the run dir (``FINPREDICT_RUN_DIR``, default ``.run/``).
``down`` stops only the processes that ``up`` recorded, by pid, after checking the pid still
belongs to that component.

The services find each other through their ready files: every address a service needs (the
registry for the model server and the gateway, the model server's Serve ingress and the
monitor for the gateway, Alertmanager for the monitor, every metrics port for Prometheus) is
passed in its environment. The defaults are the documented ports (gateway 50051, Prometheus
9090, Alertmanager 9093, ...); ``Stack(ephemeral_ports=True)`` picks free ones instead, so a
test's stack never collides with a developer's.

Two profiles (:data:`~finpredict.stack.components.PROFILES`): ``embedded`` (the default: the
registry on SQLite with a local artifact store, the gateway on SQLite, a local Ray inside the model
server) and ``cluster``, which starts beside them PostgreSQL (the registry's database and the
gateways' shared state), an S3 server (moto: the registry's artifact store and the DVC remote), a
Ray head and a second Ray node on this host (the model server deploys to that cluster), and a
second gateway replica sharing the first one's state. The wiring follows what runs: a registry
started while the stack's PostgreSQL and S3 server run uses them, whatever the profile.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml  # type: ignore[import-untyped]  # (no types-PyYAML in the lock)

from finpredict.common.addresses import LOCALHOST
from finpredict.common.net import free_port
from finpredict.stack import ray_nodes
from finpredict.stack import s3 as s3_server
from finpredict.stack.components import (
    ARTIFACT_BUCKET,
    COMPONENTS,
    DAEMON_BINARIES,
    DAEMON_PORTS,
    DAEMONS,
    DATABASES,
    DEFAULT_PROFILE,
    DVC_BUCKET,
    HTTP_SERVICES,
    INFRA,
    INFRA_PORTS,
    PROFILES,
    RAY_NODE_CPUS,
    RAY_NODES,
    START_TIMEOUT_S,
    env_prefix,
    http_ok,
    module,
    service_healthy,
    service_of,
)
from finpredict.stack.postgres import PostgresCluster
from finpredict.stack.settings import StackSettings

# The tokens of a local stack (see Stack.secrets).
TOKEN_KEYS = ("FINPREDICT_TOKEN", "FINPREDICT_REGISTRY_TOKEN", "FINPREDICT_SERVICES_TOKEN",
              "FINPREDICT_GATEWAY_REGISTRY_TOKEN", "FINPREDICT_CLIENT_TOKEN",
              "FINPREDICT_GATEWAY_MONITOR_TOKEN", "FINPREDICT_OUTCOMES_TOKEN")  # fmt: skip
ACCEPTED_KEYS = ("FINPREDICT_REGISTRY_TOKENS", "FINPREDICT_GATEWAY_TOKENS", "FINPREDICT_MONITOR_TOKENS")
CONSOLE_SESSION_KEYS = "FINPREDICT_CONSOLE_SESSION_KEYS"


def _default_run_dir() -> Path:
    return StackSettings().run_dir


@dataclass
class Stack:
    """One local finpredict stack: where its files live and which ports it uses.

    ``run_dir`` (default: ``FINPREDICT_RUN_DIR``, see :class:`StackSettings`) holds pid, ready
    and log files and ``secrets.env``; ``data_dir`` (default: ``run_dir``) the services' own data
    (registry database and artifacts, gateway rollouts, monitor logs, Prometheus and Alertmanager
    storage, and in the cluster profile PostgreSQL's cluster); ``project_root`` (default:
    ``FINPREDICT_PROJECT_ROOT`` or the checkout around the current directory, looked up only when
    needed) the monitoring daemons' configs; ``profile`` which components :meth:`up` starts.
    """

    run_dir: Path = field(default_factory=_default_run_dir)
    data_dir: Path | None = None
    ephemeral_ports: bool = False
    log: Callable[[str], None] = print
    project_root: Path | None = None
    profile: str = DEFAULT_PROFILE
    _secrets: dict[str, str] = field(default_factory=dict, repr=False)
    # The processes this object started (reaped when stopped; `finpredict down` stops others by pid).
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)

    @property
    def data(self) -> Path:
        return self.data_dir if self.data_dir is not None else self.run_dir

    @property
    def root(self) -> Path:
        """The project checkout (``infra/`` configs)."""
        if self.project_root is None:
            self.project_root = StackSettings().project_root
        return self.project_root

    @property
    def secrets_file(self) -> Path:
        return self.run_dir / "secrets.env"

    def _scratch(self, what: str) -> Path:
        """A folder of this stack's under the system temp dir (short, reachable by every user)."""
        digest = hashlib.sha256(str(self.data.resolve()).encode()).hexdigest()[:10]
        return Path(tempfile.gettempdir()) / f"fp-{digest}-{what}"

    def postgres_root(self) -> Path:
        """Where the cluster profile's PostgreSQL keeps its cluster: ``<data>/postgres``, or as root
        (PostgreSQL then runs as the ``postgres`` OS user, who may not reach the data dir) a folder
        of this stack's under the system temp dir."""
        return self._scratch("pg") if os.geteuid() == 0 else self.data / "postgres"

    def ray_temp_dir(self, name: str) -> Path:
        """A Ray node's temp dir (its session and logs), short for Ray's unix sockets."""
        return self._scratch(name)

    def wipe_data(self) -> None:
        """Removes the stack's data (a fresh platform on the next start); stop the stack first."""
        shutil.rmtree(self.data, ignore_errors=True)
        shutil.rmtree(self._scratch("pg"), ignore_errors=True)

    # ----- tokens ------------------------------------------------------------------------------

    def secrets(self) -> dict[str, str]:
        """Bearer tokens for a local stack: generated once, kept in ``<run_dir>/secrets.env``
        (mode 0600, git-ignored, never committed). Real deployments set the same variables from a
        secret store.

        - ``FINPREDICT_REGISTRY_TOKENS``: what the registry accepts (operator: admin, pipeline:
          writer, the gateway's rollout controller: admin, services: reader; the pipeline registers
          its gate results with the version, nothing appends any later, so no token is a
          ``validator``);
        - ``FINPREDICT_GATEWAY_TOKENS``: what the gateway accepts (operator: admin, clients: reader,
          the lending app's outcome feed: writer);
        - ``FINPREDICT_MONITOR_TOKENS``: what the monitor accepts (operator: admin, the gateway's
          prediction log and outcomes: writer, services: reader);
        - ``FINPREDICT_TOKEN``: the operator's token, used by the ``finpredict`` CLI;
        - ``FINPREDICT_REGISTRY_TOKEN``: the training pipeline's (writer) token;
        - ``FINPREDICT_GATEWAY_REGISTRY_TOKEN``: the rollout controller's registry token;
        - ``FINPREDICT_CLIENT_TOKEN``: a scoring client's gateway token;
        - ``FINPREDICT_OUTCOMES_TOKEN``: a client's gateway token for recording outcomes (writer);
        - ``FINPREDICT_GATEWAY_MONITOR_TOKEN``: the gateway's monitor token (writer);
        - ``FINPREDICT_MONITOR_REGISTRY_TOKEN``: the monitor's registry token (the services' reader:
          it fetches reference profiles);
        - ``FINPREDICT_CONSOLE_SESSION_KEYS``: the key the console seals sign-ins into their
          cookies with (32 random bytes, base64).
        """
        if self._secrets:
            return dict(self._secrets)
        values: dict[str, str] = {}
        if self.secrets_file.exists():
            lines = self.secrets_file.read_text().splitlines()
            values = dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
        if all(k in values for k in (*TOKEN_KEYS, *ACCEPTED_KEYS, CONSOLE_SESSION_KEYS)):
            self._secrets = values
            return dict(values)
        for key in TOKEN_KEYS:  # keep the tokens an older stack generated, add the missing ones
            values.setdefault(key, secrets.token_urlsafe(24))
        values.setdefault(CONSOLE_SESSION_KEYS, base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())
        admin, writer, reader = values["FINPREDICT_TOKEN"], values["FINPREDICT_REGISTRY_TOKEN"], values[
            "FINPREDICT_SERVICES_TOKEN"]  # fmt: skip
        controller, client = values["FINPREDICT_GATEWAY_REGISTRY_TOKEN"], values["FINPREDICT_CLIENT_TOKEN"]
        values["FINPREDICT_REGISTRY_TOKENS"] = (
            f"{admin}=operator:admin,{writer}=pipeline:writer,{controller}=rollout-controller:admin,"
            f"{reader}=services:reader"
        )
        values["FINPREDICT_GATEWAY_TOKENS"] = (
            f"{admin}=operator:admin,{client}=client:reader,{reader}=services:reader,"
            f"{values['FINPREDICT_OUTCOMES_TOKEN']}=outcomes:writer"
        )
        values["FINPREDICT_MONITOR_TOKENS"] = (
            f"{admin}=operator:admin,{values['FINPREDICT_GATEWAY_MONITOR_TOKEN']}=gateway:writer,"
            f"{reader}=services:reader"
        )
        values["FINPREDICT_MONITOR_REGISTRY_TOKEN"] = reader
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.secrets_file.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("# local finpredict tokens, generated by `finpredict up`; never commit\n")
            f.writelines(f"{k}={v}\n" for k, v in values.items())
        tmp.replace(self.secrets_file)
        self._secrets = values
        return dict(values)

    # ----- files and processes -----------------------------------------------------------------

    def paths(self, name: str) -> tuple[Path, Path, Path]:
        """Pid file, ready file and log file of a component."""
        return (
            self.run_dir / f"{name}.pid",
            self.run_dir / f"{name}.ready.json",
            self.run_dir / f"{name}.log",
        )

    def _config_path(self, daemon: str) -> Path:
        return self.run_dir / daemon / f"{daemon}.yml"

    def _is_ours(self, pid: int, name: str) -> bool:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        if name in DAEMONS:
            return f"--config.file={self._config_path(name)}".encode() in cmdline
        if name == "postgres":
            return str(self.postgres_root() / "data").encode() in cmdline
        if name == "s3":
            with contextlib.suppress(OSError):
                cwd = os.readlink(f"/proc/{pid}/cwd")
                return b"moto.server" in cmdline and cwd == str(self.data / "s3")
            return False
        if name in RAY_NODES:
            return f"--temp-dir={self.ray_temp_dir(name)}".encode() in cmdline
        return module(name).encode() in cmdline

    def running_pid(self, name: str) -> int | None:
        pid_file = self.paths(name)[0]
        if not pid_file.exists():
            return None
        text = pid_file.read_text().strip()
        pid = int(text) if text.isdigit() else 0
        return pid if pid and self._is_ours(pid, name) else None

    def ready(self, name: str) -> dict[str, Any] | None:
        """The ready file of a running component (None when it is not running)."""
        ready_file = self.paths(name)[1]
        if self.running_pid(name) is None or not ready_file.exists():
            return None
        try:
            info: dict[str, Any] = json.loads(ready_file.read_text())
        except ValueError:
            return None
        return info

    def targets(self) -> dict[str, str]:
        """gRPC addresses of the running services (and URLs of the running daemons)."""
        out = {}
        for name in COMPONENTS:
            info = self.ready(name)
            if info is not None:
                http = name in DAEMONS or name in HTTP_SERVICES or name == "s3"
                out[name] = info["url"] if http else f"{LOCALHOST}:{info['port']}"
        return out

    def serve_target(self) -> str | None:
        """The model server's Serve gRPC ingress (where the predictions are served)."""
        info = self.ready("model-server")
        if info is None or "serve_grpc_port" not in info:
            return None
        return f"{LOCALHOST}:{info['serve_grpc_port']}"

    def _shown(self, path: Path) -> Path:
        """``path`` relative to the project when it is inside it (for the log lines)."""
        root = self.project_root
        return path.relative_to(root) if root is not None and path.is_relative_to(root) else path

    # ----- start -------------------------------------------------------------------------------

    def service_env(self, service: str) -> dict[str, str]:
        """The settings that wire ``service`` to the running components of this stack."""
        p = env_prefix(service)
        env: dict[str, str] = {f"{p}HOST": LOCALHOST}
        if self.ephemeral_ports:
            env[f"{p}PORT"], env[f"{p}METRICS_PORT"] = "0", "0"
        t = self.targets()
        pg = self.ready("postgres")
        if service == "registry":
            env[f"{p}DATA_DIR"] = str(self.data / "registry")
            if pg is not None:
                env[f"{p}DATABASE_URL"] = pg["databases"]["registry"]
            if (s3 := self.ready("s3")) is not None:
                env.update(s3_server.CREDENTIALS)
                env[f"{p}ARTIFACT_STORE"] = f"s3://{ARTIFACT_BUCKET}/registry"
                env[f"{p}S3_ENDPOINT_URL"] = s3["url"]
        elif service == "model-server":
            if "registry" in t:
                env[f"{p}REGISTRY_TARGET"] = t["registry"]
            if "ray-head" in t:  # deploy to the stack's Ray cluster instead of a local Ray
                env[f"{p}RAY_ADDRESS"] = t["ray-head"]
                env.update(ray_nodes.BASE_ENV)  # the driver connects as the nodes expect
            if self.ephemeral_ports:
                env[f"{p}SERVE_GRPC_PORT"], env[f"{p}SERVE_HTTP_PORT"] = "0", "0"
        elif service == "monitor":
            env[f"{p}DATA_DIR"] = str(self.data / "monitor")  # its profiles' cache is under it
            if "alertmanager" in t:
                env[f"{p}ALERTMANAGER_URL"] = t["alertmanager"]
            if "registry" in t:  # where it fetches profiles, and where a retraining run registers
                env[f"{p}REGISTRY_TARGET"] = t["registry"]
                env["FINPREDICT_REGISTRY_TARGET"] = t["registry"]
        elif service == "console":
            # people sign in with their gateway token (admin actions go to the gateway with it);
            # the console reads with the services' reader token
            tokens = self.secrets()
            env[f"{p}TOKENS"] = tokens["FINPREDICT_GATEWAY_TOKENS"]
            env[f"{p}SESSION_KEYS"] = tokens[CONSOLE_SESSION_KEYS]
            for target in ("registry", "gateway", "monitor"):
                if target in t:
                    env[f"{p}{target.upper()}_TARGET"] = t[target]
                env[f"{p}{target.upper()}_TOKEN"] = tokens["FINPREDICT_SERVICES_TOKEN"]
        elif service_of(service) == "gateway":
            env[f"{p}DATA_DIR"] = str(self.data / service)
            if service != "gateway":  # a second replica: the documented ports are the first one's
                env[f"{p}PORT"], env[f"{p}METRICS_PORT"] = "0", "0"
            if pg is not None:  # every replica shares one state database
                env[f"{p}DATABASE_URL"] = pg["databases"]["gateway"]
                env[f"{p}REPLICA_ID"] = service
            if "registry" in t:
                env[f"{p}REGISTRY_TARGET"] = t["registry"]
            if (serve := self.serve_target()) is not None:
                env[f"{p}MODEL_SERVER_TARGET"] = serve
            if "monitor" in t:
                env[f"{p}MONITOR_TARGET"] = t["monitor"]
        return env

    def start(
        self, name: str, env: Mapping[str, str] | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """Starts one component (unless already running) and waits until it is healthy."""
        if name in DAEMONS:
            return self._start_daemon(name, timeout if timeout is not None else 60.0)
        if name in INFRA:
            return self._start_infra(name, timeout if timeout is not None else 120.0)
        timeout = timeout if timeout is not None else START_TIMEOUT_S.get(name, 60.0)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        pid_file, ready_file, log_file = self.paths(name)
        if (pid := self.running_pid(name)) is not None and ready_file.exists():
            info: dict[str, Any] = json.loads(ready_file.read_text())
            self.log(f"  {name:<13} already running (pid {pid}, port {info['port']})")
            return info
        ready_file.unlink(missing_ok=True)
        full_env = {
            **os.environ,
            **self.secrets(),
            **self.service_env(name),
            f"{env_prefix(name)}READY_FILE": str(ready_file),
            **(env or {}),
        }
        with log_file.open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", module(name)],
                env=full_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._procs[name] = proc
        pid_file.write_text(str(proc.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-15:])
                raise RuntimeError(f"{name} exited with {proc.returncode}; last log lines:\n{tail}")
            if ready_file.exists():
                info = json.loads(ready_file.read_text())
                # The model server's ready file gets its Serve ports once the app is RUNNING.
                complete = name != "model-server" or "serve_grpc_port" in info
                if complete and service_healthy(name, int(info["port"])):
                    extra = f", Serve gRPC :{info['serve_grpc_port']}" if name == "model-server" else ""
                    shown = self._shown(log_file)
                    where = info.get("url") or f"{LOCALHOST}:{info['port']}"
                    self.log(
                        f"  {name:<13} serving on {where} "
                        f"(metrics :{info['metrics_port']}{extra}, pid {proc.pid}, log {shown})"
                    )
                    return info
            time.sleep(0.1)  # polling a condition with a deadline, not waiting blindly
        self.stop(name)  # never leave a half-started service behind
        raise TimeoutError(f"{name} did not become healthy within {timeout:.0f}s (log: {log_file})")

    def _daemon_argv(self, name: str, binary: str, port: int) -> list[str]:
        config = self._config_path(name)
        config.parent.mkdir(parents=True, exist_ok=True)
        storage = self.data / name / "data"
        if name == "alertmanager":
            config.write_text((self.root / "infra" / "alertmanager" / "alertmanager.dev.yml").read_text())
            return [
                binary,
                f"--config.file={config}",
                f"--storage.path={storage}",
                f"--web.listen-address={LOCALHOST}:{port}",
                "--cluster.listen-address=",
            ]
        config.write_text(yaml.safe_dump(self.prometheus_config(), sort_keys=False))
        return [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={storage}",
            f"--web.listen-address={LOCALHOST}:{port}",
            "--enable-feature=exemplar-storage",
            "--web.enable-lifecycle",
        ]

    def prometheus_config(self) -> dict[str, Any]:
        """``infra/prometheus/prometheus.yml`` pointed at this stack: the services' real metrics
        ports, this stack's Alertmanager, the rule files by absolute path."""
        prometheus = self.root / "infra" / "prometheus"
        config: dict[str, Any] = yaml.safe_load((prometheus / "prometheus.yml").read_text())
        config["rule_files"] = [str(prometheus / r) for r in config.get("rule_files", [])]
        am = self.ready("alertmanager")
        if am is not None:
            config["alerting"] = {
                "alertmanagers": [{"static_configs": [{"targets": [f"{LOCALHOST}:{am['port']}"]}]}]
            }
        else:
            config.pop("alerting", None)
        for job in config.get("scrape_configs", []):
            service = str(job["job_name"]).removeprefix("finpredict-")
            infos = [self.ready(name) for name in COMPONENTS if service_of(name) == service]
            ports = [int(i.get("metrics_port", -1)) for i in infos if i is not None]
            if any(port > 0 for port in ports):  # every replica of the service
                for static in job.get("static_configs", []):
                    static["targets"] = [f"{LOCALHOST}:{port}" for port in ports if port > 0]
        return config

    def _already_running(self, name: str) -> dict[str, Any] | None:
        """The ready file of ``name`` when it runs (and says so in the log)."""
        ready_file = self.paths(name)[1]
        if (pid := self.running_pid(name)) is None or not ready_file.exists():
            return None
        info: dict[str, Any] = json.loads(ready_file.read_text())
        where = info.get("url") or f"{LOCALHOST}:{info['port']}"
        self.log(f"  {name:<13} already running (pid {pid}, {where})")
        return info

    def _start_process(
        self,
        name: str,
        spawn: Callable[[IO[bytes]], subprocess.Popen[bytes]],
        ready: Callable[[int], bool],
        info: dict[str, Any],
        timeout: float,
    ) -> dict[str, Any]:
        """Starts a process that writes no ready file of its own (``spawn(log)``), waits until
        ``ready(log_offset)`` (``log_offset``: the log's size before the start), then writes
        ``info`` and its pid as its ready file."""
        pid_file, ready_file, log_file = self.paths(name)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        ready_file.unlink(missing_ok=True)
        offset = log_file.stat().st_size if log_file.exists() else 0
        with log_file.open("ab") as log:
            proc = spawn(log)
        self._procs[name] = proc
        pid_file.write_text(str(proc.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-10:])
                raise RuntimeError(f"{name} exited with {proc.returncode}; last log lines:\n{tail}")
            if ready(offset):
                info = {**info, "pid": proc.pid}
                ready_file.write_text(json.dumps(info))
                where = info.get("url") or f"{LOCALHOST}:{info['port']}"
                self.log(f"  {name:<13} ready on {where} (pid {proc.pid}, log {self._shown(log_file)})")
                return info
            time.sleep(0.1)  # polling a condition with a deadline, not waiting blindly
        self.stop(name)
        raise TimeoutError(f"{name} did not become ready within {timeout:.0f}s (log: {log_file})")

    def _start_daemon(self, name: str, timeout: float) -> dict[str, Any]:
        if (info := self._already_running(name)) is not None:
            return info
        binary = next((b for b in (shutil.which(n) for n in DAEMON_BINARIES[name]) if b), None)
        if binary is None:
            raise FileNotFoundError(f"{name} is not installed (`task setup` installs the OS package)")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        port = free_port(LOCALHOST) if self.ephemeral_ports else DAEMON_PORTS[name]
        argv = self._daemon_argv(name, binary, port)
        url = f"http://{LOCALHOST}:{port}"

        def spawn(log: IO[bytes]) -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.run_dir, start_new_session=True
            )

        return self._start_process(
            name, spawn, lambda _: http_ok(f"{url}/-/ready"), {"port": port, "url": url}, timeout
        )

    # ----- the cluster profile's infrastructure ------------------------------------------------

    def _start_infra(self, name: str, timeout: float) -> dict[str, Any]:
        """PostgreSQL (with the services' databases), the S3 server (with the buckets) or a Ray node."""
        info = self._already_running(name)
        if info is None:
            port = free_port(LOCALHOST) if self.ephemeral_ports else INFRA_PORTS.get(name, 0)
            if name == "postgres":
                info = self._start_postgres(port, timeout)
            elif name == "s3":
                info = self._start_s3(port, timeout)
            else:
                try:
                    info = self._start_ray_node(name, port, timeout)
                except RuntimeError as exc:
                    # `ray start` gives its raylet a fixed 30 s to register with the GCS, which a
                    # loaded 2-core machine can miss; it then exits, having stopped what it started
                    self.log(f"  {name:<13} ray start failed ({str(exc).splitlines()[-1]}); once more")
                    self.stop(name)
                    info = self._start_ray_node(name, port, timeout)
        if name == "postgres":
            cluster = PostgresCluster(self.postgres_root(), int(info["port"]))
            for database in DATABASES:
                cluster.create_database(database)
        elif name == "s3":
            for bucket in (ARTIFACT_BUCKET, DVC_BUCKET):
                s3_server.create_bucket(info["url"], bucket)
        return info

    def _start_postgres(self, port: int, timeout: float) -> dict[str, Any]:
        cluster = PostgresCluster(self.postgres_root(), port)
        cluster.init()
        databases = {db: cluster.url(db) for db in DATABASES}
        return self._start_process(
            "postgres",
            lambda log: cluster.spawn(log, start_new_session=True),
            lambda _: cluster.ready(),
            {"port": port, "databases": databases},
            timeout,
        )

    def _start_s3(self, port: int, timeout: float) -> dict[str, Any]:
        s3_server.require_moto()
        work = self.data / "s3"
        work.mkdir(parents=True, exist_ok=True)
        url = s3_server.endpoint(port)

        def spawn(log: IO[bytes]) -> subprocess.Popen[bytes]:
            argv = s3_server.argv(port)
            return subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, cwd=work, start_new_session=True
            )

        return self._start_process(
            "s3", spawn, lambda _: s3_server.answers(url), {"port": port, "url": url}, timeout
        )

    def _start_ray_node(self, name: str, port: int, timeout: float) -> dict[str, Any]:
        temp_dir = self.ray_temp_dir(name)
        temp_dir.mkdir(parents=True, exist_ok=True)
        # the replicas run in the nodes' worker processes: they read their settings (the
        # services' registry token) from the environment of `ray start`
        env = {**os.environ, **self.secrets(), **ray_nodes.BASE_ENV}
        if name == "ray-head":
            args = ray_nodes.head_args(port, RAY_NODE_CPUS)
            info: dict[str, Any] = {"port": port}
        else:
            head = self.ready("ray-head")
            if head is None:
                raise RuntimeError(f"{name} joins the stack's ray-head, which is not running")
            args = ray_nodes.worker_args(f"{LOCALHOST}:{head['port']}", RAY_NODE_CPUS)
            env.update(ray_nodes.worker_env())
            info = {"port": head["port"]}  # the cluster it joined
        argv = ray_nodes.start_argv(temp_dir, args)
        log_file = self.paths(name)[2]

        def spawn(log: IO[bytes]) -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=temp_dir, start_new_session=True
            )

        return self._start_process(
            name,
            spawn,
            lambda offset: ray_nodes.started(log_file, offset),
            {**info, "temp_dir": str(temp_dir)},
            timeout,
        )

    def dvc_remote(self) -> tuple[str, dict[str, str]] | None:
        """The DVC remote on the stack's S3 server (its URL and ``dvc remote modify`` options, the
        credentials among them), or None when no S3 server runs."""
        s3 = self.ready("s3")
        if s3 is None:
            return None
        options = {
            "endpointurl": s3["url"],
            "region": s3_server.REGION,
            "access_key_id": s3_server.CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "secret_access_key": s3_server.CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        }
        return f"s3://{DVC_BUCKET}/dvc", options

    def up(
        self,
        only: list[str] | None = None,
        env: Mapping[str, Mapping[str, str]] | None = None,
        daemons: bool = True,
    ) -> None:
        """Starts the chosen components of the profile in dependency order (daemons that are not
        installed are skipped with a warning; the cluster profile's infrastructure is required)."""
        for name in PROFILES[self.profile]:
            if only is not None and name not in only:
                continue
            if name in DAEMONS:
                if not daemons:
                    continue
                try:
                    self.start(name)
                except FileNotFoundError as exc:
                    self.log(f"  {name:<13} skipped: {exc}")
                continue
            self.start(name, env=(env or {}).get(name))

    # ----- stop --------------------------------------------------------------------------------

    def stop(self, name: str, timeout: float = 30.0) -> bool:
        """SIGTERM (graceful drain; PostgreSQL: SIGINT, its fast shutdown; a Ray node's ``ray start
        --block`` tears its node down), then SIGKILL after ``timeout`` (to a Ray node's whole
        session). A Ray node's temp dir goes with it. Returns whether it was running."""
        pid_file, ready_file, _ = self.paths(name)
        pid = self.running_pid(name)
        proc = self._procs.pop(name, None)
        ray_node = name in RAY_NODES
        if pid is None:
            pid_file.unlink(missing_ok=True)
            ready_file.unlink(missing_ok=True)
            if proc is not None:
                proc.poll()  # reap it if it exited on its own
            if ray_node:  # e.g. a `ray start` that failed: its session's files
                shutil.rmtree(self.ray_temp_dir(name), ignore_errors=True)
            return False
        os.kill(pid, signal.SIGINT if name == "postgres" else signal.SIGTERM)
        deadline = time.monotonic() + (max(timeout, 60.0) if ray_node else timeout)
        while time.monotonic() < deadline and self._is_ours(pid, name):
            time.sleep(0.1)
        if self._is_ours(pid, name):
            with contextlib.suppress(ProcessLookupError):
                if ray_node:  # its own session (started with start_new_session): raylet, GCS, agents
                    os.killpg(pid, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)
        if proc is not None and proc.pid == pid:
            proc.wait(timeout=30)  # our child: reap it (others are reaped by their parent or init)
        pid_file.unlink(missing_ok=True)
        ready_file.unlink(missing_ok=True)
        if ray_node:
            shutil.rmtree(self.ray_temp_dir(name), ignore_errors=True)
        return True

    def down(self, only: list[str] | None = None) -> dict[str, bool]:
        """Stops the chosen components in reverse start order; returns which were running."""
        return {name: self.stop(name) for name in reversed(COMPONENTS) if only is None or name in only}
