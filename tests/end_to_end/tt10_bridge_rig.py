"""A `quantrac bridge tt10 serve` process with its registry, sources file, keys and certificate, for
the end-to-end tests: stations bound to the bridge's key, their TT10 accounts in the registry
(`tt10:` entries, scrypt hashes; SFTP stations with an OpenSSH key), FTP with explicit FTPS and SFTP
on free ports, a real Mosquitto, the real collector and the session QuestDB."""

from __future__ import annotations

import socket
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from broker_bridge.broker_config import Pki, create_pki
from broker_bridge.keys import write_new_key
from broker_bridge.tt10.sources.accounts import hash_password
from cli.processes import tt10_bridge_process
from collector.registry import add_station, bind_bridge
from supervisor.process import ManagedProcess, free_ports, wait_until
from tests.helpers import require_tool


@dataclass(frozen=True)
class Tt10Station:
    station: str
    account: str
    password: str
    ssh_key: Path | None = None  # the OpenSSH private key of an SFTP station


@dataclass
class BridgeRig:
    tmp: Path
    root: Path
    registry: Path
    sources: Path
    key: Path
    pki: Pki
    ftp_port: int
    sftp_port: int
    stations: list[Tt10Station]
    process: ManagedProcess
    pg: str
    watch_dir: Path | None = None
    starts: int = field(default=0)

    @property
    def log(self) -> Path:
        return self.process.log_path

    def start(self) -> None:
        self.process.start()
        self.starts += 1
        wait_until(self._ready, timeout=60, what="the TT10 bridge to listen and connect", process=self.process)

    def _ready(self) -> bool:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        if text.count("tt10_bridge_connected") < self.starts:
            return False
        for port in (self.ftp_port, self.sftp_port):
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                pass
        return True

    def known_hosts(self) -> Path:
        """The bridge's SFTP host key as a known_hosts line (what a province gives its stations)."""
        exe = require_tool("ssh-keygen", package="openssh-client")
        key = self.root.parent / "state" / "ssh_host_ed25519_key"
        public = subprocess.run([exe, "-y", "-f", str(key)], capture_output=True, text=True, check=True).stdout
        path = self.tmp / "known_hosts"
        path.write_text(f"[127.0.0.1]:{self.sftp_port} {public.strip()}\n")
        return path

    def ftp_url(self, station: Tt10Station, path: str = "/") -> str:
        return f"ftp://{station.account}:{station.password}@127.0.0.1:{self.ftp_port}{path}"


def _ssh_key(tmp: Path, name: str) -> tuple[Path, str]:
    exe = require_tool("ssh-keygen", package="openssh-client")
    path = tmp / "ssh" / name
    path.parent.mkdir(exist_ok=True)
    subprocess.run([exe, "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)], check=True, timeout=30)
    return path, path.with_suffix(".pub").read_text().strip()


def make_bridge_rig(
    tmp: Path,
    broker_port: int,
    make_collector,
    warehouse,
    *,
    ftp_stations: int = 2,
    sftp_stations: int = 1,
    hold_s: float = 600.0,
    watch_stations: list[str] = (),  # type: ignore[assignment]
    max_files_per_minute: int = 60,
    prefix: str | None = None,
) -> BridgeRig:
    """Registry, keys, sources file and the bridge process (not started); the collector runs."""
    prefix = prefix or f"TB{uuid.uuid4().hex[:6].upper()}"
    registry = tmp / "registry.yaml"
    stations: list[Tt10Station] = []
    entries: dict[str, dict] = {}
    password_hashes: dict[str, str] = {}
    for i in range(ftp_stations + sftp_stations):
        station = f"{prefix}_S{i:03d}"
        add_station(registry, station, write_new_key(tmp / "keys" / f"{station}.key").public_key, kind="ambient_air")
        account = f"{prefix.lower()}_s{i:03d}"
        password = f"pw-{uuid.uuid4().hex[:10]}"
        entry: dict = {"account": account, "max_files_per_minute": max_files_per_minute}
        ssh_key = None
        if i >= ftp_stations:
            ssh_key, public = _ssh_key(tmp, account)
            entry["authorized_keys"] = [public]
        else:
            # one scrypt per distinct password costs ~60 ms: stations of a load test share a hash
            password = "pw-load" if ftp_stations > 10 else password
            entry["password_hash"] = password_hashes.get(password) or password_hashes.setdefault(
                password, hash_password(password)
            )
        entries[station] = entry
        stations.append(Tt10Station(station, account, password, ssh_key))
    for station in watch_stations:
        add_station(registry, station, write_new_key(tmp / "keys" / f"{station}.key").public_key, kind="ambient_air")
    doc = yaml.safe_load(registry.read_text())
    for station, entry in entries.items():
        doc["stations"][station]["tt10"] = entry
    registry.write_text(yaml.safe_dump(doc, sort_keys=True))
    key = tmp / "bridge.key"
    signing = write_new_key(key)
    bind_bridge(registry, "tt10-e2e", signing.public_key, [s.station for s in stations] + list(watch_stations))
    make_collector(broker_port, registry, f"collector-{prefix}")
    pki = create_pki(tmp / "pki")
    ftp_port, sftp_port = free_ports(2)
    state = tmp / "state"
    sources: dict = {
        "state_dir": str(state),
        "homes_dir": str(tmp / "homes"),
        "ftp": {
            "host": "127.0.0.1",
            "port": ftp_port,
            "certfile": str(pki.server_cert),
            "keyfile": str(pki.server_key),
            "auth_failed_delay_s": 0.1,
        },
        "sftp": {"host": "127.0.0.1", "port": sftp_port},
        "accounts_in_registry": True,
    }
    watch_dir = None
    if watch_stations:
        watch_dir = tmp / "drop"
        watch_dir.mkdir()
        sources["watch"] = [{"dir": str(watch_dir), "settle_s": 0.5, "interval_s": 0.5}]
    state.mkdir()
    sources_path = tmp / "sources.yaml"
    sources_path.write_text(yaml.safe_dump(sources, sort_keys=False))
    root = tmp / "bridge"
    process = tt10_bridge_process(
        sources_path, root, f"127.0.0.1:{broker_port}", key, tmp / "bridge.log", registry=registry,
        bridge="tt10-e2e", questdb=f"127.0.0.1:{warehouse.http_port}", hold_s=hold_s,
        client_id=f"tt10-bridge-{prefix}",
    )  # fmt: skip
    return BridgeRig(
        tmp, root, registry, sources_path, key, pki, ftp_port, sftp_port, stations, process,
        warehouse.pg_conninfo, watch_dir,
    )  # fmt: skip
