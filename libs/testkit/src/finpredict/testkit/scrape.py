"""Reading a service's Prometheus ``/metrics`` page from a test."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from finpredict.testkit.process import ServiceProcess

Sample = tuple[str, dict[str, str], float]


def _port(service: ServiceProcess | int) -> int:
    return service.metrics_port if isinstance(service, ServiceProcess) else service


def scrape(service: ServiceProcess | int) -> str:
    """The text of ``/metrics`` of a service (or of the metrics port given)."""
    url = f"http://127.0.0.1:{_port(service)}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        return bytes(resp.read()).decode()


def samples(service: ServiceProcess | int) -> list[Sample]:
    """Every sample on a service's ``/metrics``, from one scrape."""
    return [
        (s.name, dict(s.labels), float(s.value))
        for family in text_string_to_metric_families(scrape(service))
        for s in family.samples
    ]


def total(scraped: list[Sample], name: str, **labels: str) -> float:
    """The sum of the ``name`` samples whose labels include ``labels`` (0 when none)."""
    return sum(v for n, lbl, v in scraped if n == name and all(lbl.get(k) == x for k, x in labels.items()))


def metric_value(service: ServiceProcess | int, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``, from one scrape (0 when the
    series does not exist yet)."""
    return total(samples(service), name, **labels)
