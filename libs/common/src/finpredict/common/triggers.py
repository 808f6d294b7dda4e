"""What may name a training run's trigger in its lineage: the monitor builds it, the registry checks
it on registration (one rule for both, so a trigger the registry would refuse is refused before a
training runs).

``manual`` or ``schedule`` alone, or ``<kind>:<what>`` with something after the colon: a reason
(``manual:``), a date (``schedule:``) or an alert id without spaces (``alert:``).
"""

from __future__ import annotations

TRIGGER_KINDS = ("manual", "schedule", "alert")


def valid_trigger(trigger: str) -> bool:
    """Whether ``trigger`` is one of the forms above (printable, nothing empty after a colon)."""
    kind, colon, what = trigger.partition(":")
    if not colon:
        return kind in ("manual", "schedule")
    if kind not in TRIGGER_KINDS or not what.strip() or not what.isprintable():
        return False
    return kind == "manual" or not any(c.isspace() for c in what)
