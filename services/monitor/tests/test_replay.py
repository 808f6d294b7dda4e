"""Acceptance 1 and 2: replays on a simulated clock through the real monitor.

The measured times to detect are printed (run with ``-s``) and asserted.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from finpredict.api.common.v1 import types_pb2
from finpredict.api.monitor.v1 import monitor_pb2 as pb
from finpredict.demo import replay as rp
from finpredict.testkit.monitor import MODEL, StartMonitor, stub
from finpredict.testkit.process import ServiceProcess


def _t(ts: object) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)  # type: ignore[attr-defined, no-any-return]


@pytest.mark.slow
def test_thirty_days_without_drift_raise_no_alert(
    start_monitor: StartMonitor, channel_for: Callable[[ServiceProcess], grpc.Channel]
) -> None:
    proc = start_monitor()
    ch = channel_for(proc)
    stream = rp.generate(rp.Scenario(days=30, per_hour=200, seed=11))
    result = rp.replay(ch, stream, MODEL, 1)
    assert (result.accepted, result.duplicates, result.rejected) == (stream.height, 0, 0)
    assert list(result.changes) == []
    assert list(stub(ch).ListAlerts(pb.ListAlertsRequest(), timeout=10).alerts) == []
    # the rules really had data to judge: every hourly window reached the KL rule's minimum
    ref = types_pb2.ModelRef(name=MODEL, version=1)
    hourly = stub(ch).GetDriftReport(
        pb.GetDriftReportRequest(model=ref, window=pb.WINDOW_SIZE_HOURLY), timeout=30
    )
    assert len(hourly.windows) == 30 * 24
    assert min(w.count for w in hourly.windows) >= 200
    print(f"\nno drift: max hourly score KL {max(w.score_kl for w in hourly.windows):.4f}")


def test_recession_from_day_10_fires_psi_on_the_third_daily_window(
    start_monitor: StartMonitor, channel_for: Callable[[ServiceProcess], grpc.Channel]
) -> None:
    proc = start_monitor()
    ch = channel_for(proc)
    # days 0-6 are calm like the no-drift replay; the replay starts on day 7 to save time
    sc = rp.Scenario(days=14, first_day=7, per_hour=200, drift="recession", shift_day=10, seed=21)
    result = rp.replay(ch, rp.generate(sc), MODEL, 1)
    psi = result.firing("feature_psi_3d")
    assert psi, [a.rule for a in result.changes]
    third_window_closes = sc.shift_time + timedelta(days=3)
    assert {_t(a.started_at) for a in psi} == {third_window_closes}, "fires exactly when day 3 closes"
    named = {f for a in psi for f in a.features}
    assert {"credit_utilization", "revenue_growth"} <= named
    assert all(a.value > 0.25 and a.severity == "warning" for a in psi)
    # nothing fired before the shift
    assert all(_t(a.started_at) > sc.shift_time for a in result.changes)
    # the recession doubles defaults, so the score distribution moves at once: the hourly KL
    # rule fires within the first hours, long before the 3-day PSI rule
    kl = result.first_firing("score_kl_1h")
    assert kl is not None, "score KL rule fired"
    kl_ttd = _t(kl.started_at) - sc.shift_time
    assert timedelta(0) < kl_ttd <= timedelta(hours=3), kl_ttd
    assert kl.value > 0.1
    print(
        f"\nrecession: PSI alert {(third_window_closes - sc.shift_time).total_seconds() / 3600:.0f} h "
        f"after the shift on {sorted(named)}; score KL alert {kl_ttd.total_seconds() / 3600:.0f} h "
        f"after the shift (KL {kl.value:.3f})"
    )


def test_new_segment_fires_score_kl_in_the_first_hour(
    start_monitor: StartMonitor, channel_for: Callable[[ServiceProcess], grpc.Channel]
) -> None:
    """A shift of the score distribution (KL ~0.2) is caught by the hourly KL rule at once."""
    proc = start_monitor()
    sc = rp.Scenario(days=3, first_day=1, per_hour=200, drift="new_segment", shift_day=2, seed=31)
    result = rp.replay(channel_for(proc), rp.generate(sc), MODEL, 1)
    kl = result.first_firing("score_kl_1h")
    assert kl is not None
    ttd = _t(kl.started_at) - sc.shift_time
    print(
        f"\nnew_segment: score KL alert {ttd.total_seconds() / 3600:.0f} h after the shift "
        f"(value {kl.value:.3f})"
    )
    assert ttd <= timedelta(hours=3)
    assert kl.value > 0.1
    assert kl.severity == "critical"
    assert not kl.features
    assert all(_t(a.started_at) > sc.shift_time for a in result.changes)


def test_silently_degraded_model_fires_accuracy_and_recovery_resolves_it(
    start_monitor: StartMonitor, channel_for: Callable[[ServiceProcess], grpc.Channel]
) -> None:
    proc = start_monitor()
    ch = channel_for(proc)
    sc = rp.Scenario(days=6, per_hour=100, degrade_from_day=2, degrade_until_day=4, seed=41)
    result = rp.replay(ch, rp.generate(sc), MODEL, 1, label_delay=timedelta(hours=24))
    assert result.outcomes_matched == 6 * 24 * 100
    fired = result.firing("accuracy_1d")
    resolved = result.resolved("accuracy_1d")
    transitions = [(a.rule, a.state) for a in result.changes]
    assert len(fired) == 1, transitions
    assert len(resolved) == 1, transitions
    degraded_at = sc.start + timedelta(days=2)
    # labels of the first degraded day arrive during the next day
    assert degraded_at + timedelta(days=1) <= _t(fired[0].started_at) <= degraded_at + timedelta(days=2)
    assert fired[0].value < 0.80
    recovered_at = sc.start + timedelta(days=4)
    assert recovered_at + timedelta(days=1) <= _t(resolved[0].resolved_at) <= recovered_at + timedelta(days=2)
    assert resolved[0].value >= 0.80
    # the score distribution never moved: no drift alert, only the labels told
    assert {a.rule for a in result.changes} == {"accuracy_1d"}
    ref = types_pb2.ModelRef(name=MODEL, version=1)
    daily = stub(ch).GetDriftReport(
        pb.GetDriftReportRequest(model=ref, window=pb.WINDOW_SIZE_DAILY), timeout=30
    )
    acc = [round(w.accuracy, 3) for w in daily.windows]
    assert all(a >= 0.8 for a in acc[:2] + acc[4:]), acc
    assert all(a < 0.8 for a in acc[2:4]), acc
    assert all(abs(w.label_delay_hours - 24) < 1e-6 for w in daily.windows)
    print(
        f"\ndegraded: daily accuracy {acc}; fired {_t(fired[0].started_at)}, "
        f"resolved {_t(resolved[0].resolved_at)}"
    )
