"""Run a real QuestDB server (the pinned jar) as a supervised child process.

Used by ``quantrac demo`` and by the test-suite (``tests/conftest.py``).
QuestDB 9.3.4 is pinned: 9.4+ needs Java 25, this project targets Java 17.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from supervisor import ServerStartError, free_ports, port_in_use
from supervisor.address import split_host_port
from supervisor.paths import cache_dir
from supervisor.server import ServerProcess

__all__ = [
    "QUESTDB_VERSION",
    "QuestDBEndpoints",
    "QuestDBServer",
    "check_java",
    "fetch_questdb_jar",
    "find_java",
    "find_questdb_jar",
    "questdb_jar_candidates",
    "render_server_conf",
]

QUESTDB_VERSION = "9.3.4"
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_JAR = REPO_ROOT / ".cache" / "questdb" / f"questdb-{QUESTDB_VERSION}.jar"
PG_USER = "admin"
PG_PASSWORD = "quest"
COMMIT_MODES = ("nosync", "async", "sync")


MAVEN_ARTIFACT = f"org.questdb:questdb:{QUESTDB_VERSION}"
JAR_NAME = f"questdb-{QUESTDB_VERSION}.jar"
MIN_JAVA = 17


def questdb_jar_candidates() -> list[Path]:
    """Where a QuestDB 9.3.4 jar is looked for, in order (the first that exists wins).

    This checkout's ``.cache/questdb/`` (scripts/bootstrap.sh), quantrac's cache
    (``supervisor.paths.cache_dir()/questdb/``: what ``fetch_questdb_jar`` writes when
    quantrac was installed from a wheel), then Maven's local repository (``mvn dependency:get``).
    """
    return [
        DEFAULT_JAR,
        cache_dir() / "questdb" / JAR_NAME,
        Path.home() / ".m2" / "repository" / "org" / "questdb" / "questdb" / QUESTDB_VERSION / JAR_NAME,
    ]


def find_questdb_jar() -> Path:
    """$QUANTRAC_QUESTDB_JAR, else the first of ``questdb_jar_candidates()`` that exists."""
    env = os.environ.get("QUANTRAC_QUESTDB_JAR")
    if env:
        jar = Path(env).expanduser()
        if not jar.is_file():
            raise FileNotFoundError(f"QUANTRAC_QUESTDB_JAR={env} is not a file")
        return jar
    for jar in questdb_jar_candidates():
        if jar.is_file():
            return jar
    raise FileNotFoundError(
        f"QuestDB jar not found at {DEFAULT_JAR}; run `make setup` (scripts/bootstrap.sh)"
        f" or `quantrac warehouse run`, which fetches {MAVEN_ARTIFACT} with Maven"
    )


def fetch_questdb_jar(dest_dir: Path | None = None, timeout: float = 600.0) -> Path:
    """Copy ``org.questdb:questdb:9.3.4`` from Maven Central into ``dest_dir`` with ``mvn``, as bootstrap.sh does.

    ``dest_dir`` defaults to ``cache_dir()/questdb``.  Raises FileNotFoundError with the one
    thing to install when Maven is missing, RuntimeError with Maven's last lines when it fails.
    """
    dest_dir = Path(dest_dir) if dest_dir is not None else cache_dir() / "questdb"
    mvn = shutil.which("mvn")
    if mvn is None:
        install = "apt-get install maven" if shutil.which("apt-get") else "install Apache Maven"
        raise FileNotFoundError(
            f"QuestDB {QUESTDB_VERSION} jar not found and mvn is missing to fetch it: {install},"
            f" or download {JAR_NAME} ({MAVEN_ARTIFACT}) and pass --jar / set QUANTRAC_QUESTDB_JAR"
        )
    dest_dir.mkdir(parents=True, exist_ok=True)
    argv = [mvn, "-q", "-B", "-Dstyle.color=never", "dependency:copy", f"-Dartifact={MAVEN_ARTIFACT}"]
    argv.append(f"-DoutputDirectory={dest_dir}")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    jar = dest_dir / JAR_NAME
    if done.returncode != 0 or not jar.is_file():
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-10:])
        raise RuntimeError(f"`{' '.join(argv)}` failed (exit {done.returncode}); {jar} not written:\n{tail}")
    return jar


def find_java() -> Path:
    """``$JAVA_HOME/bin/java`` if set, else ``java`` on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return Path(java_home) / "bin" / "java"
    found = shutil.which("java")
    if not found:
        install = "apt-get install openjdk-17-jre-headless" if shutil.which("apt-get") else "install a Java 17+ JRE"
        raise FileNotFoundError(
            f"java not found (QuestDB {QUESTDB_VERSION} needs Java 17+): {install} or set JAVA_HOME"
        )
    return Path(found)


def java_major(java: Path) -> int:
    """The major version ``java -version`` reports (8 for 1.8, 17 for 17.0.x)."""
    done = subprocess.run([str(java), "-version"], capture_output=True, text=True, timeout=30, check=False)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', done.stderr + done.stdout)
    if match is None:
        raise RuntimeError(f"could not read the version of {java} from `java -version`: {done.stderr.strip()!r}")
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def check_java(java: Path | None = None) -> Path:
    """The Java that will run QuestDB, refused with what to install when it is older than 17."""
    java = java or find_java()
    major = java_major(java)
    if major < MIN_JAVA:
        install = "apt-get install openjdk-17-jre-headless" if shutil.which("apt-get") else "install a Java 17+ JRE"
        raise FileNotFoundError(f"{java} is Java {major}; QuestDB {QUESTDB_VERSION} needs Java 17+: {install}")
    return java


@dataclass(frozen=True)
class QuestDBEndpoints:
    host: str
    http_port: int
    pg_port: int
    min_http_port: int

    @classmethod
    def at(cls, pg: str, http: str | None = None) -> QuestDBEndpoints:
        """A running QuestDB from the ``host:port`` options people give (``--questdb-pg``, ``--questdb``).

        With both, the HTTP address's host serves both ports.
        """
        if http is None:
            host, pg_port = split_host_port(pg, "QuestDB PostgreSQL-wire address", "127.0.0.1:8812")
            return cls(host, 0, pg_port, 0)
        host, http_port = split_host_port(http, "QuestDB HTTP address", "127.0.0.1:9000")
        _, pg_port = split_host_port(pg, "QuestDB PostgreSQL-wire address", "127.0.0.1:8812")
        return cls(host, http_port, pg_port, 0)

    @property
    def ilp_conf(self) -> str:
        """Config string for ``questdb.Sender.from_conf`` (ILP over HTTP, manual flush)."""
        return (
            f"http::addr={self.host}:{self.http_port};protocol_version=2;"
            "auto_flush=off;retry_timeout=2000;request_timeout=10000;"
        )

    @property
    def pg_conninfo(self) -> str:
        """libpq conninfo for psycopg (PostgreSQL wire protocol)."""
        return f"host={self.host} port={self.pg_port} user={PG_USER} password={PG_PASSWORD} dbname=qdb"

    @property
    def console_url(self) -> str:
        return f"http://{self.host}:{self.http_port}/"

    @property
    def ping_url(self) -> str:
        return f"http://{self.host}:{self.http_port}/ping"


def render_server_conf(endpoints: QuestDBEndpoints, commit_mode: str = "nosync", extra_conf: str = "") -> str:
    """server.conf for a private, loopback-only QuestDB with ILP auto-create OFF.

    ``config.validation.strict=true`` makes QuestDB refuse unknown keys, so a
    typo here fails the start instead of being silently ignored.
    """
    if commit_mode not in COMMIT_MODES:
        raise ValueError(f"commit_mode must be one of {COMMIT_MODES}, not {commit_mode!r}")
    h = endpoints.host
    return "\n".join(
        [
            "# generated by store/questdb_server.py - rewritten on every start",
            f"http.net.bind.to={h}:{endpoints.http_port}",
            f"http.min.net.bind.to={h}:{endpoints.min_http_port}",
            f"pg.net.bind.to={h}:{endpoints.pg_port}",
            f"pg.user={PG_USER}",
            f"pg.password={PG_PASSWORD}",
            # ILP only over HTTP (same port as the REST API / console)
            "line.tcp.enabled=false",
            "line.udp.enabled=false",
            # schema is owned by store/schema.py: unknown tables/columns are errors
            "line.auto.create.new.tables=false",
            "line.auto.create.new.columns=false",
            f"cairo.commit.mode={commit_mode}",
            "telemetry.enabled=false",
            "config.validation.strict=true",
            "shared.worker.count=2",
            # e.g. dev.mode.enabled=true, which a test needs to SUSPEND WAL a table
            extra_conf,
            "",
        ]
    )


class QuestDBServer(ServerProcess):
    name = "questdb"

    """A QuestDB process rooted at ``root`` (its ``-d`` directory).

    Ports are chosen once (when None) in ``__init__``, so ``stop()`` followed by
    ``start()`` reuses the same ports *and* the same data directory.
    """

    def __init__(
        self,
        root: Path | str,
        http_port: int | None = None,
        pg_port: int | None = None,
        min_http_port: int | None = None,
        jar: Path | str | None = None,
        heap: str = "1g",
        commit_mode: str = "nosync",
        host: str = "127.0.0.1",
        extra_conf: str = "",
    ) -> None:
        if commit_mode not in COMMIT_MODES:
            raise ValueError(f"commit_mode must be one of {COMMIT_MODES}, not {commit_mode!r}")
        self.root = Path(root).resolve()
        picked = iter(free_ports(3, host))
        self.endpoints = QuestDBEndpoints(
            host=host,
            http_port=http_port or next(picked),
            pg_port=pg_port or next(picked),
            min_http_port=min_http_port or next(picked),
        )
        self._jar = Path(jar) if jar is not None else None
        self.heap = heap
        self.commit_mode = commit_mode
        self.extra_conf = extra_conf
        self.log_path = self.root / "questdb.log"

    # -- info ------------------------------------------------------------------

    @property
    def jar(self) -> Path:
        if self._jar is not None:
            if not self._jar.is_file():
                raise FileNotFoundError(
                    f"QuestDB jar not found at {self._jar}; run `make setup` (scripts/bootstrap.sh)"
                )
            return self._jar
        return find_questdb_jar()

    @property
    def conf_path(self) -> Path:
        return self.root / "conf" / "server.conf"

    def argv(self) -> list[str]:
        return [
            str(find_java()),
            "-Xms128m",
            f"-Xmx{self.heap}",
            "--add-exports",
            "java.base/jdk.internal.math=io.questdb",
            "-p",
            str(self.jar),
            "-m",
            "io.questdb/io.questdb.ServerMain",
            "-d",
            str(self.root),
        ]

    def __repr__(self) -> str:
        e = self.endpoints
        return f"<QuestDBServer root={self.root} http={e.http_port} pg={e.pg_port} running={self.running}>"

    # -- readiness -------------------------------------------------------------

    def ping(self, timeout: float = 1.0) -> bool:
        """True if ``GET /ping`` answers 204."""
        try:
            with urllib.request.urlopen(self.endpoints.ping_url, timeout=timeout) as resp:
                return resp.status == 204
        except (urllib.error.URLError, OSError):
            return False

    def _ready(self) -> bool:
        return self.ping() and port_in_use(self.endpoints.host, self.endpoints.pg_port)

    # -- control ---------------------------------------------------------------

    def start(self, timeout: float = 90.0) -> QuestDBServer:
        if self.running:
            return self
        e = self.endpoints
        for port in (e.http_port, e.pg_port, e.min_http_port):
            if port_in_use(e.host, port):
                raise ServerStartError(f"QuestDB cannot start: {e.host}:{port} is already in use by another process")
        argv = self.argv()  # resolves java + jar (clear errors) before touching disk
        self.conf_path.parent.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(render_server_conf(e, self.commit_mode, self.extra_conf))
        self._launch(
            argv, self._ready, what=f"QuestDB /ping on {e.ping_url}", timeout=timeout, interval=0.1, stop_timeout=10
        )
        return self
