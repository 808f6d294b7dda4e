"""The console's sign-in sessions, CSRF and origin checks, and the view computations, without a
server: sessions are sealed into their cookies (any process with the key reads them; tampered,
expired, foreign or rotated-out ones are anonymous), tokens are checked by digest, forged requests
are refused; a drift_core profile is summarised, PSI cells are placed by day, decisions follow the
threshold, an experiment's statistics are read defensively, score histograms are drawn and summed."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from finpredict.api.common.v1 import types_pb2
from finpredict.api.monitor.v1 import monitor_pb2 as mpb
from finpredict.api.registry.v1 import registry_pb2 as rpb
from finpredict.api.rollout.v1 import rollout_pb2 as ropb
from finpredict.common.auth import parse_tokens
from finpredict.console import views
from finpredict.console.actions import _next
from finpredict.console.auth import (
    CLOCK_SKEW_S,
    SEALED_PREFIX,
    Sessions,
    csrf_ok,
    new_key,
    parse_keys,
    same_origin,
)

TOKENS = parse_tokens("admin-token-0123=ops:admin,reader-token-0123=app:reader")
KEY, OTHER_KEY, OLD_KEY = b"k" * 32, b"o" * 32, b"0" * 32


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_session_knows_its_person_and_expires() -> None:
    clock = Clock()
    sessions = Sessions(TOKENS, [KEY], ttl_s=60, clock=clock)
    assert sessions.open("no-such-token-0123") is None
    opened = sessions.open("admin-token-0123")
    assert opened is not None
    cookie, viewer = opened
    assert (viewer.subject, viewer.is_admin, viewer.signed_in) == ("ops", True, True)
    assert "admin-token-0123" not in cookie  # sealed: neither the token nor the subject shows
    assert "ops" not in cookie
    assert "admin-token-0123" not in repr(viewer)
    assert sessions.get(cookie) == viewer
    clock.now = 59.9
    assert sessions.get(cookie) == viewer
    clock.now = 60  # by the time sealed into the cookie, not by anything this process kept
    assert sessions.get(cookie) is None
    assert Sessions(TOKENS, [KEY], ttl_s=600, clock=clock).get(cookie) == viewer  # a longer TTL
    reader = sessions.open("reader-token-0123")
    assert reader is not None
    assert not reader[1].is_admin


def test_any_process_with_the_key_reads_a_session_and_nothing_else_does() -> None:
    clock = Clock()
    opened = Sessions(TOKENS, [KEY], ttl_s=60, clock=clock).open("admin-token-0123")
    assert opened is not None
    cookie, viewer = opened
    assert Sessions(TOKENS, [KEY], ttl_s=60, clock=clock).get(cookie) == viewer  # another replica
    assert Sessions(TOKENS, [OTHER_KEY], ttl_s=60, clock=clock).get(cookie) is None
    # sealed at "now" by a replica whose clock is ahead by more than the allowed skew
    clock.now = -CLOCK_SKEW_S - 1
    assert Sessions(TOKENS, [KEY], ttl_s=60, clock=clock).get(cookie) is None


def test_a_tampered_or_foreign_cookie_is_anonymous() -> None:
    sessions = Sessions(TOKENS, [KEY], ttl_s=60)
    opened = sessions.open("admin-token-0123")
    assert opened is not None
    cookie = opened[0]
    body = cookie.removeprefix(SEALED_PREFIX)
    # the nonce, the ciphertext, the tag (the last character may hold only padding bits)
    for i in (0, len(body) // 2, len(body) - 2):
        flipped = body[:i] + ("A" if body[i] != "A" else "B") + body[i + 1 :]
        assert sessions.get(SEALED_PREFIX + flipped) is None
    for junk in ("", "v1.", "v1.!!!", "v2." + body, body, "x" * 10_000, cookie + "A"):
        assert sessions.get(junk) is None


def test_keys_rotate_the_first_seals_every_one_opens() -> None:
    opened = Sessions(TOKENS, [OLD_KEY], ttl_s=60).open("admin-token-0123")
    assert opened is not None
    old_cookie, viewer = opened
    rotating = Sessions(TOKENS, [KEY, OLD_KEY], ttl_s=60)
    assert rotating.get(old_cookie) == viewer  # still signed in during the rotation
    fresh = rotating.open("admin-token-0123")
    assert fresh is not None
    assert Sessions(TOKENS, [KEY], ttl_s=60).get(fresh[0]) == fresh[1]  # sealed with the new key
    assert Sessions(TOKENS, [KEY], ttl_s=60).get(old_cookie) is None  # the old key rotated out


def test_a_token_leaving_the_table_ends_its_sessions() -> None:
    opened = Sessions(TOKENS, [KEY], ttl_s=60).open("admin-token-0123")
    assert opened is not None
    cookie = opened[0]
    assert Sessions(parse_tokens("reader-token-0123=app:reader"), [KEY], ttl_s=60).get(cookie) is None
    given_away = Sessions(parse_tokens("admin-token-0123=someone:admin"), [KEY], ttl_s=60)
    assert given_away.get(cookie) is None
    demoted = Sessions(parse_tokens("admin-token-0123=ops:reader"), [KEY], ttl_s=60).get(cookie)
    assert demoted is not None
    assert not demoted.is_admin  # the roles both the cookie and the table grant


def test_session_keys_are_32_bytes_of_base64_and_required_with_tokens() -> None:
    assert parse_keys("") == []
    generated = new_key()
    assert parse_keys(f" {generated} , {base64.b64encode(OLD_KEY).decode()}") == [
        base64.urlsafe_b64decode(generated + "=" * (-len(generated) % 4)),
        OLD_KEY,
    ]
    with pytest.raises(ValueError, match="key 2 is 16 bytes") as short:
        parse_keys(f"{generated},{base64.b64encode(b'0' * 16).decode()}")
    assert generated not in str(short.value)  # a key is never in a message
    with pytest.raises(ValueError, match="key 1 is not base64"):
        parse_keys("not*base64")
    with pytest.raises(ValueError, match="session key"):
        Sessions(TOKENS, [], ttl_s=60)
    assert Sessions({}, [], ttl_s=60).get("v1.x") is None  # read-only: no sign-in, no key needed


def test_a_bearer_header_is_a_viewer_without_csrf() -> None:
    sessions = Sessions(TOKENS, [KEY], ttl_s=60)
    viewer = sessions.from_header("Bearer admin-token-0123")
    assert viewer is not None
    assert viewer.via_header
    assert csrf_ok(viewer, "")
    assert sessions.from_header("Bearer wrong-token-0123") is None
    assert sessions.from_header("Basic admin-token-0123") is None
    assert sessions.from_header("") is None


def test_csrf_tokens_are_per_session() -> None:
    sessions = Sessions(TOKENS, [KEY], ttl_s=60)
    a = sessions.open("admin-token-0123")
    b = sessions.open("admin-token-0123")
    assert a is not None
    assert b is not None
    assert csrf_ok(a[1], a[1].csrf)
    assert not csrf_ok(a[1], b[1].csrf)
    assert not csrf_ok(a[1], "")
    assert sessions.get(a[0]).csrf == a[1].csrf  # type: ignore[union-attr]  # carried by the cookie


@pytest.mark.parametrize(
    ("origin", "referer", "ok"),
    [
        ("http://console.example:8080", None, True),
        ("http://evil.example", None, False),
        ("null", None, False),
        (None, "http://console.example:8080/rollouts/ab12", True),
        (None, "http://evil.example/x", False),
        (None, None, True),  # not a browser form (a script with a bearer header)
    ],
)
def test_only_same_origin_posts_pass(origin: str | None, referer: str | None, ok: bool) -> None:
    assert same_origin("console.example:8080", origin, referer) is ok


@pytest.mark.parametrize(
    ("target", "expected"),
    [("/rollouts/ab", "/rollouts/ab"), ("//evil.example", "/"), ("https://evil.example", "/"), ("/\\x", "/")],
)
def test_sign_in_goes_back_to_local_pages_only(target: str, expected: str) -> None:
    assert _next(target) == expected


def test_a_profile_is_summarised() -> None:
    doc = {
        "format_version": 1,
        "n_bins": 10,
        "binning": "Quantile",
        "n_rows": 400,
        "features": [
            {
                "name": "debt",
                "kind": {"Numeric": {"edges": [1.0, 2.0]}},
                "reference_counts": [10, 20, 60, 10],
            },
            {
                "name": "sector",
                "kind": {"Categorical": {"categories": [0.0], "labels": ["a"]}},
                "reference_counts": [90, 0, 10],
            },
        ],
    }
    data = b"DRIFTPRF" + json.dumps(doc).encode()

    s = views.profile_summary(data, hashlib.sha256(data).hexdigest())
    assert s is not None
    assert (s.rows, s.bins, s.binning, s.verified, s.problem) == (400, 10, "quantile", True, "")
    assert [(f.name, f.kind, f.buckets, f.missing_share) for f in s.features] == [
        ("debt", "numeric", 4, 0.1),
        ("sector", "categorical", 3, 0.1),
    ]
    assert views.profile_summary(data, "0" * 64).verified is False  # type: ignore[union-attr]
    assert views.profile_summary(b"", "") is None
    assert views.profile_summary(b"junk", "").problem  # type: ignore[union-attr]
    assert views.profile_summary(b"DRIFTPRF{", "").problem  # type: ignore[union-attr]


def test_the_heatmap_places_each_psi_on_its_day() -> None:
    def window(day: int, psi: dict[str, float]) -> mpb.WindowStats:
        w = mpb.WindowStats(features=[mpb.FeatureDrift(feature=k, psi=v) for k, v in psi.items()])
        w.start.FromSeconds(day * 86400)
        return w

    hm = views.heatmap([window(0, {"a": 0.01}), window(1, {"a": 0.3, "b": 0.12})])
    assert hm.days == ["1970-01-01", "1970-01-02"]
    assert hm.features == ["a", "b"]
    assert hm.cells == {"a": [0.01, 0.3], "b": [None, 0.12]}
    assert [views.psi_class(x) for x in (0.01, 0.12, 0.3, float("nan"))] == [
        "psi-low",
        "psi-mid",
        "psi-high",
        "psi-na",
    ]


def test_decisions_follow_the_threshold_and_keep_the_reason_codes() -> None:
    rc = types_pb2.ReasonCode(code="R02", feature="debt", contribution=0.4, description="d")
    records = [
        mpb.PredictionRecord(request_id="r1", score=0.5, threshold=0.5, reason_codes=[rc]),
        mpb.PredictionRecord(request_id="r2", score=0.49, threshold=0.5),
    ]
    rows = views.decision_rows(records)
    assert [(r.request_id, r.decision) for r in rows] == [("r1", "decline"), ("r2", "approve")]
    assert rows[0].reason_codes == [rc]


def test_alias_history_of_a_version_is_newest_first() -> None:
    entries = [
        rpb.AuditEntry(id=1, action="version.register", model="m", version=1, actor="ci", reason=""),
        rpb.AuditEntry(
            id=2, action="alias.set", model="m", alias="production", to_version=1, actor="ops", reason="go"
        ),
        rpb.AuditEntry(id=3, action="version.register", model="m", version=2, actor="ci"),
        rpb.AuditEntry(
            id=4,
            action="alias.set",
            model="m",
            alias="production",
            from_version=1,
            to_version=2,
            actor="rollout",
        ),
    ]
    assert [(h.actor, h.move) for h in views.alias_history(entries, 1)] == [
        ("rollout", "v1 -> v2"),
        ("ops", "none -> v1"),
        ("ci", ""),
    ]
    assert len(views.alias_history(entries)) == 4


def test_an_experiment_reads_what_the_statistics_hold_and_nothing_else() -> None:
    arms = [
        ropb.ExperimentArm(name="a", version=1, weight=50),
        ropb.ExperimentArm(name="b", version=2, weight=50),
    ]
    exp = ropb.Experiment(id="e1", model="m", arms=arms)
    summary_a = {"arm": "a", "requests": 10, "approval_rate": {"estimate": 0.5, "lower": 0.2, "upper": 0.8}}
    summary_b = {"arm": "b", "requests": 12, "auc": {"estimate": None}, "expected": {"auc": 0.7}}
    doc = {
        "control": "a",
        "comparisons": [
            {
                "arms": [summary_a, summary_b],
                "effects": [{"metric": "approval_rate", "estimate": 0.1, "lower": -0.2, "upper": 0.4}],
                "srm": {"mismatch": False, "p_value": 0.5},
                "recommendation": "continue",
                "reason": "not yet",
            }
        ],
    }
    x = views.experiment_view(ropb.GetExperimentResponse(experiment=exp, statistics=json.dumps(doc)))
    assert x.running
    assert x.control == "a"
    assert not x.problem
    a, b = x.arms
    assert (a.requests, b.requests) == (10, 12)
    assert a.figures["approval_rate"].text == "0.5000 [0.2000, 0.8000]"
    assert b.figures["auc"].text == "n/a"  # null: not enough labels
    assert b.figures["expected.auc"].text == "0.7000"
    assert b.figures["error_rate"].text == "n/a"  # absent from the record
    assert [(e.arm, e.metric, e.significant) for e in x.effects] == [("b", "approval_rate", False)]
    assert [(v.arm, v.recommendation) for v in x.verdicts] == [("b", "continue")]
    assert x.srm.startswith("consistent")
    broken = views.experiment_view(ropb.GetExperimentResponse(experiment=exp, statistics="[1]"))
    assert broken.problem
    assert [arm.requests for arm in broken.arms] == [None, None]


def test_a_score_histogram_is_drawn_on_the_reference_bins_and_summed_over_days() -> None:
    h = mpb.ScoreHistogram(
        edges=[0.2, 0.5], counts=[1, 3, 0, 2], reference_proportions=[0.25, 0.5, 0.25, 0.0]
    )
    chart = views.score_chart(h, 90, 30)
    assert chart is not None
    assert len(chart.bars) == 3
    assert chart.missing == 2
    assert [b.height for b in chart.bars] == [9.33, 28, 0]  # shares over the top share
    assert chart.bars[0].title.startswith("[-inf, 0.2): 1 (25.0%)")
    assert chart.bars[2].title.startswith("[0.5, +inf): 0")
    assert (
        views.score_chart(mpb.ScoreHistogram(edges=[0.5], counts=[0, 0, 4]), 90, 30) is None
    )  # only missing
    days = [mpb.WindowStats(score_histogram=h), mpb.WindowStats(), mpb.WindowStats(score_histogram=h)]
    summed = views.summed_histogram(days)
    assert summed is not None
    assert list(summed.counts) == [2, 6, 0, 4]
    assert views.summed_histogram([mpb.WindowStats()]) is None
