"""Real PostgreSQL and MariaDB servers from Debian's packages, on loopback, in temporary directories.

``PostgresServer().start()`` / ``MariaDBServer().start()`` start a private server (its own data
directory, a free port on 127.0.0.1, a socket in the same directory) owned by this process, and
``stop()`` shuts it down and removes the directory. ``create_database(name)`` returns a URL that
``sidecar.storage.open_database`` accepts. ``missing()`` says why a server cannot run here (the
binaries are absent) or returns None; CI installs them (.ci/run), so there the tests always run.

PostgreSQL refuses to run as root: as root the server runs as ``nobody``. Servers are started with
``PR_SET_PDEATHSIG`` so they die with the test process even when it is killed.
"""

from __future__ import annotations

import ctypes
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def _tool(name: str, *fallbacks: str) -> str | None:
    found = shutil.which(name)
    return found or next((f for f in fallbacks if os.access(f, os.X_OK)), None)


def _postgres_bin(name: str) -> str | None:
    # Debian keeps the server binaries in /usr/lib/postgresql/<major>/bin, off PATH: newest first.
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True)
    return next((f"{v}/{name}" for v in versions if os.access(f"{v}/{name}", os.X_OK)), None) or _tool(name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent():  # runs in the child between fork and exec
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _wait(check, what: str, proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{_tail(log)}")
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not start within {timeout:.0f} s:\n{_tail(log)}")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _run(args: list[str], **kwargs) -> None:
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, **kwargs)
    if done.returncode:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


class _Server:
    name = ""
    proc: subprocess.Popen | None = None
    dir: Path | None = None
    port = 0
    started_in = 0.0

    def _stop_process(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


class PostgresServer(_Server):
    name = "PostgreSQL"

    @staticmethod
    def missing() -> str | None:
        if not (_postgres_bin("initdb") and _postgres_bin("postgres")):
            return "PostgreSQL is not installed (apt-get install postgresql)"
        try:
            import psycopg2  # noqa: F401
        except ImportError:
            return "psycopg2 is not installed (pip install -r requirements.txt)"
        return None

    def start(self) -> "PostgresServer":
        began = time.monotonic()
        self.dir = Path(tempfile.mkdtemp(prefix="kc-pg-"))
        owner = {}
        if os.geteuid() == 0:  # "root" execution of the PostgreSQL server is not permitted
            nobody = pwd.getpwnam("nobody")
            os.chown(self.dir, nobody.pw_uid, nobody.pw_gid)
            owner = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": [], "cwd": self.dir}
        data, log = self.dir / "data", self.dir / "server.log"
        _run([_postgres_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
              "--no-locale", "--no-sync"], **owner)
        self.port = free_port()
        self.proc = subprocess.Popen(
            [_postgres_bin("postgres"), "-D", str(data), "-p", str(self.port), "-k", str(self.dir),
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
             "-c", "full_page_writes=off", "-c", "max_connections=60", "-c", "logging_collector=off"],
            stdout=open(log, "ab"), stderr=subprocess.STDOUT, preexec_fn=_die_with_parent, **(owner or {"cwd": self.dir}))
        _wait(lambda: self._connect("postgres").close() or True, "PostgreSQL", self.proc, log)
        self.started_in = time.monotonic() - began
        return self

    def _connect(self, database: str):
        import psycopg2
        return psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=database, connect_timeout=5)

    def create_database(self, name: str) -> str:
        conn = self._connect("postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
                cur.execute(f"CREATE DATABASE \"{name}\" ENCODING 'UTF8' TEMPLATE template0")
        finally:
            conn.close()
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        self._stop_process(signal.SIGINT)  # "fast" shutdown: disconnect clients, then stop


class MariaDBServer(_Server):
    name = "MariaDB"
    PASSWORD = "sidecar-test"

    @staticmethod
    def missing() -> str | None:
        if not (_tool("mariadbd", "/usr/sbin/mariadbd") and _tool("mariadb-install-db", "/usr/bin/mariadb-install-db")):
            return "MariaDB is not installed (apt-get install mariadb-server)"
        try:
            import pymysql  # noqa: F401
        except ImportError:
            return "PyMySQL is not installed (pip install -r requirements.txt)"
        return None

    def start(self) -> "MariaDBServer":
        began = time.monotonic()
        self.dir = Path(tempfile.mkdtemp(prefix="kc-mariadb-"))
        data, log, sock = self.dir / "data", self.dir / "server.log", self.dir / "mariadb.sock"
        as_root = ["--user=root"] if os.geteuid() == 0 else []  # mariadbd refuses root without it
        _run([_tool("mariadb-install-db", "/usr/bin/mariadb-install-db"), "--no-defaults", f"--datadir={data}",
              "--auth-root-authentication-method=normal", "--skip-test-db", *as_root])
        self.port = free_port()
        self.proc = subprocess.Popen(
            [_tool("mariadbd", "/usr/sbin/mariadbd"), "--no-defaults", f"--datadir={data}", f"--socket={sock}",
             f"--port={self.port}", "--bind-address=127.0.0.1", "--skip-name-resolve", "--skip-log-bin",
             "--character-set-server=utf8mb4", "--collation-server=utf8mb4_unicode_ci",
             "--innodb-buffer-pool-size=64M", "--innodb-flush-log-at-trx-commit=0", "--innodb-doublewrite=0",
             "--max-connections=100", f"--log-error={log}", f"--pid-file={self.dir / 'mariadb.pid'}", *as_root],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        _wait(lambda: self._connect(unix_socket=str(sock), user="root").close() or True, "MariaDB", self.proc, log)
        conn = self._connect(unix_socket=str(sock), user="root")
        try:
            with conn.cursor() as cur:  # a TCP account like a real deployment's, not root over the socket
                cur.execute(f"CREATE USER 'sidecar'@'127.0.0.1' IDENTIFIED BY '{self.PASSWORD}'")
                cur.execute("GRANT ALL PRIVILEGES ON *.* TO 'sidecar'@'127.0.0.1'")
        finally:
            conn.close()
        self.started_in = time.monotonic() - began
        return self

    def _connect(self, **kwargs):
        import pymysql
        kwargs.setdefault("host", "127.0.0.1")
        kwargs.setdefault("port", self.port)
        kwargs.setdefault("user", "sidecar")
        kwargs.setdefault("password", self.PASSWORD if kwargs["user"] == "sidecar" else "")
        return pymysql.connect(connect_timeout=5, autocommit=True, **kwargs)

    def create_database(self, name: str) -> str:
        conn = self._connect()
        try:
            with conn.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
                cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        finally:
            conn.close()
        return f"mysql://sidecar:{self.PASSWORD}@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        self._stop_process(signal.SIGTERM)
