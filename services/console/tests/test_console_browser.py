"""The console in a real headless Chromium on a running stack (registry, monitor, gateway on the
in-process stand-in model server, console): every page renders with no browser error and shows
what the services' APIs return; a rollout page follows the rollout without a reload; an admin
pauses and resumes a rollout from the page and the gateway records the admin's subject; without
an admin token there are no buttons and the endpoints refuse; the decision lookup finds a request
scored in the test with the version, variant, score and reason codes its client received."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page

from finpredict.api.common.v1 import types_pb2
from finpredict.api.monitor.v1 import monitor_pb2 as mpb
from finpredict.api.registry.v1 import registry_pb2 as rpb
from finpredict.api.rollout.v1 import rollout_pb2 as ropb
from finpredict.api.scoring.v1 import scoring_pb2 as spb
from finpredict.common.auth import bearer_metadata
from finpredict.testkit.browser import RecordingPage, chromium, recording_page
from finpredict.testkit.cli import ADMIN_TOKEN, READER_TOKEN
from finpredict.testkit.console import (
    CONSOLE_REGISTRY_READER,
    MONITOR_READER,
    OPERATOR_SUBJECT,
    VARIANTS,
    ConsoleStack,
    Story,
    Traffic,
    console_stack,
    seed,
    today,
)
from finpredict.testkit.models import SMALL_SCHEMA

pytestmark = pytest.mark.timeout(240)
DAILY = mpb.WINDOW_SIZE_DAILY


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleStack]:
    with console_stack(tmp_path_factory.mktemp("console")) as s:
        yield s


@pytest.fixture(scope="module")
def story(stack: ConsoleStack) -> Story:
    return seed(stack)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


@pytest.fixture
def console(browser: Browser, stack: ConsoleStack) -> Iterator[RecordingPage]:
    """A fresh browser context (no cookies) on the console; no browser error by the end."""
    recorded = recording_page(browser, stack.console_url)
    yield recorded
    recorded.close()
    assert recorded.errors == []


def registry(stack: ConsoleStack, method: str, request: object) -> object:
    return getattr(stack.registry_stub, method)(
        request, metadata=bearer_metadata(CONSOLE_REGISTRY_READER), timeout=30
    )


def monitor(stack: ConsoleStack, method: str, request: object) -> object:
    return getattr(stack.monitor_stub, method)(request, metadata=bearer_metadata(MONITOR_READER), timeout=30)


def texts(page: Page, selector: str) -> list[str]:
    return [t.strip() for t in page.locator(selector).all_inner_texts()]


def sign_in(page: Page, token: str) -> None:
    page.goto("/login")
    page.fill("#token", token)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#who[data-subject]:not([data-subject=''])")


def fresh_rollout(stack: ConsoleStack, min_requests: int, steps: list[float]) -> tuple[str, ropb.Rollout]:
    model = stack.create_model("console-ro")
    v1 = stack.register(model, "manual")
    stack.set_alias(model, "production", v1, "first release")
    v2 = stack.register(model, "schedule", parent=v1)
    return model, stack.start_rollout(model, v2, steps, min_requests)


# ----- pages show what the APIs return -------------------------------------------------------------


def test_models_page(console: RecordingPage, stack: ConsoleStack, story: Story) -> None:
    page = console.page
    page.goto("/")
    models = registry(stack, "ListModels", rpb.ListModelsRequest(page_size=500)).models  # type: ignore[attr-defined]
    assert sorted(
        page.locator("#models tbody tr").evaluate_all("rows => rows.map(r => r.dataset.model)")
    ) == sorted(m.name for m in models)
    model = next(m for m in models if m.name == story.model)
    row = page.locator(f'#models tr[data-model="{story.model}"]')
    assert row.locator(".production").inner_text() == f"v{model.aliases['production']}"
    assert row.locator(".latest").inner_text() == f"v{model.latest_version}"
    assert sorted(texts(page, f'#models tr[data-model="{story.model}"] .aliases .tag')) == sorted(
        f"{a} → v{v}" for a, v in model.aliases.items()
    )
    firing = monitor(stack, "ListAlerts", mpb.ListAlertsRequest(model=story.model, firing_only=True)).alerts  # type: ignore[attr-defined]
    assert firing, "the seeded drift fires alerts"
    assert row.locator(".alerts").inner_text() == str(len(firing))
    report = monitor(
        stack,
        "GetDriftReport",
        mpb.GetDriftReportRequest(model=types_pb2.ModelRef(name=story.model, version=story.v1), window=DAILY),
    )
    todays = [w.count for w in report.windows if w.start.ToDatetime().strftime("%Y-%m-%d") == today()]  # type: ignore[attr-defined]
    assert len(todays) == 1
    assert todays[0] >= len(story.scored)  # (another test may have scored a few more)
    assert row.locator(".traffic").inner_text() == str(todays[0])
    assert row.locator(".rollout").inner_text() == "none"


def test_version_page(console: RecordingPage, stack: ConsoleStack, story: Story) -> None:
    page = console.page
    page.goto(f"/models/{story.model}/versions/{story.v2}")
    v = registry(stack, "GetVersion", rpb.GetVersionRequest(model=story.model, version=story.v2)).version  # type: ignore[attr-defined]
    gates = {g.name: g for g in v.gate_results}
    assert sorted(
        page.locator("#gates tbody tr").evaluate_all("rows => rows.map(r => r.dataset.gate)")
    ) == sorted(gates)
    for name, g in gates.items():
        assert page.locator(f'#gates tr[data-gate="{name}"] .value').inner_text() == str(g.value)
    # against the registry's promotion policy, as the registry checks it
    policy = registry(stack, "GetPolicy", rpb.GetPolicyRequest(model=story.model, version=story.v2))
    assert policy.check.promotable  # type: ignore[attr-defined]
    assert page.locator("#promotable").inner_text() == "Production may point at this version."
    assert page.locator("#policy tbody tr[data-gate]").evaluate_all(
        "rows => rows.map(r => r.dataset.gate)"
    ) == [
        g.name
        for g in policy.policy.gates  # type: ignore[attr-defined]
    ]
    for g in policy.policy.gates:  # type: ignore[attr-defined]
        row = page.locator(f'#policy tr[data-gate="{g.name}"]')
        assert row.locator(".rule").inner_text().endswith(f"{g.threshold:g}")
        assert row.locator(".value").inner_text() == str(gates[g.name].value)
    lineage = dict(zip(texts(page, "#lineage th"), texts(page, "#lineage td"), strict=True))
    assert lineage["Git commit"] == v.lineage.git_commit
    assert lineage["W&B run path"] == v.lineage.wandb_run_path
    assert lineage["Trigger"] == v.lineage.trigger == "alert:feature_psi_3d"
    assert lineage["Parents"] == f"{story.model}@{story.v1}"
    assert dict(zip(texts(page, "#data-md5 th"), texts(page, "#data-md5 td"), strict=True)) == dict(
        v.lineage.data_md5
    )
    assert json.loads(page.locator("#params").inner_text()) == {"eta": 0.3, "max_depth": 3, "rounds": 20}
    assert "(matches the registration)" in page.locator("#profile").inner_text()
    assert len(texts(page, "#profile-features tbody tr")) == len(SMALL_SCHEMA.features) + 1  # and the score
    # alias history from the audit log: who moved which alias to this version, and why
    audit = registry(stack, "ListAuditLog", rpb.ListAuditLogRequest(model=story.model)).entries  # type: ignore[attr-defined]
    mine = [e for e in audit if story.v2 in (e.version, e.from_version, e.to_version)]
    rows = page.locator("#history tbody tr")
    assert rows.count() == len(mine) >= 2
    assert texts(page, "#history .actor") == [e.actor for e in reversed(mine)]
    assert texts(page, "#history .reason") == [e.reason for e in reversed(mine)]
    assert "retrained on recent data" in texts(page, "#history .reason")
    # the reason-code catalogue: R01 is the first model feature, derived features come last
    catalogue = [row.split("\t") for row in texts(page, "#catalogue tbody tr")]
    assert [c[0] for c in catalogue] == [
        f"R{i:02d}" for i in range(1, len(SMALL_SCHEMA.model_feature_names) + 1)
    ]
    assert [c[1] for c in catalogue] == SMALL_SCHEMA.model_feature_names
    assert catalogue[1][2] == "Outstanding debt"


def test_drift_page(console: RecordingPage, stack: ConsoleStack, story: Story) -> None:
    page = console.page
    page.goto(f"/models/{story.model}/versions/{story.v1}/drift?days=30")
    report = monitor(
        stack,
        "GetDriftReport",
        mpb.GetDriftReportRequest(model=types_pb2.ModelRef(name=story.model, version=story.v1), window=DAILY),
    )
    windows = list(report.windows)  # type: ignore[attr-defined]
    assert len(windows) >= 10
    days = [w.start.ToDatetime().strftime("%Y-%m-%d") for w in windows]
    assert texts(page, "#heatmap thead th.day") == days
    for w, d in zip(windows, days, strict=True):
        for f in w.features:
            cell = page.locator(f'#heatmap tr[data-feature="{f.feature}"] td').nth(days.index(d))
            assert float(cell.get_attribute("data-psi") or "nan") == f.psi
        row = page.locator(f'#quality tr[data-day="{d}"]')
        assert int(row.locator(".count").inner_text()) == w.count
        assert int(row.locator(".labeled").inner_text()) == w.labeled
        assert row.locator(".accuracy").inner_text() == f"{w.accuracy:.4f}"
        # each day's score histogram on the reference's bins, as the monitor counted it
        assert w.HasField("score_histogram")
        assert len(w.score_histogram.counts) == len(w.score_histogram.edges) + 2  # bins, then missing
        counts = row.locator("svg.score-hist").get_attribute("data-counts")
        assert counts == ",".join(str(c) for c in w.score_histogram.counts)
    summed = [sum(c) for c in zip(*(w.score_histogram.counts for w in windows), strict=True)]
    assert sum(summed) == sum(w.count for w in windows)
    assert page.locator("#score-histogram svg.score-hist").get_attribute("data-counts") == ",".join(
        str(c) for c in summed
    )
    # the drifted features of the last days are coloured as major shifts
    assert page.locator('#heatmap tr[data-feature="late_payments_12m"] td.psi-high').count() >= 2
    alerts = monitor(stack, "ListAlerts", mpb.ListAlertsRequest(model=story.model)).alerts  # type: ignore[attr-defined]
    assert page.locator("#alerts tbody tr").evaluate_all("rows => rows.map(r => r.dataset.alert)") == [
        a.id for a in alerts
    ]
    states = {a.id: "firing" if a.state == mpb.ALERT_STATE_FIRING else "resolved" for a in alerts}
    for alert_id, state in states.items():
        assert page.locator(f'#alerts tr[data-alert="{alert_id}"] .alert-state').inner_text() == state


def test_model_rollouts_and_alerts_pages(console: RecordingPage, stack: ConsoleStack, story: Story) -> None:
    page = console.page
    page.goto(f"/models/{story.model}")
    versions = registry(stack, "ListVersions", rpb.ListVersionsRequest(model=story.model)).versions  # type: ignore[attr-defined]
    assert page.locator("#versions tbody tr").evaluate_all(
        "rows => rows.map(r => Number(r.dataset.version))"
    ) == [v.version for v in versions]
    page.goto("/rollouts")
    rollouts = stack.rollouts.ListRollouts(
        ropb.ListRolloutsRequest(page_size=200), metadata=bearer_metadata(READER_TOKEN), timeout=30
    ).rollouts
    assert page.locator("#rollouts tbody tr[data-rollout]").evaluate_all(
        "rows => rows.map(r => r.dataset.rollout)"
    ) == [r.id for r in rollouts]
    page.goto("/alerts")
    alerts = monitor(stack, "ListAlerts", mpb.ListAlertsRequest()).alerts  # type: ignore[attr-defined]
    assert page.locator("#alerts tbody tr").evaluate_all("rows => rows.map(r => r.dataset.alert)") == [
        a.id for a in alerts
    ]


# ----- live rollouts ---------------------------------------------------------------------------------


def test_rollout_page_follows_the_rollout_without_a_reload(
    console: RecordingPage, stack: ConsoleStack
) -> None:
    model, rollout = fresh_rollout(stack, min_requests=20, steps=[10, 50, 100])
    page = console.page
    page.goto(f"/rollouts/{rollout.id}")
    assert page.locator("#step").inner_text() == "1 / 3"
    assert page.locator("#state").inner_text() == "progressing"
    page.wait_for_selector("#live[data-live-status=open]")
    page.evaluate("window.__sameDocument = true")
    with Traffic(stack, model):
        page.wait_for_selector("#live[data-live-status=final]", timeout=120_000)
    assert page.evaluate("window.__sameDocument") is True  # updated in place, never reloaded
    final = stack.rollout(rollout.id)
    assert final.state == ropb.ROLLOUT_STATE_PROMOTED
    assert page.locator("#state").inner_text() == "promoted"
    assert page.locator("#step").inner_text() == f"{final.step_index + 1} / 3"
    assert int(page.locator("#live").get_attribute("data-updates") or "0") >= 3  # steps 2, 3, promoted
    verdicts = texts(page, "#decisions .verdict")
    assert verdicts == [d.verdict for d in reversed(final.decisions)]
    assert "advance" in verdicts
    requests = {
        v: int(page.locator(f'#variants tr[data-variant="{v}"] .requests').inner_text())
        for v in ("stable", "canary")
        if page.locator(f'#variants tr[data-variant="{v}"]').count()
    }
    assert requests == {m.variant: m.requests for m in final.metrics}


def test_an_experiment_page_shows_the_gateway_statistics_live(
    console: RecordingPage, stack: ConsoleStack
) -> None:
    model = stack.create_model("console-ab")
    v1 = stack.register(model, "manual")
    stack.set_alias(model, "production", v1, "first release")
    v2 = stack.register(model, "schedule", parent=v1)
    arms = [
        ropb.ExperimentArm(name="control", version=v1, weight=50),
        ropb.ExperimentArm(name="b", version=v2, weight=50),
    ]
    start = ropb.StartExperimentRequest(model=model, arms=arms)
    exp = stack.rollouts.StartExperiment(start, metadata=bearer_metadata(ADMIN_TOKEN), timeout=30).experiment
    page = console.page
    page.goto(f"/rollouts?model={model}")
    assert page.locator("#experiments tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.experiment)"
    ) == [exp.id]
    page.goto(f"/experiments/{exp.id}")
    page.wait_for_selector("#live[data-live-status=open]")
    page.evaluate("window.__sameDocument = true")
    scored = stack.score(model, [f"ab-{i:03d}" for i in range(40)], explain=False)
    page.wait_for_function(  # the page follows the gateway's counts without a reload
        "n => [...document.querySelectorAll('#arms .requests')]"
        ".reduce((s, c) => s + Number(c.innerText), 0) === n",
        arg=len(scored),
        timeout=30_000,
    )
    stop = ropb.StopExperimentRequest(experiment_id=exp.id)
    stack.rollouts.StopExperiment(stop, metadata=bearer_metadata(ADMIN_TOKEN), timeout=30)
    page.wait_for_selector("#live[data-live-status=final]", timeout=30_000)
    assert page.evaluate("window.__sameDocument") is True
    assert page.locator("#experiment-state").inner_text() == "stopped"
    got = stack.rollouts.GetExperiment(
        ropb.GetExperimentRequest(experiment_id=exp.id), metadata=bearer_metadata(READER_TOKEN), timeout=30
    )
    stats = json.loads(got.statistics)
    (comparison,) = stats["comparisons"]
    for arm in comparison["arms"]:
        row = page.locator(f'#arms tr[data-arm="{arm["arm"]}"]')
        assert int(row.locator(".requests").inner_text()) == arm["requests"]
        estimate = row.locator(".fig-approval_rate").get_attribute("data-estimate")
        assert (float(estimate) if estimate else None) == arm["approval_rate"]["estimate"]
    assert sum(a["requests"] for a in comparison["arms"]) == len(scored)
    for effect in comparison["effects"]:
        cell = page.locator(f'#effects tr[data-arm="b"][data-metric="{effect["metric"]}"] .effect')
        estimate = cell.get_attribute("data-estimate")
        assert (float(estimate) if estimate else None) == effect["estimate"]
    assert (
        page.locator('#verdicts tr[data-arm="b"] .recommendation').inner_text()
        == comparison["recommendation"]
    )
    page.goto(f"/rollouts?model={model}")  # stopped: no longer running, still found by id
    assert page.locator("#experiments tbody tr[data-experiment]").count() == 0
    page.goto(f"/experiments/{exp.id}")
    assert page.locator("#live").get_attribute("data-live-status") == "final"
    assert page.locator('#arms tr[data-arm="control"] .requests').inner_text() == str(
        comparison["arms"][0]["requests"]
    )


# ----- admin actions ---------------------------------------------------------------------------------


def test_an_admin_pauses_and_resumes_from_the_page(console: RecordingPage, stack: ConsoleStack) -> None:
    _, rollout = fresh_rollout(stack, min_requests=1_000_000, steps=[5, 100])  # it stays at step 1
    page = console.page
    sign_in(page, ADMIN_TOKEN)
    assert page.locator("#who").get_attribute("data-subject") == OPERATOR_SUBJECT
    page.goto(f"/rollouts/{rollout.id}")
    page.click("#action-pause")
    page.wait_for_selector("#state:text-is('paused')")
    paused = stack.rollout(rollout.id)
    assert paused.state == ropb.ROLLOUT_STATE_PAUSED
    pauses = [d for d in paused.decisions if d.verdict == "pause"]
    assert len(pauses) == 1
    assert OPERATOR_SUBJECT in pauses[0].reason  # the gateway audited the person, not the console
    page.click("#action-resume")
    page.wait_for_selector("#state:text-is('progressing')")
    resumed = stack.rollout(rollout.id)
    assert resumed.state == ropb.ROLLOUT_STATE_PROGRESSING
    resumes = [d for d in resumed.decisions if d.verdict == "resume"]
    assert len(resumes) == 1
    assert OPERATOR_SUBJECT in resumes[0].reason
    # the token is never in a page, and the HttpOnly cookie holds it only sealed (encrypted)
    assert ADMIN_TOKEN not in page.content()
    cookies = console.context.cookies()
    assert [c["httpOnly"] for c in cookies] == [True]
    assert ADMIN_TOKEN not in cookies[0]["value"]
    assert page.evaluate("document.cookie") == ""


def test_without_an_admin_token_there_are_no_buttons_and_the_endpoints_refuse(
    console: RecordingPage, stack: ConsoleStack
) -> None:
    _, rollout = fresh_rollout(stack, min_requests=1_000_000, steps=[5, 100])
    page = console.page
    url = f"/rollouts/{rollout.id}/pause"
    page.goto(f"/rollouts/{rollout.id}")
    assert page.locator("#actions button").count() == 0
    assert page.request.post(url, form={"csrf": "x"}).status == 401  # anonymous
    # a reader signs in: still no buttons, and the endpoint refuses with its own CSRF token
    sign_in(page, READER_TOKEN)
    page.goto(f"/rollouts/{rollout.id}")
    assert page.locator("#actions button").count() == 0
    csrf = page.locator("form[action='/logout'] input[name=csrf]").get_attribute("value") or ""
    assert page.request.post(url, form={"csrf": csrf}).status == 403
    # an admin's session, but a forged request: wrong CSRF token, or another site's origin
    admin = console.context.browser.new_context(base_url=stack.console_url)  # type: ignore[union-attr]
    try:
        admin_page = admin.new_page()
        sign_in(admin_page, ADMIN_TOKEN)
        assert admin_page.request.post(url, form={"csrf": "forged"}).status == 403
        admin_page.goto(f"/rollouts/{rollout.id}")
        token = admin_page.locator("#actions input[name=csrf]").first.get_attribute("value") or ""
        assert (
            admin_page.request.post(
                url, form={"csrf": token}, headers={"Origin": "http://evil.example"}
            ).status
            == 403
        )
    finally:
        admin.close()
    # a bearer header with a reader token is refused as well; nothing changed the rollout
    assert page.request.post(url, headers={"Authorization": f"Bearer {READER_TOKEN}"}).status == 403
    after = stack.rollout(rollout.id)
    assert after.state == ropb.ROLLOUT_STATE_PROGRESSING
    assert not [d for d in after.decisions if d.verdict not in ("start", "wait")]


# ----- decision lookup -------------------------------------------------------------------------------


def test_the_decision_lookup_shows_what_the_client_received(
    console: RecordingPage, stack: ConsoleStack, story: Story
) -> None:
    results = stack.score(story.model, ["biz-lookup-1", "biz-lookup-2"])
    stack.wait_logged([r.request_id for r in results])
    page = console.page
    for r in results:
        page.goto("/decisions")
        page.fill("input[name=request_id]", r.request_id)
        page.click("#lookup button[type=submit]")
        card = page.locator(f'article.decision[data-request="{r.request_id}"]')
        card.wait_for()
        assert card.locator(".version").inner_text() == f"{r.model.name} v{r.model.version}"
        assert card.locator(".variant").inner_text() == VARIANTS[r.variant]
        assert float(card.locator(".score").get_attribute("data-score") or "nan") == r.score
        expected = "decline" if r.decision == spb.DECISION_DECLINE else "approve"
        assert card.locator(".decision-value").inner_text() == expected
        assert r.reason_codes, "the client asked for reason codes"
        assert texts(card, ".reasons .code") == [c.code for c in r.reason_codes]  # type: ignore[arg-type]
        assert texts(card, ".reasons .feature") == [c.feature for c in r.reason_codes]  # type: ignore[arg-type]
    # by entity id and day
    page.goto(f"/decisions?entity_id=biz-lookup-2&date={today()}")
    assert page.locator("article.decision").evaluate_all("cards => cards.map(c => c.dataset.request)") == [
        results[1].request_id
    ]
    page.goto("/decisions?request_id=no-such-request")
    assert page.locator("#no-match").is_visible()


def test_backend_failures_show_on_the_page(console: RecordingPage, stack: ConsoleStack) -> None:
    page = console.page
    page.goto("/models/no-such-model")  # a 404 page, not a stack trace
    assert "NOT_FOUND" in page.locator("#error-message").inner_text()
    page.goto("/rollouts/0123456789abcdef")
    assert "NOT_FOUND" in page.locator("#error-message").inner_text()
    assert all("404" in e for e in console.errors)  # the browser logs the status of an error page
    console.errors.clear()


def test_the_health_endpoint(console: RecordingPage) -> None:
    response = console.page.request.get("/healthz")
    assert response.status == 200
    assert response.text() == "ok\n"
