"""Access: without a key nothing that is not public; keys hashed in a 0600 file, revocable; rate limits
answer 429 with Retry-After; every refusal is JSON {code, message}; the CLI serves the same API."""

from __future__ import annotations

import json
import os
import time

import httpx
from typer.testing import CliRunner

from api import keys
from broker_bridge.envelope import Reading
from cli.main import app as cli_app
from cli.processes import quantrac
from supervisor import free_port
from supervisor.process import ManagedProcess, wait_until
from tests.api.conftest import M, iso, start_api

KEYED = ("/v1/latest/raw", "/v1/rejects", "/v1/stations/{sid}/readings")


def test_without_a_key_nothing_but_the_public_and_refusals_are_json(api, feed):
    t0 = (time.time_ns() // M - 30) * M
    feed.send([Reading(t0 + i * M, "aqms1", "PM10", 20.0 + i, "ug/m3", "01" if i == 9 else "00") for i in range(10)])
    for path in KEYED:
        path = path.format(sid=feed.sid)
        for key, code in ((None, "key_required"), ("qk_00000000_wrong", "bad_key"), ("not-a-key", "bad_key")):
            r = api.get(path, key)
            assert r.status_code == 401 and r.json() == {"code": code, "message": r.json()["message"]}, (path, r.text)
        assert api.get(path, api.key).status_code == 200
    public = api.get("/v1/latest", station=feed.sid).json()["data"]
    assert [(p["value"], set(p)) for p in public] == [(28.0, {"station", "device", "parameter", "ts", "value", "unit"})]
    raw = api.get(f"/v1/stations/{feed.sid}/readings", api.key, start=iso(t0)).json()["data"]
    assert len(raw) == 10 and raw[-1]["status"] == "01"

    bad = [
        ("/v1/stations/{sid}/means/hourly", {"start": "2026-01-01T00:00:00"}, "bad_parameter"),  # no offset
        ("/v1/stations/{sid}/means/hourly", {"start": "2026-02-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"}, None),
        ("/v1/stations/{sid}/means/hourly", {"start": "yesterday"}, "bad_parameter"),
        ("/v1/stations/{sid}/means/weekly", {}, "bad_parameter"),
        ("/v1/stations/{sid}/aqi/hourly", {"limit": "0"}, "bad_parameter"),
        ("/v1/stations/{sid}/aqi/hourly", {"cursor": "!!!"}, "bad_cursor"),
        ("/v1/stations/{sid}/aqi/hourly", {"cursor": "eyJlIjoxfQ"}, "bad_cursor"),
        ("/v1/stations/bad id!/aqi/hourly", {}, "bad_parameter"),
        ("/v1/stations", {"kind": "volcano"}, "bad_parameter"),
        ("/v1/episodes", {"state": "maybe"}, "bad_parameter"),
        ("/v1/no-such-thing", {}, "not_found"),
    ]
    for path, params, code in bad:
        r = api.get(path.format(sid=feed.sid), **params)
        assert 400 <= r.status_code < 500 and r.headers["content-type"] == "application/json", (path, r.text)
        body = r.json()
        assert set(body) == {"code", "message"} and body["code"] == (code or "bad_parameter"), (path, body)
        assert "Traceback" not in r.text
    doc = api.get("/openapi.json").json()
    assert {"/v1/stations", "/v1/latest", "/v1/stations/{station}/readings", "/v1/episodes"} <= set(doc["paths"])
    assert "swagger" in api.get("/docs").text.lower()


def test_keys_are_hashed_revocable_and_rate_limited(warehouse, tmp_path):
    path = tmp_path / "keys.json"
    runner = CliRunner()
    out = runner.invoke(cli_app, ["api", "key", "add", "Sở TNMT Hà Nội", "--keys", str(path), "--rate", "5"])
    assert out.exit_code == 0, out.output
    slow_key = out.output.strip().splitlines()[-1]
    _, other_key = keys.add(path, "another agency", 600)
    assert os.stat(path).st_mode & 0o777 == 0o600
    text = path.read_text()
    assert slow_key not in text and slow_key.split("_")[-1] not in text and "scrypt$" in text
    base, stop = start_api(warehouse.pg_conninfo, path, public_rate=3)
    try:
        get = lambda p, k=None: httpx.get(base + p, headers={"X-API-Key": k} if k else {}, timeout=10)  # noqa: E731
        assert [get("/v1/latest/raw", slow_key).status_code for _ in range(5)] == [200] * 5
        limited = get("/v1/latest/raw", slow_key)
        assert limited.status_code == 429 and limited.json()["code"] == "rate_limited"
        assert 1 <= int(limited.headers["Retry-After"]) <= 12
        assert get("/v1/latest/raw", other_key).status_code == 200, "one key's limit is not another's"
        assert [get("/v1/stations").status_code for _ in range(4)] == [200, 200, 200, 429], "the public's rate"
        listed = runner.invoke(cli_app, ["api", "key", "list", "--keys", str(path)]).output
        other_id = next(line.split("\t")[0] for line in listed.splitlines() if "another agency" in line)
        assert runner.invoke(cli_app, ["api", "key", "revoke", other_id, "--keys", str(path)]).exit_code == 0
        revoked = get("/v1/latest/raw", other_key)
        assert revoked.status_code == 401 and revoked.json()["code"] == "bad_key"
        assert "revoked" in runner.invoke(cli_app, ["api", "key", "list", "--keys", str(path)]).output
    finally:
        stop()
    os.chmod(path, 0o644)
    refused = runner.invoke(cli_app, ["api", "key", "list", "--keys", str(path)])
    assert refused.exit_code == 2 and "0600" in refused.output


def test_quantrac_api_serve(warehouse, tmp_path):
    port = free_port()
    pg = f"{warehouse.host}:{warehouse.pg_port}"
    process = ManagedProcess(
        quantrac("api", "serve", "--pg", pg, "--port", str(port)), log_path=tmp_path / "api.log", name="api"
    )
    process.start()
    try:

        def up():
            try:
                return httpx.get(f"http://127.0.0.1:{port}/v1/stations", timeout=2)
            except httpx.TransportError:
                return None

        first = wait_until(up, timeout=30, interval=0.2, what="quantrac api serve answering")
        assert first.status_code == 200 and "data" in first.json()
        r = httpx.get(f"http://127.0.0.1:{port}/v1/latest/raw", headers={"X-API-Key": "qk_x_y"})
        assert r.status_code == 401 and json.loads(r.text)["code"] == "bad_key"
    finally:
        process.stop()
