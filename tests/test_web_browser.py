"""The dashboard in a real browser: Playwright for Python driving Debian's chromium (no browser
download) against a live ``cwhost serve`` on the fake driver. Each page's screenshot is kept
(CWHOST_SCREENSHOT_DIR, which CI sets) as evidence of what a person sees."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import requests

from tests.helpers import cli

playwright_sync = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium")


@pytest.fixture
def browser():
    with playwright_sync.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


AXE = (Path(__file__).parent / "web" / "axe.min.js").read_text()


def _shot(page, tmp_path: Path, name: str) -> None:
    """Keep the page's screenshot, and check it with axe: no serious or critical violation."""
    directory = Path(os.environ.get("CWHOST_SCREENSHOT_DIR") or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(directory / f"{name}.png"), full_page=True)
    if page.evaluate("typeof axe") == "undefined":
        page.evaluate(AXE)  # over the DevTools protocol: the page's CSP rightly refuses inline scripts
    violations = page.evaluate("axe.run(document).then(result => result.violations)")
    serious = [(v["id"], v["impact"], v["help"]) for v in violations if v["impact"] in ("serious", "critical")]
    assert serious == [], f"{name}: {serious}"


def test_sign_in_create_with_a_field_error_launch_live_and_delete(server, browser, tmp_path):
    token = cli(server.env, "keys", "create", "--account", "alice").stdout.split()[-1]
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if "Security Policy" in message.text else None)

    page.goto(server.url + "/")
    _shot(page, tmp_path, "sign-in")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Workstations").wait_for()

    page.get_by_role("link", name="New workstation").first.click()
    page.get_by_label("Name").fill("dev box")
    page.get_by_label("A configuration of my own").check()
    page.get_by_label("CPU cores").fill("1")
    page.get_by_label("Memory (GB)").fill("1")
    page.get_by_label("Storage (GB)").fill("1")
    page.get_by_role("button", name="Create").click()
    error = page.locator("#name-error")
    assert "Must be 1 to 63 characters" in error.inner_text()
    _shot(page, tmp_path, "create-with-an-error")
    page.get_by_label("Name").fill("dev-box")
    page.get_by_role("button", name="Create").click()
    page.get_by_role("heading", name="dev-box").wait_for()

    page.get_by_role("link", name="Workstations").first.click()
    row = page.locator("tr", has_text="dev-box")
    row.locator(".state-stopped").wait_for()
    page.evaluate("window.notReloaded = true")
    # Launched through the API: the list sees it without a reload.
    headers = {"Authorization": f"Bearer {token}"}
    listed = requests.get(server.url + "/v1/workstations", headers=headers).json()["data"]
    (ws,) = [w for w in listed if w["name"] == "dev-box"]
    assert requests.post(f"{server.url}/v1/workstations/{ws['id']}/launch", headers=headers).status_code == 200
    row.locator(".state-running").wait_for(timeout=10_000)
    row.locator(".ready").wait_for(timeout=20_000)
    assert page.evaluate("window.notReloaded") is True
    _shot(page, tmp_path, "workstations")

    row.get_by_role("link", name="dev-box").click()
    page.locator("#ssh-command").wait_for()
    assert page.locator("#ssh-command").inner_text().startswith("ssh -p ")
    page.locator(".plot canvas").first.wait_for()
    _shot(page, tmp_path, "workstation")

    page.get_by_role("link", name="Workspaces").click()
    page.get_by_label("Name (optional)").fill("data")
    page.get_by_role("button", name="Create workspace").click()
    page.get_by_role("link", name="data").click()
    upload = tmp_path / "notes.bin"
    upload.write_bytes(os.urandom(2 * 1024 * 1024))
    page.get_by_label("Upload a file").set_input_files(str(upload))
    page.get_by_role("button", name="Upload", exact=True).click()
    page.get_by_role("link", name="Download notes.bin").wait_for()
    assert page.locator("#upload-progress").get_attribute("value") in ("0", "100")  # reloaded, or done
    _shot(page, tmp_path, "workspace")
    with page.expect_download() as downloading:
        page.get_by_role("link", name="Download notes.bin").click()
    assert Path(downloading.value.path()).read_bytes() == upload.read_bytes()
    page.get_by_role("link", name="Account").click()
    page.get_by_role("heading", name="SSH keys").wait_for()
    _shot(page, tmp_path, "account")
    page.get_by_role("link", name="a year").click()
    page.locator("[data-stacked] canvas").wait_for()  # a year of days, drawn
    _shot(page, tmp_path, "account-year")
    page.get_by_role("link", name="Workstations").first.click()
    page.locator("tr", has_text="dev-box").get_by_role("link", name="dev-box").click()
    page.get_by_role("heading", name="dev-box").wait_for()
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete dev-box").click()
    page.get_by_role("heading", name="Workstations").wait_for()
    assert page.locator("tr", has_text="dev-box").count() == 0
    assert requests.get(f"{server.url}/v1/workstations/{ws['id']}", headers=headers).status_code == 404
    # An operator's page: for admin tokens only.
    assert page.get_by_role("link", name="Operators").count() == 0
    admin_token = cli(server.env, "keys", "create", "--account", "ops", "--admin").stdout.split()[-1]
    operator = browser.new_page(viewport={"width": 390, "height": 844})  # a phone's width
    operator.on("pageerror", lambda error: errors.append(str(error)))
    operator.goto(server.url + "/ui/login")
    operator.get_by_label("API token").fill(admin_token)
    operator.get_by_role("button", name="Sign in").click()
    operator.get_by_role("link", name="Operators").click()
    operator.get_by_role("heading", name="Host capacity").wait_for()
    assert "alice" in operator.locator("#accounts").inner_text()
    # A phone's width: wide tables scroll in their own box, and the page itself does not.
    assert operator.evaluate("document.documentElement.scrollWidth") <= 390
    _shot(operator, tmp_path, "operators")
    # No Content-Security-Policy violation, no script error, on any page.
    assert errors == []
