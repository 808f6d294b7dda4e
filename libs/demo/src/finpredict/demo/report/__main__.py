"""``python -m finpredict.demo.report report.json -o report.html``: renders a saved report."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from finpredict.demo.report import DemoReport, write_report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render a saved demo report (JSON) as HTML.")
    parser.add_argument("data", type=Path, help="the report data, as written by DemoReport.to_json()")
    parser.add_argument("-o", "--out", type=Path, default=Path("reports/demo.html"), help="the HTML file")
    args = parser.parse_args(argv)
    report = DemoReport.from_json(args.data.read_text(encoding="utf-8"))
    print(write_report(report, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
