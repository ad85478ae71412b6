#!/usr/bin/env bash
# Builds the custom Telegraf that bench/bench_relay.py compares the collector with, into
# .cache/telegraf/telegraf.  Not part of bootstrap.sh nor of any test: it takes minutes
# (about 300 MB of Go modules on first build, then the link) and only the bench needs it.
#
#   * the source and its dependencies come from the Go module proxy through the go command
#     (`go install <module>/cmd/telegraf@<version>`); nothing is cloned
#   * only the plugins the bench uses are compiled in (Telegraf's `custom` build tag):
#     inputs.mqtt_consumer, outputs.influxdb_v2, parsers.influx, serializers.influx
#   * needs Go >= the `go` line of Telegraf's go.mod (1.25.5 for v1.37.2); Debian 12's golang-go
#     (1.19) is too old.  GO=/path/to/go picks the go command, else `go` on PATH, else
#     /usr/local/go/bin/go.  A second run with the binary present only checks its version.
#
# Environment: TELEGRAF_VERSION (default v1.37.2), GO, OUT (default .cache/telegraf).
# Instead of building, give the bench any Telegraf >= 1.30 with those plugins:
#   QUANTRAC_TELEGRAF=/path/to/telegraf .venv/bin/python bench/bench_relay.py
set -euo pipefail

TELEGRAF_VERSION="${TELEGRAF_VERSION:-v1.37.2}"
NEED_GO=1.25
TAGS=custom,inputs.mqtt_consumer,outputs.influxdb_v2,parsers.influx,serializers.influx
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-$REPO_ROOT/.cache/telegraf}"
BIN="$OUT/telegraf"

say() { printf 'build_telegraf: %s\n' "$*"; }
die() { printf 'build_telegraf: ERROR: %s\n' "$*" >&2; exit 1; }

if [ -x "$BIN" ] && "$BIN" --version 2>/dev/null | grep -q "${TELEGRAF_VERSION#v}"; then
    say "$BIN is already Telegraf ${TELEGRAF_VERSION#v}"
    exit 0
fi

GO="${GO:-}"
if [ -z "$GO" ]; then
    if command -v go >/dev/null 2>&1; then GO="$(command -v go)"
    elif [ -x /usr/local/go/bin/go ]; then GO=/usr/local/go/bin/go
    else die "no go command: install Go >= $NEED_GO and set GO=/path/to/go, or provide a binary with QUANTRAC_TELEGRAF=/path/to/telegraf"
    fi
fi
go_ver="$("$GO" env GOVERSION 2>/dev/null || true)"     # e.g. go1.26.8
go_ver="${go_ver#go}"
[ -n "$go_ver" ] || die "$GO does not tell its version (go env GOVERSION); Go >= $NEED_GO is needed"
if [ "$(printf '%s\n%s\n' "$NEED_GO" "$go_ver" | sort -V | head -1)" != "$NEED_GO" ]; then
    die "$GO is Go $go_ver; Telegraf $TELEGRAF_VERSION needs Go >= $NEED_GO (set GO=/path/to/go, or provide a binary with QUANTRAC_TELEGRAF=/path/to/telegraf)"
fi

mkdir -p "$OUT"
say "go $go_ver: go install -tags $TAGS github.com/influxdata/telegraf/cmd/telegraf@$TELEGRAF_VERSION -> $BIN"
start=$(date +%s)
# GOFLAGS cleared so a -mod or -tags from the caller's environment cannot change the build.
GOFLAGS=-buildvcs=false GOBIN="$OUT" CGO_ENABLED=0 "$GO" install \
    -tags "$TAGS" \
    -ldflags "-s -w -X github.com/influxdata/telegraf/internal.Version=${TELEGRAF_VERSION#v}" \
    "github.com/influxdata/telegraf/cmd/telegraf@$TELEGRAF_VERSION"
[ -x "$BIN" ] || die "go install finished but $BIN is missing"
say "built $("$BIN" --version) in $(( $(date +%s) - start )) s"
