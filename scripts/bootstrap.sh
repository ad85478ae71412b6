#!/usr/bin/env bash
# Self-installing set-up for quantrac.  Idempotent: a second run only checks.
#
#   * python3.11 (and python3.11-venv via apt-get if `python3.11 -m venv` cannot work)
#   * .venv (python3.11) with `pip install -e '.[test]'`
#     (skipped while .venv/.quantrac-installed matches sha256(pyproject.toml))
#   * the programs the tests, the demo and the benches run, via apt-get, only those missing
#     (Debian 12 packages; see PROGRAMS below): mosquitto (+ mosquitto_passwd),
#     mosquitto-clients (mosquitto_pub/_sub), mbpoll, cc + libc6-dev,
#     curl and OpenSSH's sftp (the TT10 bridge's tests upload with clients nobody here wrote)
#     chromium (the public page's browser test)
#   * java 17+ (default-jre-headless) and, if the QuestDB jar must be fetched, maven
#   * the quantrac_acl Mosquitto plugin, built with cc into .cache/mosquitto-plugin/
#     (headers from mosquitto-dev + libmosquitto-dev; rebuilt only when its source changes)
#   * QuestDB 9.3.4 jar into .cache/questdb/ via Maven, only if missing
#     (9.4+ needs Java 25; this project targets Java 17)
#
# Tests never skip for a missing program: tests/helpers.py `require_tool` fails
# naming this script.  A program a test runs must be listed in PROGRAMS.
#
# Environment overrides: PYTHON (default python3.11).
set -euo pipefail

QUESTDB_VERSION=9.3.4
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

PYTHON="${PYTHON:-python3.11}"
VENV="$REPO_ROOT/.venv"
STAMP="$VENV/.quantrac-installed"
JAR_DIR="$REPO_ROOT/.cache/questdb"
JAR="$JAR_DIR/questdb-$QUESTDB_VERSION.jar"

say() { printf 'bootstrap: %s\n' "$*"; }
die() { printf 'bootstrap: ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- apt helper
APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 \
        || die "need to install: $* - but apt-get is not available; install them with your package manager"
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to apt-get install $*"
        sudo=(sudo)
    fi
    if [ "$APT_UPDATED" -eq 0 ]; then
        say "apt-get update"
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        APT_UPDATED=1
    fi
    say "apt-get install $*"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

sha256() { sha256sum "$1" | cut -d' ' -f1; }

# ---------------------------------------------------------------- python 3.11
if [ -x "$VENV/bin/python" ]; then
    venv_ver="$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    [ "$venv_ver" = "3.11" ] \
        || die ".venv uses Python $venv_ver but quantrac needs 3.11; remove .venv (make distclean) and re-run"
else
    command -v "$PYTHON" >/dev/null 2>&1 \
        || die "$PYTHON not found: install Python 3.11 (Debian 12: apt-get install python3.11 python3.11-venv) or set PYTHON=/path/to/python3.11"
    py_ver="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    [ "$py_ver" = "3.11" ] || die "$PYTHON is Python $py_ver; quantrac needs 3.11 (set PYTHON=/path/to/python3.11)"
    # Debian's python3.11 has no ensurepip until python3.11-venv is installed
    if ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
        apt_install python3.11-venv
    fi
    say "creating .venv with $PYTHON"
    "$PYTHON" -m venv "$VENV" \
        || die "'$PYTHON -m venv' failed (Debian/Ubuntu: apt-get install python3.11-venv)"
fi

# ---------------------------------------------------------------- pip install
want_stamp="$(sha256 pyproject.toml)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want_stamp" ] \
    && "$VENV/bin/python" -c 'import importlib.metadata as m; m.version("quantrac")' >/dev/null 2>&1; then
    say "python deps up to date (.venv/.quantrac-installed matches pyproject.toml)"
else
    say "pip install -e '.[test]'"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e '.[test]'
    printf '%s\n' "$want_stamp" >"$STAMP"
fi
# Programs the Python packages above bring into .venv/bin, checked like the Debian ones below:
#   py-spy            bench/bench_collector.py and bench/bench_tt10.py --py-spy (bench/py_spy.py): the
#                     PyPI package py-spy, listed in pyproject's test extras
for program in py-spy; do
    [ -x "$VENV/bin/$program" ] || die "$VENV/bin/$program missing after pip install -e '.[test]' (pyproject's test extras list it)"
done

# ---------------------------------------------------------------- programs
# Every external program the tests, the demo and the benches run, with the
# Debian 12 package that ships it.  Missing ones are installed in one apt-get.
#   mosquitto         broker started by tests/conftest.py, the demo and the benches
#   mosquitto_passwd  tests/broker_security: our hashes match the real tool's
#   mosquitto_pub/sub tests/broker_bridge/test_broker_listeners: attackers nobody here wrote
#   cc                builds the quantrac_acl Mosquitto plugin below
#   mbpoll            tests/firmware_sim: an independent Modbus master reads the simulators
#   chromium          tests/api/test_public_page.py: the public page in a real browser (driven by
#                     Playwright for Python, whose own browser download cannot work offline)
#   systemd-analyze   tests/cli/test_install_systemd.py: `verify` on every unit `quantrac install systemd` writes
#   mvn               tests/cli/test_servers_cli.py: `quantrac warehouse run` fetches the QuestDB jar with it
#   pipx              tests/test_packaging.py: the built wheel installed as users install it
#   wrk               bench/bench_api.py --wrk: the API loaded by a client without Python's lock
# Note: on systemd hosts the Debian mosquitto package may start a system broker
# on port 1883; quantrac never uses it (it starts its own on a free port).
PROGRAMS=(
    "mosquitto:mosquitto"
    "mosquitto_passwd:mosquitto"
    "mosquitto_pub:mosquitto-clients"
    "mosquitto_sub:mosquitto-clients"
    "mbpoll:mbpoll"
    "cc:gcc"
    "curl:curl"
    "sftp:openssh-client"
    "ssh-keygen:openssh-client"
    "chromium:chromium"
    "systemd-analyze:systemd"
    "mvn:maven"
    "pipx:pipx"
    "wrk:wrk"
)
have_program() {
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/local/sbin/$1" ]
}
missing_packages=()
for entry in "${PROGRAMS[@]}"; do
    program="${entry%%:*}" package="${entry#*:}"
    if ! have_program "$program" && [[ ! " ${missing_packages[*]} " =~ " $package " ]]; then
        missing_packages+=("$package")
    fi
done
if [ "${#missing_packages[@]}" -gt 0 ]; then
    apt_install "${missing_packages[@]}"
fi
for entry in "${PROGRAMS[@]}"; do
    program="${entry%%:*}" package="${entry#*:}"
    have_program "$program" || die "$program still not found after apt-get install $package"
done
say "programs present: ${PROGRAMS[*]%%:*}"

# ---------------------------------------------------------------- quantrac_acl plugin
# What acl_file cannot say (no $share for stations, no retained data): see
# broker_bridge/mosquitto_plugin/quantrac_acl.c.  `quantrac broker config` points at it.
PLUGIN_SRC="$REPO_ROOT/broker_bridge/mosquitto_plugin/quantrac_acl.c"
PLUGIN_DIR="$REPO_ROOT/.cache/mosquitto-plugin"
PLUGIN_SO="$PLUGIN_DIR/quantrac_acl.so"
PLUGIN_STAMP="$PLUGIN_SO.sha256"
if [ ! -f /usr/include/mosquitto_broker.h ] || [ ! -f /usr/include/mosquitto.h ]; then
    apt_install mosquitto-dev libmosquitto-dev
fi
if [ -s "$PLUGIN_SO" ] && [ -f "$PLUGIN_STAMP" ] && [ "$(cat "$PLUGIN_STAMP")" = "$(sha256 "$PLUGIN_SRC")" ]; then
    say "quantrac_acl plugin up to date: ${PLUGIN_SO#"$REPO_ROOT"/}"
else
    say "building ${PLUGIN_SO#"$REPO_ROOT"/} with cc"
    # the one recipe: broker_bridge/broker_config.py build_acl_plugin (also `quantrac broker plugin`)
    "$VENV/bin/python" -m cli.main broker plugin --out "$PLUGIN_DIR" \
        || die "building the Mosquitto plugin failed (needs cc and the mosquitto-dev/libmosquitto-dev headers)"
    sha256 "$PLUGIN_SRC" >"$PLUGIN_STAMP"
fi

# ---------------------------------------------------------------- java 17+
java_major() {
    java -version 2>&1 | awk -F'"' '/version/ {print $2; exit}' | awk -F. '{ if ($1 == "1") print $2; else print $1 }'
}
if ! command -v java >/dev/null 2>&1; then
    say "java not found; installing a JRE (QuestDB needs Java 17+)"
    apt_install default-jre-headless
fi
command -v java >/dev/null 2>&1 || die "java not found: install OpenJDK 17+ (Debian 12: apt-get install openjdk-17-jre-headless)"
jmaj="$(java_major)"
[[ "$jmaj" =~ ^[0-9]+$ ]] || die "could not parse 'java -version' output"
[ "$jmaj" -ge 17 ] || die "java $jmaj found; QuestDB $QUESTDB_VERSION needs Java 17+ (apt-get install openjdk-17-jre-headless)"
say "java $jmaj ok"

# ---------------------------------------------------------------- QuestDB jar
if [ -s "$JAR" ]; then
    say "QuestDB $QUESTDB_VERSION jar present: ${JAR#"$REPO_ROOT"/}"
else
    if ! command -v mvn >/dev/null 2>&1; then
        say "mvn not found (needed once, to fetch the QuestDB jar); installing maven"
        apt_install maven
    fi
    command -v mvn >/dev/null 2>&1 || die "mvn not found: install Maven (apt-get install maven)"
    say "fetching org.questdb:questdb:$QUESTDB_VERSION with Maven"
    mkdir -p "$JAR_DIR"
    mvn -q -B -Dstyle.color=never dependency:copy "-Dartifact=org.questdb:questdb:$QUESTDB_VERSION" "-DoutputDirectory=$JAR_DIR" \
        || die "mvn dependency:copy failed (network? proxy settings in ~/.m2/settings.xml?)"
    [ -s "$JAR" ] || die "Maven finished but $JAR is missing"
fi

say "ready"
