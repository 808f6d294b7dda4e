"""PostgreSQL on loopback from the OS packages (``initdb`` + ``postgres``): the cluster profile's
database server (:class:`~finpredict.stack.launcher.Stack`) and the test kit's throwaway one.

The binaries come from the ``postgresql`` OS package (``scripts/setup_os.sh`` installs it), under
``/usr/lib/postgresql/<version>/bin``. PostgreSQL refuses to run as root: as root, the cluster is
owned by and runs as the ``postgres`` OS user (created when missing), so its folder must be one
that user can reach.
"""

from __future__ import annotations

import glob
import os
import pwd
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from finpredict.common.addresses import LOCALHOST

SUPERUSER = "postgres"
OS_USER = "postgres"  # who runs the server when we are root


def pg_bin() -> Path:
    """The newest installed PostgreSQL's ``bin`` folder; FileNotFoundError naming the package if none."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[-3]))
    if not found:
        raise FileNotFoundError(
            "PostgreSQL binaries not found: run scripts/setup_os.sh (`task setup`: the postgresql package)"
        )
    return Path(found[-1]).parent


def run_as() -> dict[str, Any]:
    """``subprocess`` arguments that run PostgreSQL's binaries as the ``postgres`` OS user when we
    are root (creating that user if needed); none otherwise."""
    if os.geteuid() != 0:
        return {}
    try:
        pwd.getpwnam(OS_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", OS_USER], check=True)
    pw = pwd.getpwnam(OS_USER)
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


@dataclass
class PostgresCluster:
    """A database cluster in ``root`` (``data/``, the unix socket's ``sock/``) served on loopback ``port``."""

    root: Path
    port: int

    @property
    def data(self) -> Path:
        return self.root / "data"

    def init(self) -> None:
        """``initdb`` (trust authentication on loopback, superuser ``postgres``) unless already done."""
        if (self.data / "PG_VERSION").exists():
            return
        user = run_as()
        self.root.mkdir(parents=True, exist_ok=True)
        if user:
            os.chown(self.root, user["user"], user["group"])
        done = subprocess.run(
            [pg_bin() / "initdb", "-D", self.data, "-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--no-sync"],
            capture_output=True,
            text=True,
            cwd=self.root,
            **user,
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb {self.data} failed ({done.returncode}): {done.stderr.strip()}")
        subprocess.run(["mkdir", "-p", self.root / "sock"], check=True, **user)

    def argv(self) -> list[str]:
        """The server's command line: loopback only, durability traded for speed (a local platform)."""
        return [
            str(pg_bin() / "postgres"),
            "-D", str(self.data),
            "-p", str(self.port),
            "-k", str(self.root / "sock"),
            "-c", f"listen_addresses={LOCALHOST}",
            "-c", "fsync=off",
            "-c", "synchronous_commit=off",
            "-c", "full_page_writes=off",
            "-c", "max_connections=100",
        ]  # fmt: skip

    def spawn(self, log: IO[bytes], **popen: Any) -> subprocess.Popen[bytes]:
        """Starts the server (as the ``postgres`` OS user when we are root); see :meth:`ready`."""
        return subprocess.Popen(
            self.argv(), stdout=log, stderr=subprocess.STDOUT, cwd=self.root, **run_as(), **popen
        )

    def _client(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [str(pg_bin() / tool), "-h", LOCALHOST, "-p", str(self.port), "-U", SUPERUSER, *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=30)

    def ready(self) -> bool:
        """Whether the server accepts connections (``pg_isready``)."""
        return self._client("pg_isready", "-d", "postgres", "-t", "2").returncode == 0

    def create_database(self, name: str) -> None:
        """Creates database ``name`` unless it exists."""
        query = f"SELECT 1 FROM pg_database WHERE datname = '{name}'"
        found = self._client("psql", "-X", "-d", "postgres", "-tAc", query)
        if found.returncode != 0:
            raise RuntimeError(f"psql failed: {found.stderr.strip()}")
        if found.stdout.strip() == "1":
            return
        made = self._client("createdb", name)
        if made.returncode != 0:
            raise RuntimeError(f"createdb {name} failed: {made.stderr.strip()}")

    def url(self, database: str = "postgres", driver: str = "postgresql+psycopg") -> str:
        """The SQLAlchemy URL of ``database`` (``driver="postgresql"``: a libpq URL)."""
        return f"{driver}://{SUPERUSER}@{LOCALHOST}:{self.port}/{database}"
