"""The Mosquitto configuration we ship: users, ACL, TLS and queue sizing.

``generate_broker_config`` turns a list of station ids into a directory an
operator copies to the broker host::

    mosquitto.conf            listeners, auth, persistence, queue limits
    passwd                    Mosquitto's hashed password file (0600)
    acl                       per-user topic rules
    credentials/<user>.password   one random password per station and collector (0600)

Facts about Mosquitto 2.0.11 this module relies on (checked against the real
broker by ``tests/broker_bridge/test_broker_security.py`` and ``tests/broker_bridge/test_broker_listeners.py``):

* the password file's ``$7$<iterations>$<salt b64>$<hash b64>`` lines are
  PBKDF2-HMAC-SHA512 with a 12-byte salt and a 64-byte hash, 101 iterations
  by default; the broker reads the iteration count from each line;
* a QoS 1 PUBLISH the ACL forbids is answered (MQTT v5) with PUBACK reason
  code 0x87 *Not authorized* and is delivered to nobody;
* acl_file never refuses a SUBSCRIBE (src/security_default.c returns success
  for it) and checks *read* access when a message is delivered, against the
  message's own topic.  A ``$share/<group>/quantrac/v1/+/data`` subscription
  therefore receives exactly what ``topic read quantrac/v1/+/data`` allows, an
  ACL line naming the ``$share/...`` form grants nothing, and a station in the
  collectors' group is handed every other message, denied, and the message is
  dropped (src/subs.c).  acl_file does not see the retain flag either.  Both
  rules are in the v5 plugin ``mosquitto_plugin/quantrac_acl.c``, whose ACL
  callback runs before acl_file's and defers to it for everything else;
* any authenticated user may connect with another client's id and take over
  its persistent session; messages queued there that the new user may not
  read are dropped.  ``use_username_as_clientid true`` makes the session id
  the user name; it is a *per-listener* option (src/conf.c), so every listener
  gets its own copy (``LISTENER_SECURITY_OPTIONS``), and each collector needs
  a user of its own;
* ``message_size_limit`` and ``max_packet_size`` are global: a payload over
  the envelope's limit gets PUBACK 0x95, a packet over the bound is refused
  from its header (DISCONNECT 0x95) before the broker buffers it.

Each station's user name is its station id and it may only write under
``quantrac/v1/<station_id>/#``; explicit per-user blocks are used rather than
``pattern write quantrac/v1/%u/#`` because a pattern applies to every user,
which would also let the collector publish under ``quantrac/v1/<its name>/``.

Station passwords are random (256 bits), so the hash's iteration count adds
no protection against guessing; we keep Mosquitto's default of 101 because a
higher count makes 2,000 stations reconnecting after an outage cost the
single-threaded broker CPU.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import os
import secrets
import shutil
import stat
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from pathlib import Path

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from broker_bridge.envelope import MAX_ENVELOPE_BYTES
from broker_bridge.mosquitto_server import GiB, render_mosquitto_conf
from broker_bridge.topics import (
    ALERT_SUFFIX,
    AVAILABILITY_SUFFIX,
    COMMAND_SUFFIX,
    DATA_SUFFIX,
    PREFIX,
    RECEIPT_SUFFIX,
    STATUS_SUFFIX,
    TopicError,
    check_station_id,
)
from supervisor.paths import cache_dir

__all__ = [
    "BridgeSettings",
    "BrokerConfigError",
    "MAX_PACKET_SIZE",
    "MESSAGE_SIZE_LIMIT",
    "GeneratedBrokerConfig",
    "Pki",
    "QueueSizing",
    "TlsListener",
    "acl_plugin_candidates",
    "build_acl_plugin",
    "built_acl_plugin",
    "create_pki",
    "generate_broker_config",
    "hash_password",
    "read_password_file",
    "render_acl",
    "render_bridge_conf",
    "render_security_conf",
    "verify_password",
]

log = structlog.get_logger("broker_bridge.broker_config")

DEFAULT_COLLECTOR_USER = "quantrac-collector"
#: The warehouse aggregator's user (``quantrac warehouse aggregate``): publishes alerts, retained, and nothing else.
DEFAULT_AGGREGATOR_USER = "quantrac-aggregator"
PBKDF2_ITERATIONS = 101  # Mosquitto 2.0's own default (see module docstring)
SALT_BYTES = 12
PASSWORD_BYTES = 32

CONF_NAME = "mosquitto.conf"
PASSWD_NAME = "passwd"
ACL_NAME = "acl"
CREDENTIALS_DIR = "credentials"


class BrokerConfigError(ValueError):
    """A broker configuration request that cannot be satisfied safely."""


# -- password file ------------------------------------------------------------------


def hash_password(password: str, *, iterations: int = PBKDF2_ITERATIONS, salt: bytes | None = None) -> str:
    """Mosquitto 2.0's ``$7$`` (PBKDF2-HMAC-SHA512) encoding of ``password``.

    Done in Python rather than with ``mosquitto_passwd -b``, which would put
    every password on a command line that ``ps`` shows to all local users.
    """
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations, 64)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    """True when ``encoded`` (a ``$7$`` or legacy ``$6$`` hash) is ``password``'s."""
    parts = encoded.split("$")
    try:
        if len(parts) == 5 and parts[1] == "7":
            iterations, salt, digest = int(parts[2]), base64.b64decode(parts[3]), base64.b64decode(parts[4])
            computed = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations, len(digest))
        elif len(parts) == 4 and parts[1] == "6":
            salt, digest = base64.b64decode(parts[2]), base64.b64decode(parts[3])
            computed = hashlib.sha512(password.encode("utf-8") + salt).digest()
        else:
            return False
    except ValueError:
        # a malformed line can never match; the caller then hashes afresh
        return False
    return hmac.compare_digest(computed, digest)


def read_password_file(path: Path) -> dict[str, str]:
    """``user -> hash`` from a Mosquitto password file; {} when it does not exist."""
    entries: dict[str, str] = {}
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return entries
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        user, sep, encoded = line.partition(":")
        if not sep:
            raise BrokerConfigError(f"{path}:{number}: not a 'user:hash' line")
        entries[user] = encoded
    return entries


# -- files with secrets ---------------------------------------------------------------


def _write_private(path: Path, data: bytes, *, exclusive: bool) -> None:
    """Write a secret: mode 0600 from the first byte, replaced atomically.

    ``exclusive`` refuses to replace an existing file (a private key or a
    password somebody already uses); otherwise the new content goes to a
    temporary 0600 file that is renamed over the old one, so a reader never
    sees half a file and the mode is never wider, not even for an instant.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if exclusive:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        return
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_public(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _check_private_mode(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise BrokerConfigError(f"{path} is readable by others (mode {mode:o}); run `chmod 600 {path}` first")


def _private_dir(path: Path) -> None:
    """Create ``path`` as 0700; an existing directory's mode is the operator's choice."""
    if not path.is_dir():
        path.mkdir(parents=True)
        os.chmod(path, 0o700)  # mkdir's mode is masked by the umask


# -- queue sizing -----------------------------------------------------------------


@dataclass(frozen=True)
class QueueSizing:
    """How much the broker must hold for one collector session during an outage.

    Mosquitto queues per client: while a collector is away, every batch of
    every station waits in that collector's persistent session.  Beyond
    ``max_queued_messages`` or ``max_queued_bytes`` it drops QoS 1 messages
    (counted, but lost to us), so both limits must cover the longest outage
    we plan for, with a margin.  Queued messages live in the broker's RAM and
    are written in full on every autosave.
    """

    stations: int
    batches_per_minute: float = 1.0
    outage_hours: float = 72.0
    batch_bytes: int = 4096
    margin: float = 2.0
    min_messages: int = 100_000  # headroom for stations added before the next restart

    def __post_init__(self) -> None:
        if self.stations < 0 or self.batches_per_minute <= 0 or self.outage_hours <= 0:
            raise BrokerConfigError("queue sizing needs stations >= 0, batches per minute > 0 and outage hours > 0")
        if self.batch_bytes <= 0 or self.margin < 1:
            raise BrokerConfigError("queue sizing needs batch bytes > 0 and a margin >= 1")

    @property
    def expected_messages(self) -> int:
        return math.ceil(self.stations * self.batches_per_minute * 60 * self.outage_hours)

    @property
    def max_queued_messages(self) -> int:
        return max(self.min_messages, math.ceil(self.expected_messages * self.margin))

    @property
    def max_queued_bytes(self) -> int:
        return self.max_queued_messages * self.batch_bytes

    def describe(self) -> list[str]:
        def size(n: float) -> str:
            return f"{n / GiB:.2f} GiB" if n >= GiB / 10 else f"{n / 1024**2:.1f} MiB"

        return [
            f"queue sizing: {self.stations} stations x {self.batches_per_minute:g} batches/min x "
            f"{self.outage_hours:g} h collector outage = {self.expected_messages:,} messages",
            (
                f"  x margin {self.margin:g} (at least {self.min_messages:,}): "
                f"max_queued_messages {self.max_queued_messages:,}"
            ),
            (
                f"  x {self.batch_bytes:,} bytes per batch: "
                f"max_queued_bytes {self.max_queued_bytes:,} ({size(self.max_queued_bytes)})"
            ),
            f"  a full outage keeps about {size(self.expected_messages * self.batch_bytes)} per collector session"
            " in the broker's RAM and in every autosave of mosquitto.db; size the host for it",
        ]


# -- ACL and config fragments -------------------------------------------------------


@dataclass(frozen=True)
class TlsListener:
    """A TLS listener; the files are paths as the broker host sees them."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    port: int = 8883
    host: str | None = None  # None: every interface
    require_certificate: bool = False
    tls_version: str = "tlsv1.2"  # the oldest version the listener accepts


SYS_TOPICS = "$SYS/#"  # the broker's own counters: broker_bridge/broker_health.py reads them


def _speaks_for(user: str, stations: Iterable[str]) -> list[str]:
    """The ACL block of a user that speaks for other stations (a province relay or bridge, a TT10
    ingest bridge): it writes their data and status and reads their commands and receipts, nothing else."""
    lines = [f"user {user}"]
    for station_id in stations:
        lines += [
            f"topic write {PREFIX}/{station_id}/{DATA_SUFFIX}",
            f"topic write {PREFIX}/{station_id}/{STATUS_SUFFIX}",
            f"topic read {PREFIX}/{station_id}/{COMMAND_SUFFIX}",
            f"topic read {PREFIX}/{station_id}/{RECEIPT_SUFFIX}",
        ]
    return [*lines, ""]


def render_acl(
    station_ids: Iterable[str],
    collector_users: Iterable[str],
    province_users: Mapping[str, Sequence[str]] | None = None,
    aggregator_users: Iterable[str] = (),
    bridge_users: Mapping[str, Sequence[str]] | None = None,
) -> str:
    lines = [
        "# generated by `quantrac broker config`; regenerate instead of editing",
        "# Users not named here (and anonymous clients) may neither read nor write.",
        "",
        "# Collectors read every station's data and status and write commands and receipts.",
        "# Mosquitto 2.0 checks reads on delivery, against the message's own topic, so these lines",
        "# also serve $share/<group>/... subscriptions.",
        "# They also read $SYS/# (dropped messages, queue and client counters: broker_health.py).",
    ]
    for user in collector_users:
        lines += [
            f"user {user}",
            f"topic read {PREFIX}/+/{DATA_SUFFIX}",
            f"topic read {PREFIX}/+/{STATUS_SUFFIX}",
            f"topic write {PREFIX}/+/{COMMAND_SUFFIX}",
            f"topic read {SYS_TOPICS}",
            f"topic write {PREFIX}/+/{RECEIPT_SUFFIX}",
            "",
        ]
    lines.append(
        "# Aggregators (the warehouse's alerts, analysis/delivery.py) write every station's alert topic,"
        " retained, and read nothing."
    )
    for user in aggregator_users:
        lines += [
            f"user {user}",
            f"topic write {PREFIX}/+/{ALERT_SUFFIX}",
            f"topic write {PREFIX}/+/{AVAILABILITY_SUFFIX}",
            "",
        ]
    if province_users:
        lines.append(
            "# Each province's relay or bridge user speaks only for the stations the national registry delegated to it"
        )
        lines.append(
            "# (registry: `province:` on the station): it writes their data and status, reads their commands"
            " and receipts."
        )
        for province, stations in province_users.items():
            lines += _speaks_for(province, stations)
    if bridge_users:
        lines.append(
            "# Each bridge of the registry's bridges: (a TT10 ingest bridge; user name = bridge name) speaks only"
            " for the stations"
        )
        lines.append(
            "# bound to it, as a province does: it writes their data and status, reads their commands and receipts."
        )
        for bridge, stations in bridge_users.items():
            lines += _speaks_for(bridge, stations)
    lines.append(
        "# Each station (user name = station id) writes its own data and status and reads only its"
        " commands, receipts and alerts."
    )
    for station_id in station_ids:
        lines += [
            f"user {station_id}",
            f"topic write {PREFIX}/{station_id}/{DATA_SUFFIX}",
            f"topic write {PREFIX}/{station_id}/{STATUS_SUFFIX}",
            f"topic read {PREFIX}/{station_id}/{COMMAND_SUFFIX}",
            f"topic read {PREFIX}/{station_id}/{RECEIPT_SUFFIX}",
            f"topic read {PREFIX}/{station_id}/{ALERT_SUFFIX}",
            f"topic read {PREFIX}/{station_id}/{AVAILABILITY_SUFFIX}",
            "",
        ]
    return "\n".join(lines)


@dataclass(frozen=True)
class BridgeSettings:
    """A province broker's bridge to the national broker (``quantrac broker config --bridge-to``).

    Mosquitto 2.0.11 (Debian 12) facts this relies on, checked by
    tests/broker_bridge/test_forwarding_bridge.py against two real brokers:

    * it has no ``bridge_session_expiry_interval`` (added in 2.1; 2.0.11 refuses to start on an
      unknown option) and its v5 bridge sends no Session Expiry Interval in CONNECT
      (src/bridge.c passes no properties), so the *national* side of a v5 bridge session ends
      when the link drops: commands published on national while the link is down are not
      queued for the province.  The out direction does not depend on it: the province broker
      keeps the bridge's *local* session (``local_cleansession false``) and queues what the
      bridge has not delivered, up to ``max_queued_messages``/``max_queued_bytes``, which the
      queue sizing covers for ``outage_hours``;
    * ``bridge_outgoing_retain false`` strips the retain flag on the way out: a data batch must
      never be retained on national (the quantrac_acl plugin refuses it), and the bridge cannot
      tell data from status, so statuses arrive unretained (the national collector stores each);
    * the bridge's remote user is the province's user on national, whose ACL lets it write only
      the data and status topics of the stations delegated to it (PUBACK 0x87 for any other).
    """

    host: str
    port: int
    remote_user: str
    remote_password_file: Path
    ca_file: Path  # the national broker's certificate must chain to it
    cert_file: Path | None = None  # client certificate for a national listener with require_certificate
    key_file: Path | None = None
    outage_hours: float = 72.0
    name: str = "quantrac-national"
    tls_version: str = "tlsv1.2"

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise BrokerConfigError("the bridge's client certificate needs both --bridge-cert and --bridge-key")
        if self.outage_hours <= 0:
            raise BrokerConfigError(
                "--outage-hours must be > 0 for a bridge: the queue must hold the longest national outage"
            )

    @property
    def session_expiry_s(self) -> int:
        """What a 2.1+ broker would be told; longer than the outage (a day more)."""
        return math.ceil((self.outage_hours + 24) * 3600)


def render_bridge_conf(bridge: BridgeSettings, password: str) -> str:
    """The ``connection`` section; it holds the remote password, so mosquitto.conf is then written 0600."""
    lines = [
        "# --- bridge to the national broker (generated by `quantrac broker config --bridge-to`)",
        "# Data and status go out at QoS 1, the national collector's re-send requests and receipts come in.",
        f"connection {bridge.name}",
        f"address {bridge.host}:{bridge.port}",
        f"remote_username {bridge.remote_user}",
        f"remote_password {password}",
        f"remote_clientid {bridge.remote_user}",  # national keys the session by user name anyway
        f"local_clientid {bridge.name}-local",
        "bridge_protocol_version mqttv50",
        "cleansession false",
        # the province keeps what the bridge has not yet delivered across a restart of either broker
        "local_cleansession false",
        f"# bridge_session_expiry_interval {bridge.session_expiry_s}: Mosquitto 2.1+ only; 2.0.11 refuses the option",
        "bridge_outgoing_retain false",
        "restart_timeout 2 60",
        "notifications true",
        "notifications_local_only true",  # national's ACL gives the province no $SYS topic to write
        f"bridge_cafile {bridge.ca_file}",
        *([f"bridge_certfile {bridge.cert_file}", f"bridge_keyfile {bridge.key_file}"] if bridge.cert_file else []),
        f"bridge_tls_version {bridge.tls_version}",
        "bridge_insecure false",
        f"topic {PREFIX}/+/{DATA_SUFFIX} out 1",
        f"topic {PREFIX}/+/{STATUS_SUFFIX} out 1",
        f"topic {PREFIX}/+/{COMMAND_SUFFIX} in 1",
        # national's receipts come back for the agents (they verify the national collector's signature)
        f"topic {PREFIX}/+/{RECEIPT_SUFFIX} in 1",
    ]
    return "\n".join(lines) + "\n"


# Per-listener options: Mosquitto 2.0.11 keeps these on the listener they follow
# (src/conf.c: cur_listener->...) even with per_listener_settings false, which makes
# only password_file, acl_file, plugin, allow_anonymous and the client-id options
# global.  Written before any listener line they would land on the default
# listener, which Mosquitto then opens on 1883 on every interface.
LISTENER_SECURITY_OPTIONS = (
    # Without it any valid user may connect with the collector's client id,
    # take over its persistent session, and every queued message it is not
    # allowed to read is dropped: data loss by one station's password.  With
    # it the session is the user's own, whatever client id is sent; so each
    # collector needs its own user.
    "use_username_as_clientid true",
)

# A PUBLISH packet carries, besides the payload, a fixed header (<= 5 bytes), the
# topic (2 + < 100 bytes for quantrac/v1/<station id>/<suffix>), a packet id and
# properties; 4 KiB bounds all of it.
PUBLISH_OVERHEAD_BYTES = 4096
MESSAGE_SIZE_LIMIT = MAX_ENVELOPE_BYTES
MAX_PACKET_SIZE = MAX_ENVELOPE_BYTES + PUBLISH_OVERHEAD_BYTES

# Topics no one may publish retained: a retained batch would be re-delivered
# (and re-rejected) at every collector subscription.
NO_RETAIN_TOPICS = (f"{PREFIX}/+/{DATA_SUFFIX}",)

ACL_PLUGIN_NAME = "quantrac_acl.so"
ACL_PLUGIN_SOURCE = Path(__file__).parent / "mosquitto_plugin" / "quantrac_acl.c"


# The one build recipe of the plugin (scripts/bootstrap.sh and `quantrac broker plugin` run it).
ACL_PLUGIN_CFLAGS = ("-std=c99", "-D_POSIX_C_SOURCE=200809L", "-Wall", "-Wextra", "-Werror", "-O2", "-shared", "-fPIC")


def acl_plugin_candidates() -> list[Path]:
    """This checkout's build (scripts/bootstrap.sh), then quantrac's cache (`quantrac broker plugin`)."""
    return [
        Path(__file__).resolve().parents[1] / ".cache" / "mosquitto-plugin" / ACL_PLUGIN_NAME,
        cache_dir() / "mosquitto-plugin" / ACL_PLUGIN_NAME,
    ]


def built_acl_plugin() -> Path:
    """The quantrac_acl Mosquitto plugin built for this installation.

    ``$QUANTRAC_ACL_PLUGIN`` names another build (e.g. on a broker host); else the first of
    ``acl_plugin_candidates()`` that exists.
    """
    env = os.environ.get("QUANTRAC_ACL_PLUGIN")
    candidates = [Path(env)] if env else acl_plugin_candidates()
    for path in candidates:
        if path.is_file():
            return path
    raise BrokerConfigError(
        f"Mosquitto plugin {candidates[0]} not found: run `quantrac broker plugin` (it builds it with cc from "
        f"{ACL_PLUGIN_SOURCE.name}; scripts/bootstrap.sh in a checkout), or give the path of a build on the broker"
        " host (--acl-plugin)"
    )


def build_acl_plugin(out_dir: Path | None = None) -> Path:
    """Compile ``mosquitto_plugin/quantrac_acl.c`` (shipped in the package) into ``out_dir/quantrac_acl.so``.

    ``out_dir`` defaults to ``cache_dir()/mosquitto-plugin``.  A missing compiler or missing
    Mosquitto headers is a BrokerConfigError naming the Debian packages.
    """
    out_dir = Path(out_dir) if out_dir is not None else cache_dir() / "mosquitto-plugin"
    cc = shutil.which("cc") or shutil.which("gcc")
    headers = [Path(p) for p in ("/usr/include/mosquitto_broker.h", "/usr/include/mosquitto.h")]
    if cc is None or not all(h.is_file() for h in headers):
        missing = ["gcc"] if cc is None else []
        missing += ["mosquitto-dev", "libmosquitto-dev"] if not all(h.is_file() for h in headers) else []
        how = "apt-get install" if shutil.which("apt-get") else "install"
        raise BrokerConfigError(
            f"building {ACL_PLUGIN_NAME} needs a C compiler and Mosquitto's headers: {how} " + " ".join(missing)
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / ACL_PLUGIN_NAME
    tmp = target.with_name(target.name + ".tmp")
    done = subprocess.run(
        [cc, *ACL_PLUGIN_CFLAGS, "-o", str(tmp), str(ACL_PLUGIN_SOURCE)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise BrokerConfigError(f"cc failed building {ACL_PLUGIN_NAME}:\n{done.stderr.strip()}")
    os.replace(tmp, target)
    return target


def _listener(port: int, host: str | None) -> list[str]:
    return [f"listener {port}" + (f" {host}" if host else ""), *LISTENER_SECURITY_OPTIONS]


def render_security_conf(
    password_file: Path,
    acl_file: Path,
    tls: TlsListener | None = None,
    *,
    plain_listener: tuple[str, int] | None = None,
    acl_plugin: Path | None = None,
    shared_subscribers: Sequence[str] = (),
) -> str:
    """The part of mosquitto.conf that closes the broker: auth, ACL, plugin, size limits, listeners.

    Each listener is written here, followed by its own copy of the
    per-listener security options.  ``acl_plugin`` (quantrac_acl.so) adds
    what acl_file cannot say: only ``shared_subscribers`` may subscribe to
    ``$share/...``, and nobody may publish retained on a data topic.
    """
    lines = [
        "# --- authentication and authorisation (global: per_listener_settings false)",
        f"password_file {password_file}",
        f"acl_file {acl_file}",
    ]
    if acl_plugin is not None:
        lines += [
            # Runs before acl_file; defers to it for everything it does not refuse.
            f"plugin {acl_plugin}",
            f"plugin_opt_shared_subscribers {' '.join(shared_subscribers) or '-'}",
            f"plugin_opt_no_retain_topics {' '.join(NO_RETAIN_TOPICS)}",
        ]
    lines += [
        "",
        "# --- payload bounds (global in 2.0.11: they apply to every listener)",
        # PUBACK 0x95 Packet too large for a payload over the envelope's own limit
        f"message_size_limit {MESSAGE_SIZE_LIMIT}",
        # a larger packet is refused from its header, before the broker buffers it
        f"max_packet_size {MAX_PACKET_SIZE}",
    ]
    if plain_listener is not None:
        lines += ["", "# --- plain listener (local tools)", *_listener(plain_listener[1], plain_listener[0])]
    if tls is not None:
        lines += [
            "",
            "# --- TLS listener",
            *_listener(tls.port, tls.host),
            f"cafile {tls.ca_file}",
            f"certfile {tls.cert_file}",
            f"keyfile {tls.key_file}",
            f"tls_version {tls.tls_version}",
            # true: a client must also present a certificate signed by cafile;
            # it still logs in with its user name and password.
            f"require_certificate {'true' if tls.require_certificate else 'false'}",
        ]
    return "\n".join(lines) + "\n"


# -- the generator ------------------------------------------------------------------


@dataclass
class GeneratedBrokerConfig:
    out_dir: Path
    conf_file: Path
    password_file: Path
    acl_file: Path
    credentials_dir: Path
    acl_plugin: Path
    conf_text: str
    security_conf: str
    sizing: QueueSizing
    created: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    rotated: list[str] = field(default_factory=list)
    without_access: list[str] = field(default_factory=list)  # credential files of users no longer configured

    def credential_file(self, user: str) -> Path:
        return self.credentials_dir / f"{user}.password"


def _ensure_credential(path: Path, rotate: bool) -> tuple[str, str]:
    """(password, what happened): reuse the file, or create/replace it."""
    if path.exists() and not rotate:
        _check_private_mode(path)
        password = path.read_text().strip()
        if password:
            return password, "kept"
        raise BrokerConfigError(f"{path} is empty; delete it or rotate the user")
    password = secrets.token_urlsafe(PASSWORD_BYTES)
    existed = path.exists()
    # Rotation replaces the file atomically; a new user must not clobber a
    # file that appeared meanwhile, hence O_EXCL.
    _write_private(path, (password + "\n").encode(), exclusive=not existed)
    return password, "rotated" if existed else "created"


def generate_broker_config(
    out_dir: Path,
    station_ids: Sequence[str],
    *,
    collector_users: Sequence[str] = (DEFAULT_COLLECTOR_USER,),
    aggregator_users: Sequence[str] = (DEFAULT_AGGREGATOR_USER,),
    rotate: Sequence[str] = (),
    plain_listener: tuple[str, int] | None = ("127.0.0.1", 1883),
    tls: TlsListener | None = None,
    sizing: QueueSizing | None = None,
    autosave_interval: int = 10,
    config_dir: Path | None = None,
    data_dir: Path = Path("/var/lib/mosquitto"),
    log_file: Path = Path("/var/log/mosquitto/mosquitto.log"),
    run_as: str | None = "mosquitto",
    persistent_client_expiration: str = "30d",
    acl_plugin: Path | None = None,
    province_users: Mapping[str, Sequence[str]] | None = None,
    bridge: BridgeSettings | None = None,
    bridge_users: Mapping[str, Sequence[str]] | None = None,
) -> GeneratedBrokerConfig:
    """Write mosquitto.conf, passwd, acl and per-user credentials into ``out_dir``.

    Idempotent: existing credentials are kept (and their password-file lines
    too, when they still match), so re-running after adding stations changes
    nothing for the others.  ``rotate`` names users whose password is
    replaced.  ``config_dir`` is where passwd and acl will live on the broker
    host (default: ``out_dir`` itself).  ``run_as`` is the user Mosquitto
    drops to when started as root (None: whoever runs this, as in tests);
    it must be able to read passwd, acl and the TLS files, because
    Mosquitto 2.0.11 reads them after dropping privileges.  Send the broker SIGHUP after
    replacing passwd/acl; listener, queue and collector-user changes need a restart.
    ``acl_plugin`` is quantrac_acl.so as the broker host sees it (default:
    this checkout's build, ``built_acl_plugin()``); there is no config without it.
    ``province_users`` (national broker): province user -> the stations delegated to it; each
    gets a password and may speak only for those stations.  ``bridge`` (province broker): a
    bridge section to the national broker; mosquitto.conf then holds its password and is 0600.
    ``aggregator_users``: the warehouse aggregators' users, which may only publish alerts
    (``quantrac/v1/+/alert``, retained); each station reads its own alert topic.
    ``bridge_users``: the registry's ``bridges:`` (a TT10 ingest bridge, not the Mosquitto bridge of
    ``bridge``): bridge name -> the stations bound to it; each gets a user of that name with a
    province's ACL for those stations (write data and status, read commands and receipts).
    """
    if plain_listener is None and tls is None:
        raise BrokerConfigError("a broker needs at least one listener: keep the plain loopback one or give TLS files")
    if autosave_interval <= 0:
        raise BrokerConfigError("autosave_interval must be > 0")
    acl_plugin = Path(acl_plugin) if acl_plugin is not None else built_acl_plugin()
    stations = list(dict.fromkeys(station_ids))
    collectors = list(dict.fromkeys(collector_users))
    if not collectors:
        raise BrokerConfigError("at least one collector user is needed to read the data")
    aggregators = list(dict.fromkeys(aggregator_users))
    try:
        for user in stations + collectors + aggregators:
            check_station_id(user)  # user names go into the ACL and file names: same safe alphabet
    except TopicError as exc:
        raise BrokerConfigError(str(exc)) from exc
    clash = sorted(set(stations) & set(collectors))
    if clash:
        raise BrokerConfigError(f"collector user name(s) {clash} are also station ids; pick another name")
    clash = sorted(set(aggregators) & set(stations + collectors))
    if clash:
        raise BrokerConfigError(
            f"aggregator user name(s) {clash} are also station or collector users; pick another name"
        )
    provinces = {user: list(dict.fromkeys(ids)) for user, ids in (province_users or {}).items()}
    try:
        for user in provinces:
            check_station_id(user)
    except TopicError as exc:
        raise BrokerConfigError(f"province user name: {exc}") from exc
    clash = sorted(set(provinces) & set(stations + collectors + aggregators))
    if clash:
        raise BrokerConfigError(f"province user name(s) {clash} are also station or collector users; pick another name")
    claimed: dict[str, str] = {}
    for user, ids in provinces.items():
        for station_id in ids:
            if claimed.setdefault(station_id, user) != user:
                raise BrokerConfigError(f"station {station_id} is delegated to both {claimed[station_id]} and {user}")
    # Several bridges may serve one station (the registry allows it), so no claim check here.
    bridges = {user: list(dict.fromkeys(ids)) for user, ids in (bridge_users or {}).items()}
    try:
        for user in bridges:
            check_station_id(user)
    except TopicError as exc:
        raise BrokerConfigError(f"bridge user name: {exc}") from exc
    clash = sorted(set(bridges) & set(stations + collectors + aggregators + list(provinces)))
    if clash:
        raise BrokerConfigError(
            f"bridge name(s) {clash} (registry bridges:) are also station, collector, aggregator or province users;"
            " rename the bridge: each process needs a broker user of its own"
        )
    users = collectors + aggregators + list(provinces) + list(bridges) + stations
    unknown = sorted(set(rotate) - set(users))
    if unknown:
        raise BrokerConfigError(f"cannot rotate {unknown}: not a configured station or collector user")

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    credentials_dir = out_dir / CREDENTIALS_DIR
    _private_dir(credentials_dir)
    password_path = out_dir / PASSWD_NAME
    if password_path.exists():
        _check_private_mode(password_path)
    old_hashes = read_password_file(password_path)
    sizing = sizing or QueueSizing(stations=len(stations))
    result_dir = Path(config_dir) if config_dir is not None else out_dir.resolve()

    result = GeneratedBrokerConfig(
        out_dir=out_dir,
        conf_file=out_dir / CONF_NAME,
        password_file=password_path,
        acl_file=out_dir / ACL_NAME,
        credentials_dir=credentials_dir,
        acl_plugin=acl_plugin,
        conf_text="",
        security_conf="",
        sizing=sizing,
    )
    hashes: dict[str, str] = {}
    for user in users:
        password, what = _ensure_credential(result.credential_file(user), rotate=user in rotate)
        getattr(result, what).append(user)
        old = old_hashes.get(user)
        # Keeping a still-valid hash keeps the file byte-identical on a re-run.
        hashes[user] = old if old is not None and verify_password(password, old) else hash_password(password)
        if what != "kept":
            log.info("broker_user_password_" + what, user=user, file=str(result.credential_file(user)))
    configured = set(users)
    result.without_access = sorted(
        p.name.removesuffix(".password")
        for p in credentials_dir.glob("*.password")
        if p.name.removesuffix(".password") not in configured
    )

    _write_private(password_path, "".join(f"{u}:{h}\n" for u, h in hashes.items()).encode(), exclusive=False)
    _write_public(result.acl_file, render_acl(stations, collectors, provinces, aggregators, bridges))
    result.security_conf = render_security_conf(
        result_dir / PASSWD_NAME,
        result_dir / ACL_NAME,
        tls,
        plain_listener=plain_listener,
        acl_plugin=acl_plugin,
        shared_subscribers=collectors,
    )
    if bridge is not None:
        try:
            bridge_password = Path(bridge.remote_password_file).read_text().strip()
        except OSError as exc:
            raise BrokerConfigError(
                f"cannot read the bridge's password file {bridge.remote_password_file}: {exc.strerror}"
            ) from exc
        if not bridge_password:
            raise BrokerConfigError(f"{bridge.remote_password_file} is empty")
        result.security_conf += "\n" + render_bridge_conf(bridge, bridge_password)
    result.conf_text = render_mosquitto_conf(
        port=None,  # every listener is in security_conf, each with its own security options
        data_dir=data_dir,
        log_file=log_file,
        allow_anonymous=False,
        autosave_interval=autosave_interval,
        max_queued_messages=sizing.max_queued_messages,
        max_queued_bytes=sizing.max_queued_bytes,
        persistent_client_expiration=persistent_client_expiration,
        user=run_as,
        extra_conf=result.security_conf,
        header="# generated by `quantrac broker config`; regenerate instead of editing\n"
        + "\n".join(f"# {line}" for line in sizing.describe()),
    )
    if bridge is not None:  # the remote password is in it
        _write_private(result.conf_file, result.conf_text.encode(), exclusive=False)
    else:
        _write_public(result.conf_file, result.conf_text)
    return result


# -- TLS: a private CA, a server certificate, client certificates ------------------


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    clients: dict[str, tuple[Path, Path]]  # name -> (certificate, key)
    issued: list[Path] = field(default_factory=list)  # certificates created by this call
    kept: list[Path] = field(default_factory=list)  # certificates that existed and were left alone


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "quantrac"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _issue(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    days: int,
    usage: x509.ObjectIdentifier,
    sans: Sequence[x509.GeneralName] = (),
) -> x509.Certificate:
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))  # tolerate a little clock skew
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, True, False, False, False, False), critical=True
        )  # digital_signature, key_agreement (ECDHE)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def create_pki(
    out_dir: Path,
    *,
    hosts: Sequence[str] = ("127.0.0.1", "localhost"),
    clients: Sequence[str] = (),
    days: int = 825,
    ca_name: str = "quantrac private CA",
) -> Pki:
    """A private CA (``ca.crt``/``ca.key``), ``server.crt``/``server.key`` for
    ``hosts`` (subject alternative names: clients verify the host name), and
    ``clients/<name>.crt``/``.key``.  Keys are 0600 and never overwritten:
    an existing CA is reused to issue the files that are still missing.
    """
    if not hosts:
        raise BrokerConfigError("the server certificate needs at least one host name or IP address")
    out_dir = Path(out_dir)
    _private_dir(out_dir)
    ca_cert_path, ca_key_path = out_dir / "ca.crt", out_dir / "ca.key"
    if ca_key_path.exists() != ca_cert_path.exists():
        raise BrokerConfigError(f"{out_dir}: ca.crt and ca.key must both exist or both be absent")
    if ca_key_path.exists():
        _check_private_mode(ca_key_path)
        try:
            ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
            ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
        except (ValueError, TypeError) as exc:  # not PEM, or an encrypted key
            raise BrokerConfigError(f"{out_dir}: cannot load the existing CA: {exc}") from exc
        if not isinstance(ca_key, ec.EllipticCurvePrivateKey) or ca_cert.public_key() != ca_key.public_key():
            raise BrokerConfigError(f"{ca_key_path} is not the EC key of {ca_cert_path}")
    else:
        ca_key = _new_key()
        now = datetime.now(UTC)
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(_name(ca_name))
            .issuer_name(_name(ca_name))
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=days + 365))  # outlives what it signs
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        _write_private(ca_key_path, _key_pem(ca_key), exclusive=True)
        _write_public(ca_cert_path, ca_cert.public_bytes(serialization.Encoding.PEM).decode())
        log.info("tls_ca_created", cert=str(ca_cert_path))

    def leaf(cert_path: Path, key_path: Path, subject: str, usage, sans=()) -> None:
        if key_path.exists() and cert_path.exists():
            _check_private_mode(key_path)
            kept.append(cert_path)
            return  # never replace a key in use; delete both files to re-issue
        if key_path.exists() or cert_path.exists():
            raise BrokerConfigError(f"only one of {cert_path} and {key_path} exists; delete it to re-issue both")
        key = _new_key()
        cert = _issue(subject, key, ca_cert, ca_key, days, usage, sans)
        _write_private(key_path, _key_pem(key), exclusive=True)
        _write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM).decode())
        log.info("tls_certificate_issued", cert=str(cert_path), subject=subject)
        issued_now.append(cert_path)

    kept: list[Path] = []
    issued_now: list[Path] = []

    leaf(
        out_dir / "server.crt",
        out_dir / "server.key",
        hosts[0],
        ExtendedKeyUsageOID.SERVER_AUTH,
        [_san(h) for h in hosts],
    )
    issued: dict[str, tuple[Path, Path]] = {}
    for name in clients:
        try:
            check_station_id(name)
        except TopicError as exc:
            raise BrokerConfigError(f"client certificate name: {exc}") from exc
        cert_path, key_path = out_dir / "clients" / f"{name}.crt", out_dir / "clients" / f"{name}.key"
        leaf(cert_path, key_path, name, ExtendedKeyUsageOID.CLIENT_AUTH)
        issued[name] = (cert_path, key_path)
    return Pki(ca_cert_path, ca_key_path, out_dir / "server.crt", out_dir / "server.key", issued, issued_now, kept)
