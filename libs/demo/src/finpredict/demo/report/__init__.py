"""The demo's HTML report: one self-contained page (inline SVG plots, inline CSS, no script,
nothing fetched) that shows what the main job did and measured.

The demo fills a :class:`DemoReport` as it goes, saves it as JSON (``to_json``) and renders it
with :func:`write_report`. The page has:

* the measured times against the case study's numbers (commit to production, time to detect,
  time to roll back, p50/p99 latency);
* the versions with their quality gates;
* per rollout, the canary weight over time with each decision's verdict (``#plot-rollout``)
  and the decision log;
* feature drift: a day x feature PSI heatmap (``#plot-drift``) and the worst features' PSI
  lines with the alerts (``#plot-drift-lines``);
* score distributions of stable vs canary (``#plot-scores``);
* latency p50/p99 per phase against the 50 ms gate and the 100 ms alert (``#plot-latency``);
* the alerts, and where the W&B offline runs and the Prometheus UI are.

``python -m finpredict.demo.report report.json -o report.html`` renders a saved report. The
data is :mod:`.model`, the plots :mod:`.plots` (on the small SVG toolkit :mod:`.svg`), the page
:mod:`.page`.
"""

from finpredict.demo.report.model import (
    Alert,
    DemoReport,
    Gate,
    LatencyPhase,
    Links,
    Measured,
    Rollout,
    RolloutDecision,
    ScoreSamples,
    VersionRow,
)
from finpredict.demo.report.page import render_html, write_report

__all__ = [
    "Alert",
    "DemoReport",
    "Gate",
    "LatencyPhase",
    "Links",
    "Measured",
    "Rollout",
    "RolloutDecision",
    "ScoreSamples",
    "VersionRow",
    "render_html",
    "write_report",
]
