"""The whole path on real servers: simulated analyzer -> agent -> Mosquitto -> collector -> QuestDB.

The simulator logs every value it served; QuestDB must end up holding
exactly those readings (same values, status codes and timestamps), each once,
also when the collector is SIGKILLed mid-stream and when the broker is down
while the agent is killed.
"""

from __future__ import annotations

import time

import pytest

from supervisor.process import wait_until
from tests.station_rig import make_station  # noqa: F401  (fixture)


def assert_matches_truth(stored: list[tuple], served: list[dict]) -> None:
    """Pair the k-th stored and k-th served value of each parameter.

    Each pair has the same value and status, and the stored timestamp lies in the request window.
    """
    by_param_stored: dict[str, list[tuple]] = {}
    for row in stored:
        by_param_stored.setdefault(row[2], []).append(row)
    by_param_served: dict[str, list[dict]] = {}
    for t in served:
        by_param_served.setdefault(t["parameter"], []).append(t)
    assert sorted(by_param_stored) == sorted(by_param_served)
    for parameter, rows in by_param_stored.items():
        truth = by_param_served[parameter]
        assert len(rows) == len(truth), parameter
        for row, t in zip(rows, sorted(truth, key=lambda t: t["t_ns"])):
            ts_ns, device, _, value, status, _, _ = row
            assert (device, value, status) == (t["device"], t["value"], t["status"])
            # The agent stamps a reading when it sends the request; the simulator logs when it serves it.
            assert 0 <= t["t_ns"] - ts_ns < 500_000_000


@pytest.mark.slow  # SIGKILLs the collector mid-stream
def test_every_served_value_arrives_exactly_once_across_a_collector_crash(make_station):
    station = make_station("demo_air_01.yaml")
    station.sim()
    collector = station.collector()
    agent = station.agent()
    wait_until(lambda: len(station.served_values()) >= 24, timeout=30, what="a few polls served")
    collector.kill()  # SIGKILL: no chance to ack what it holds
    time.sleep(1.5)  # the agent keeps publishing into the collector's persistent session
    station.collector()
    wait_until(lambda: len(station.served_values()) >= 60, timeout=30, what="more polls served")
    agent.stop(timeout=20)  # graceful: finishes its cycle and drains
    served = station.served_values()
    assert station.wait_stored(len(served)) == len(served)
    stored = station.stored()
    assert len({(r[0], r[1], r[2]) for r in stored}) == len(stored)
    assert_matches_truth(stored, served)
    assert [r[:5] for r in sorted(stored)] == sorted(station.outbox_readings())


@pytest.mark.slow  # SIGKILLs the agent while the broker is down
def test_agent_resumes_from_its_outbox_after_sigkill_while_the_broker_was_down(make_station, mosquitto_server):
    station = make_station("demo_stack_01.yaml")
    station.sim()
    station.collector()
    agent = station.agent()
    wait_until(lambda: len(station.served_values()) >= 14, timeout=30, what="first polls served")
    mosquitto_server.stop()
    wait_until(lambda: len(station.served_values()) >= 56, timeout=30, what="polls served while the broker is down")
    agent.kill()  # what it committed is in the outbox, unacknowledged
    mosquitto_server.start()
    agent = station.agent()
    wait_until(lambda: len(station.served_values()) >= 84, timeout=30, what="polls after the restart")
    agent.stop(timeout=30)
    served = station.served_values()
    committed = station.outbox_readings()
    assert station.wait_stored(len(committed)) == len(committed)
    stored = station.stored()
    assert sorted(r[:5] for r in stored) == sorted(committed)
    # SIGKILL can lose at most the poll cycle in flight: values served but not yet committed.
    values_per_poll = len({t["parameter"] for t in served})
    assert 0 <= len(served) - len(stored) <= values_per_poll
    served_keys = {(t["parameter"], t["value"], t["status"]) for t in served}
    assert all((r[2], r[3], r[4]) in served_keys for r in stored)
    seqs = sorted({r[5] for r in stored})
    assert seqs == list(range(1, len(seqs) + 1)), "batch sequence numbers have a gap or went back"
