"""What may name a training run's trigger in its lineage (the monitor builds it, the registry checks it)."""

from __future__ import annotations

import pytest

from finpredict.common.triggers import valid_trigger


@pytest.mark.parametrize(
    "trigger",
    ["manual", "schedule", "manual:quarterly refresh", "schedule:2026-12-05", "alert:7f3c2a-psi"],
)
def test_the_platforms_triggers_are_accepted(trigger: str) -> None:
    assert valid_trigger(trigger)


@pytest.mark.parametrize(
    "trigger",
    [
        "whenever",
        "alert",  # an alert trigger names its alert
        "alert:",
        "schedule:",
        "manual:   ",
        "alert:two words",
        "alert:id\nforged: line",
        "manual:reason\x00",
        "webhook:42",
        ":alert",
    ],
)
def test_a_trigger_the_message_does_not_describe_is_refused(trigger: str) -> None:
    assert not valid_trigger(trigger)
