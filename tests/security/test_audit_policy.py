"""The dependency-audit policy (SECURITY.md) stays what it says: `task lint` runs the audit, and
every accepted vulnerability or exception has an id, a reason and a review date that has not
passed."""

from __future__ import annotations

import datetime as dt
import re
import tomllib
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
ADVISORY_ID = re.compile(
    r"^(GHSA-[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{4}|PYSEC-\d{4}-\d+|CVE-\d{4}-\d{4,}|OSV-\d{4}-\d+)$"
)
RUSTSEC_ID = re.compile(r"^RUSTSEC-\d{4}-\d{4}$")


def _locked_packages() -> set[str]:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    return {p["name"] for p in lock["package"]}


def test_python_allowlist_entries_have_id_package_reason_and_live_review_date() -> None:
    doc = tomllib.loads((ROOT / "audit-allowlist.toml").read_text())
    entries: list[dict[str, Any]] = doc["python"]
    assert isinstance(entries, list)
    locked = _locked_packages()
    ids = [e.get("id") for e in entries]
    assert len(ids) == len(set(ids)), "an id is listed twice"
    for e in entries:
        assert set(e) == {"id", "package", "reason", "review_by"}, e
        assert ADVISORY_ID.match(e["id"]), e
        assert e["package"] in locked, f"{e['package']} is not in uv.lock: drop the entry"
        assert len(e["reason"].strip()) >= 20, f"{e['id']}: give a real reason"
        assert isinstance(e["review_by"], dt.date), e
        assert e["review_by"] >= dt.date.today(), f"{e['id']}: review date passed, re-examine it"


def test_cargo_deny_exceptions_have_reasons() -> None:
    deny = tomllib.loads((ROOT / "deny.toml").read_text())
    for entry in deny["advisories"]["ignore"]:
        assert isinstance(entry, dict), "write advisory ignores as { id = ..., reason = ... }"
        assert RUSTSEC_ID.match(entry["id"]), entry
        assert len(entry.get("reason", "").strip()) >= 20, entry
    for entry in [*deny["bans"]["skip"], *deny["bans"]["deny"], *deny["licenses"]["exceptions"]]:
        assert isinstance(entry, dict), entry
        assert entry.get("reason", "").strip(), f"no reason: {entry}"
    assert deny["licenses"]["allow"], "an empty license allow-list refuses every crate"
    assert deny["sources"]["unknown-registry"] == deny["sources"]["unknown-git"] == "deny"


def test_lint_runs_the_audit_with_the_allowlist() -> None:
    tasks = yaml.safe_load((ROOT / "Taskfile.yml").read_text())["tasks"]
    assert {"task": "audit"} in tasks["lint"]["cmds"]
    assert [c.get("task") for c in tasks["audit"]["cmds"]] == [
        "setup:audit-tools",
        "audit:python",
        "audit:rust",
    ]
    python = "\n".join(str(c) for c in tasks["audit:python"]["cmds"])
    assert "pip-audit" in python
    assert "--strict" in python
    assert "audit-allowlist.toml" in python
    rust = "\n".join(str(c) for c in tasks["audit:rust"]["cmds"])
    assert "cargo deny --offline check licenses bans sources" in rust
    assert "check advisories" in rust
    assert "pip-audit" in (ROOT / "pyproject.toml").read_text()
