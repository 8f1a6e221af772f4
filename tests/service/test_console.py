"""Roles on keys and the review console, against a real ``emotion-ops serve``: every operation
of the API document with every role; the console in headless Chromium (it renders, an admin's
actions work, a reviewer's are refused, every resource is the service's own); a logged text
that tries to run script in a reviewer's browser, through ``emotion-ops drift``'s report."""

from __future__ import annotations

import io
import json
import random
import shutil
import time

import httpx
import pytest
from rich.console import Console
from rich.table import Table

from core.access import Role, required_role
from core.labels import QUARANTINED
from core.settings import CoreSettings, ServiceSettings, TrainingSettings
from core.shadow import SHADOW_REQUIREMENT_TAG, ShadowRequirement, ShadowShortfall
from core.store import Store
from core.text import for_spreadsheet, for_terminal
from emotion_ops.commands.common import shown
from tests.utils.cli import cli
from tests.utils.factories import CUE_WORDS, FILLER_WORDS, TINY_TRAINING
from tests.utils.server import API_KEY, VENDOR_KEY, running_service, service_env
from training.pipeline import train_and_register
from training.promote import promote

REVIEW_KEY = "review-key-0123456789"
PREDICT_KEY = "predict-key-0123456789"
KEYS = {Role.ADMIN: API_KEY, Role.LABEL: VENDOR_KEY, Role.REVIEW: REVIEW_KEY, Role.PREDICT: PREDICT_KEY}
# Ends Evidently's <script> block if its data is not escaped, then runs as markup.
PAYLOAD = "i feel </script><img src=x onerror=\"document.title='pwned'\"> so angry"


def test_named_keys_take_a_role_and_a_bad_role_is_refused(isolated_env, monkeypatch):
    monkeypatch.setenv(
        "EMOTION_API_KEYS",
        json.dumps({"vendor": "0123456789abcdef", "alice": {"key": "fedcba9876543210", "role": "review"}}),
    )
    monkeypatch.setenv("EMOTION_API_KEY", "default-key-0123456789")
    roles = {name: role for name, (_, role) in ServiceSettings().keys_with_roles().items()}
    assert roles == {"vendor": Role.LABEL, "alice": Role.REVIEW, "default": Role.ADMIN}
    for keys, message in (
        ({"a": {"key": "0123456789abcdef", "role": "root"}}, "key 1 in EMOTION_API_KEYS has role 'root'"),
        (
            {"a": {"secret": "0123456789abcdef"}},
            'key 1 in EMOTION_API_KEYS: give the key as a string, or as {"key"',
        ),
    ):
        monkeypatch.setenv("EMOTION_API_KEYS", json.dumps(keys))
        with pytest.raises(ValueError, match=message.replace("{", r"\{").replace("(", r"\(")) as raised:
            ServiceSettings()
        assert "0123456789abcdef" not in str(raised.value)  # no message echoes a key


def test_logged_text_is_escaped_for_terminals_rich_markup_and_spreadsheets():
    hostile = "[/] [conceal]hidden[/conceal] \x1b[2J\x1b]0;title\x07 \u202eevil"
    assert for_terminal(hostile) == "[/] [conceal]hidden[/conceal] \\x1b[2J\\x1b]0;title\\x07 \\u202eevil"
    table = Table()
    table.add_column("text")
    table.add_row(shown(hostile))  # unescaped, "[/]" raises MarkupError and [conceal] hides text
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(table)
    assert "[/] [conceal]hidden[/conceal]" in out.getvalue() and "\x1b" not in out.getvalue()
    for cell in ('=HYPERLINK("http://x")', "+1", "-1", "@SUM(A1)", "\tx", "\rx"):
        assert for_spreadsheet(cell) == "'" + cell
    assert for_spreadsheet("i am =happy") == "i am =happy"


def test_a_report_ticket_opens_one_report_for_two_minutes_and_none_without_keys():
    from service.console import report_ticket, ticket_is_valid, ticket_secret

    keys = {"default": ("k" * 16, Role.ADMIN), "vendor": ("v" * 16, Role.LABEL)}
    secret = ticket_secret(keys)
    assert secret == ticket_secret(keys)  # every worker derives the same
    # Only the keys that may read reports make the secret: a vendor cannot sign a ticket.
    assert secret == ticket_secret({"default": ("k" * 16, Role.ADMIN)})
    ticket = report_ticket(secret, "r1", now=1000.0)
    assert ticket_is_valid(secret, "r1", ticket, now=1100.0)
    assert not ticket_is_valid(secret, "r2", ticket, now=1100.0)
    assert not ticket_is_valid(secret, "r1", ticket, now=1200.0)  # expired
    assert not ticket_is_valid(secret, "r1", "\u00b2.00", now=0.0)  # a digit int() cannot read
    # No key may read reports: no ticket is predictable.
    assert ticket_secret({}) != ticket_secret({})
    assert ticket_secret({"vendor": ("v" * 16, Role.LABEL)}) != ticket_secret(
        {"vendor": ("v" * 16, Role.LABEL)}
    )


@pytest.fixture(scope="module")
def console_env(registry, tiny_data, tiny_base_model, tmp_path_factory):
    """A copy of the tiny registry with a second version waiting as challenger (gate passed,
    awaiting review), and the service's environment with a key of every role."""
    var_dir = tmp_path_factory.mktemp("console") / "var"
    shutil.copytree(registry, var_dir)
    settings = TrainingSettings(var_dir=var_dir, promotion_floor=0.0, promotion_tolerance=1.0)
    train_and_register(
        settings, TINY_TRAINING, str(tiny_data), str(tiny_base_model), with_baseline=False, progress=False
    )
    assert promote(settings, str(tiny_data), move_champion=False).decision.passed
    keys = {
        "vendor-a": VENDOR_KEY,
        "alice": {"key": REVIEW_KEY, "role": "review"},
        "app": {"key": PREDICT_KEY, "role": "predict"},
    }
    return service_env(
        var_dir,
        EMOTION_API_KEYS=json.dumps(keys),
        EMOTION_DATA_DIR=str(tiny_data),
        EMOTION_DRIFT_MIN_ROWS="30",
        # The waiting challenger scores every logged text; approving it asks the shadow's word.
        EMOTION_SHADOW_SHARE="1",
        EMOTION_SHADOW_MIN_AGREEMENT="0",
        EMOTION_SHADOW_MIN_ROWS="10",
        EMOTION_LABEL_QUOTA_PER_HOUR="25",
    )


@pytest.fixture(scope="module")
def console_url(console_env, tmp_path_factory):
    with running_service(console_env, tmp_path_factory.mktemp("logs") / "serve.log") as url:
        rng = random.Random(0)
        texts = [PAYLOAD] * 5 + [
            " ".join(rng.choices(FILLER_WORDS, k=6) + rng.sample(CUE_WORDS[("joy", "anger")[i % 2]], 2))
            for i in range(55)
        ]
        with httpx.Client(base_url=url, headers={"x-api-key": API_KEY}, timeout=60) as client:
            answers = client.post("/predict_batch", json={"texts": texts}).json()
            for answer in answers[5:25]:
                assert (
                    client.post(
                        "/feedback", json={"request_id": answer["request_id"], "label": "joy"}
                    ).status_code
                    == 200
                )
        store = Store.open(CoreSettings(var_dir=console_env["EMOTION_VAR_DIR"]).log_store_url).predictions
        store.set_feedback_status(
            {a["request_id"]: (QUARANTINED, "possible trigger 'so': test") for a in answers[5:10]}
        )
        with pytest.MonkeyPatch.context() as patch:
            for name, value in console_env.items():
                patch.setenv(name, value)
            drift = cli("drift")
            assert drift.exit_code == 0, drift.output
        _until_the_shadow_scored(url, texts[5:], at_least=40)
        yield url


def _until_the_shadow_scored(url: str, texts: list[str], at_least: int) -> None:
    """Traffic until the shadow has scored ``at_least`` texts (its challenger loads in its own
    thread after the service starts, so the first requests may pass before it)."""
    deadline = time.monotonic() + 120
    with httpx.Client(base_url=url, headers={"x-api-key": API_KEY}, timeout=60) as client:
        while time.monotonic() < deadline:
            shadow = client.get("/console/api/shadow").json()
            if shadow.get("rows", 0) >= at_least:
                return
            client.post("/predict_batch", json={"texts": texts})
            time.sleep(0.5)
    raise AssertionError(f"the shadow scored {shadow.get('rows')} texts in 120 s: {shadow}")


def _operations(url: str):
    document = httpx.get(url + "/docs.json").json()
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            # The Evidently page opens by a ticket the console hands out, not by a key.
            if "x-required-role" in operation and operation.get("security") != []:
                yield method.upper(), path, Role(operation["x-required-role"])


def test_every_operation_opens_to_its_role_and_above_and_refuses_the_rest(console_url):
    operations = list(_operations(console_url))
    assert {("POST", "/feedback"), ("POST", "/console/api/promote"), ("GET", "/reports")} <= {
        (method, path) for method, path, _ in operations
    }
    refused = []
    for method, path, needed in operations:
        concrete = path.replace("{report_id}", "no-such-report")
        for role, key in KEYS.items():
            # An empty body: a permitted key gets a validation error, never an action.
            answer = httpx.request(method, console_url + concrete, headers={"x-api-key": key},
                                   **({"json": {}} if method == "POST" else {}), timeout=60)  # fmt: skip
            if role.allows(needed):
                assert answer.status_code not in (401, 403), (method, path, role, answer.text)
            else:
                assert answer.status_code == 403, (method, path, role, answer.status_code)
                assert f"needs role '{needed}'" in answer.json()["error"]
                refused.append((path, role))
    assert ("/reports", Role.LABEL) in refused and ("/console/api/promote", Role.REVIEW) in refused


def test_every_route_the_service_mounts_has_a_role_or_is_open():
    """Read from service.py itself, hidden routes (include_in_schema=False) too: a route the
    document leaves out would otherwise pass the guard for any key."""
    import ast
    from pathlib import Path

    from service.guard import is_open

    service = Path(__file__).resolve().parents[2] / "service"
    source = service / "service.py"
    assets = [path.name for path in (service / "static").glob("console.*") if path.suffix != ".html"]
    routes = []
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef):
            continue
        for decorator in node.decorator_list:
            if not (isinstance(decorator, ast.Call) and isinstance(decorator.func, ast.Attribute)):
                continue
            if decorator.func.attr in ("get", "post") and getattr(decorator.func.value, "id", "") == "web":
                routes.append((decorator.func.attr.upper(), decorator.args[0].value))
            elif decorator.func.attr == "api":
                routes += [("POST", kw.value.value) for kw in decorator.keywords if kw.arg == "route"]
    assert len(routes) >= 25 and ("POST", "/predict") in routes
    for method, template in routes:
        if template == "/console/{asset}":
            assert assets and all(is_open(f"/console/{asset}") for asset in assets)
            continue
        concrete = template.replace("{report_id}", "r1")
        assert is_open(concrete) or required_role(method, concrete) is not None, (method, template)


def test_a_key_past_its_hourly_label_quota_gets_429_and_when_to_retry(console_url):
    answers = httpx.post(console_url + "/predict_batch", headers={"x-api-key": API_KEY},
                         json={"texts": [f"i feel fine {index}" for index in range(26)]}).json()  # fmt: skip
    vendor = {"x-api-key": VENDOR_KEY}
    for answer in answers[:25]:
        sent = httpx.post(
            console_url + "/feedback",
            headers=vendor,
            json={"request_id": answer["request_id"], "label": "joy"},
        )
        assert sent.status_code == 200, sent.text
    refused = httpx.post(
        console_url + "/feedback",
        headers=vendor,
        json={"request_id": answers[25]["request_id"], "label": "joy"},
    )
    assert refused.status_code == 429, refused.text
    assert "key:vendor-a has given 25 labels in the last hour; its quota is 25" in refused.json()["error"]
    assert 3500 <= int(refused.headers["retry-after"]) <= 3600
    # The quota is the key's own: the admin's 20 labels leave it room.
    admin = httpx.post(console_url + "/feedback", headers={"x-api-key": API_KEY},
                       json={"request_id": answers[25]["request_id"], "label": "joy"})  # fmt: skip
    assert admin.status_code == 200, admin.text
    # Each source's volume, relabels included, as the quota counts it.
    sources = httpx.get(console_url + "/console/api/labels", headers={"x-api-key": REVIEW_KEY}).json()[
        "sources"
    ]
    by_source = {source["source"]: source for source in sources}
    assert by_source["key:vendor-a"]["given"] == 25 and by_source["key:vendor-a"]["last_hour"] == 25


def test_the_report_page_opens_only_with_a_ticket_the_console_gave(console_url):
    review = {"x-api-key": REVIEW_KEY}
    report_id = httpx.get(console_url + "/reports", headers=review).json()["reports"][0]["id"]
    forged = httpx.get(f"{console_url}/reports/{report_id}/page", params={"ticket": "9999999999.00"})
    assert forged.status_code == 403 and "ticket is invalid" in forged.json()["error"]
    page = httpx.get(f"{console_url}/console/api/reports/{report_id}", headers=review).json()["page"]
    other = httpx.get(console_url + page.replace(report_id, "another-report"))
    assert other.status_code == 403  # a ticket opens the one report it was given for
    opened = httpx.get(console_url + page)
    assert opened.status_code == 200 and opened.headers["content-security-policy"].startswith("sandbox")


def test_a_logged_script_never_runs_in_the_report(console_url, console_env, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    review = {"x-api-key": REVIEW_KEY}
    listed = httpx.get(console_url + "/reports", headers=review).json()["reports"]
    assert listed and listed[0]["verdict"] in ("drift", "no drift")
    page = httpx.get(console_url + "/reports/latest", headers=review)
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"].startswith("sandbox allow-scripts;")
    assert "</script><img" not in page.text and "\\u003c/script\\u003e\\u003cimg" in page.text
    view = httpx.get(console_url + "/console/api/reports/latest", headers=review).json()
    assert httpx.get(console_url + view["page"].replace("ticket=", "ticket=1")).status_code == 403

    _sign_in(browser, console_url, REVIEW_KEY)
    browser.get(console_url + "/console#report/latest")
    _rendered(browser, "report")
    # Beside the verdict, what a reviewer reads before labels come: the novel share and accuracy.
    novel = view["novelty"]["estimated_share"]
    estimate = browser.find_element(By.ID, "novel-estimate").text
    assert estimate.startswith(f"about {100 * novel['estimate']:.1f} %") and "unlike anything" in estimate
    accuracy = view["estimated_accuracy"]
    shown = browser.find_element(By.ID, "estimated-accuracy").text
    assert f"all {100 * accuracy['all']['estimate']:.1f} %" in shown and "(ATC)" in shown
    frame = browser.find_element(By.ID, "evidently")
    assert frame.get_attribute("sandbox") == "allow-scripts"
    browser.switch_to.frame(frame)
    WebDriverWait(browser, 60).until(lambda b: b.execute_script("return document.readyState") == "complete")
    # Evidently's own script drew the report; the text's <img onerror> never became markup.
    WebDriverWait(browser, 60).until(
        lambda b: b.execute_script("return document.body.innerText.length") > 100
    )
    assert browser.execute_script("return document.querySelectorAll('img[src=\"x\"]').length") == 0
    assert browser.title != "pwned"
    browser.switch_to.default_content()
    assert browser.title != "pwned"
    # The console shows the same texts as text, never as markup.
    assert browser.execute_script("return document.querySelectorAll('img[src=\"x\"]').length") == 0
    _same_origin_only(browser, console_url)


def test_the_console_renders_every_page_for_a_reviewer_and_refuses_its_actions(console_url, browser):
    from selenium.webdriver.common.by import By

    _sign_in(browser, console_url, REVIEW_KEY)
    for page in ("timeline", "versions", "labels", "shadow"):
        browser.get(f"{console_url}/console#{page}")
        _rendered(browser, page)
        assert not browser.find_elements(By.CSS_SELECTOR, "#promote, #rollback, #release, #drop")
    browser.get(console_url + "/console#timeline")
    _rendered(browser, "timeline")
    kinds = {
        row.get_attribute("data-kind") for row in browser.find_elements(By.CSS_SELECTOR, "tr[data-kind]")
    }
    assert {"report", "registered", "gate", "quarantine"} <= kinds, kinds
    # The reviewer's key cannot act, whatever the page shows.
    status = browser.execute_async_script(
        "const done = arguments[0]; fetch('/console/api/promote', {method: 'POST', headers: "
        "{'x-api-key': sessionStorage.getItem('emotion-ops-key'), 'content-type': 'application/json'}, "
        "body: JSON.stringify({version: '2'})}).then(r => done(r.status));"
    )
    assert status == 403
    _same_origin_only(browser, console_url)


def test_the_waiting_challenger_scores_live_traffic_in_the_shadow_and_never_answers(console_url, console_env):
    review = {"x-api-key": REVIEW_KEY}
    shadow = httpx.get(console_url + "/console/api/shadow", headers=review).json()
    assert shadow["waiting"] == "2" and shadow["champion_version"] == "1" and shadow["share"] == 1.0
    assert shadow["rows"] >= 40 and 0.0 <= shadow["agreement"] <= 1.0
    assert shadow["latency_ms"]["p50"] > 0 and shadow["allows"] is True
    given = {label["label"] for label in shadow["labels"]}
    assert given and given <= {"joy", "anger", "sadness", "fear", "love", "surprise"}
    # Each label's counts add up: what one model gives and the other not is the disagreement.
    disagreeing = round((1 - shadow["agreement"]) * shadow["rows"])
    assert all(row["champion_only"] <= disagreeing for row in shadow["labels"])
    if disagreeing:
        assert shadow["most_different"] and all(
            row["champion"] != row["challenger"] for row in shadow["most_different"]
        )
    # Clients only ever hear from the champion.
    answers = httpx.post(console_url + "/predict_batch", headers={"x-api-key": PREDICT_KEY},
                         json={"texts": ["i feel fine", "so angry"]}).json()  # fmt: skip
    assert {answer["model_version"] for answer in answers} == {"1"}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in console_env.items():
            patch.setenv(name, value)
        printed = cli("shadow")
    assert printed.exit_code == 0, printed.output
    assert "challenger v2 (passed, awaiting review) against champion v1" in printed.output
    assert "agreement with the champion" in printed.output and "the gate allows approval" in printed.output
    # The gate's shadow requirement, on the same store: short of rows, it refuses; met, it records.
    store = Store.open(CoreSettings(var_dir=console_env["EMOTION_VAR_DIR"]).log_store_url)
    too_few = ShadowRequirement(min_agreement=0.0, min_rows=shadow["rows"] + 10_000)
    with pytest.raises(ShadowShortfall, match="the gate needs"):
        too_few.check_for(lambda: store.shadow, "emotion-classifier")("2", "1", {})
    unlikely = ShadowRequirement(min_agreement=1.01, min_rows=1)
    with pytest.raises(ShadowShortfall, match="agrees with the champion on"):
        unlikely.check_for(lambda: store.shadow, "emotion-classifier")("2", "1", {})
    # What the gate recorded on the version holds an approver whose settings ask nothing.
    recorded = {SHADOW_REQUIREMENT_TAG: unlikely.to_tag()}
    with pytest.raises(ShadowShortfall, match="agrees with the champion on"):
        ShadowRequirement().check_for(lambda: store.shadow, "emotion-classifier")("2", "1", recorded)
    met = ShadowRequirement(min_agreement=0.0, min_rows=1).check_for(
        lambda: store.shadow, "emotion-classifier"
    )("2", "1", {})
    assert int(met["shadow.rows"]) >= 40 and float(met["shadow.agreement"]) == pytest.approx(
        shadow["agreement"], abs=0.05
    )


def test_an_admin_drops_labels_and_promotes_the_waiting_challenger(console_url, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _sign_in(browser, console_url, API_KEY)
    browser.get(console_url + "/console#labels")
    _rendered(browser, "labels")
    rows = browser.find_elements(By.CSS_SELECTOR, "tr[data-id] input[type=checkbox]")
    assert len(rows) == 5
    rows[0].click()
    rows[1].click()
    browser.find_element(By.ID, "drop").click()
    WebDriverWait(browser, 30).until(lambda b: "2 label(s) dropped" in b.find_element(By.ID, "notice").text)
    assert len(browser.find_elements(By.CSS_SELECTOR, "tr[data-id]")) == 3

    browser.get(console_url + "/console#versions")
    _rendered(browser, "versions")
    assert "awaiting review" in browser.find_element(By.ID, "card-challenger").text
    browser.find_element(By.ID, "promote").click()
    browser.switch_to.alert.accept()
    WebDriverWait(browser, 60).until(lambda b: "is champion" in b.find_element(By.ID, "notice").text)
    assert httpx.get(console_url + "/model", headers={"x-api-key": API_KEY}).json()["version"] == "2"
    champion_card = browser.find_element(By.ID, "card-champion").text
    assert "version 2" in champion_card and "shadow.agreement" in champion_card  # the evidence, kept
    # And back, as 'emotion-ops rollback' would.
    browser.find_element(By.ID, "rollback").click()
    browser.switch_to.alert.accept()
    WebDriverWait(browser, 60).until(lambda b: "rolled back" in b.find_element(By.ID, "notice").text)
    assert httpx.get(console_url + "/model", headers={"x-api-key": API_KEY}).json()["version"] == "1"
    _same_origin_only(browser, console_url)


def _sign_in(browser, url: str, key: str) -> None:
    from selenium.webdriver.common.by import By

    browser.get(url + "/console")
    browser.execute_script("sessionStorage.clear()")
    browser.get(url + "/console")
    browser.find_element(By.ID, "key").send_keys(key)
    browser.find_element(By.CSS_SELECTOR, "#sign-in button").click()
    _rendered(browser, "timeline")
    assert key not in browser.current_url


def _rendered(browser, page: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 30).until(
        lambda b: b.execute_script("return document.body.dataset.rendered") in (page, "error")
    )
    error = browser.execute_script("return document.getElementById('error').textContent")
    assert browser.execute_script("return document.body.dataset.rendered") == page, error


def _same_origin_only(browser, url: str) -> None:
    loaded = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert loaded and all(name.startswith(url + "/") for name in loaded), loaded
