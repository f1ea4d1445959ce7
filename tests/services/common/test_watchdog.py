"""The client watchdog's verdicts, and the fresh-connection probe against the real broker."""

from __future__ import annotations

import pytest

from framebus.infra.process import free_port
from framebus.kafka import broker_answers
from framebus.services.common.watchdog import ClientHealth, ClientWatch, WatchdogConfig

CONFIG = WatchdogConfig(stall_s=30.0, probe_interval_s=5.0)


def test_progress_keeps_the_clients_live_and_no_probe_is_made() -> None:
    watch = ClientWatch(CONFIG, now=0.0)
    for t in range(0, 300, 10):
        watch.progressed(float(t))
        assert not watch.should_probe(t + 1.0)
    assert watch.health is ClientHealth.LIVE


def test_silence_during_an_outage_is_waited_out_not_punished() -> None:
    watch = ClientWatch(CONFIG, now=0.0)
    assert not watch.should_probe(29.0)
    assert watch.should_probe(30.0)
    for t in range(30, 300, 5):  # the broker stays away for four and a half minutes
        assert watch.probed(float(t), answered=False) is ClientHealth.BROKER_DOWN
    # It answers again: the clients get stall_s to reconnect, counted from the last unanswered probe.
    assert watch.probed(300.0, answered=True) is ClientHealth.RECONNECTING
    watch.progressed(310.0)
    assert watch.health is ClientHealth.LIVE


def test_silence_while_the_broker_answers_is_a_wedge() -> None:
    watch = ClientWatch(CONFIG, now=0.0)
    for t in range(30, 120, 5):
        watch.probed(float(t), answered=False)
    assert watch.probed(120.0, answered=True) is ClientHealth.RECONNECTING
    assert watch.probed(140.0, answered=True) is ClientHealth.RECONNECTING
    assert watch.probed(146.0, answered=True) is ClientHealth.WEDGED  # 31 s since the broker came back
    assert "wedged" in watch.describe(146.0)


def test_clients_silent_from_the_start_with_the_broker_up_are_wedged_after_stall_s() -> None:
    watch = ClientWatch(CONFIG, now=0.0)
    assert watch.probed(30.0, answered=True) is ClientHealth.WEDGED


def test_the_config_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="stall_s"):
        WatchdogConfig(stall_s=0)


def test_the_probe_hears_the_real_broker_and_not_a_closed_port(kafka_bootstrap: str) -> None:
    assert broker_answers(kafka_bootstrap)
    assert not broker_answers(f"127.0.0.1:{free_port()}", timeout_s=1.0)
    assert broker_answers(f"127.0.0.1:{free_port()},{kafka_bootstrap}"), "any listed broker will do"
