"""
The web console in a real browser: a real C{twistd msync}, Debian's
Chromium driven by Playwright, and devices as C{msync device} processes.

Playwright's sync API runs its own event loop, so this process runs no
Twisted reactor: the daemon and the devices are separate processes, and
every wait is Playwright's wait on a condition, bounded by L{BOUND}.

With C{MSYNC_SCREENSHOTS=1}, L{ScreenshotTests} also writes the pictures
that C{docs/console.md} shows, to C{docs/console/}.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from typing import Any

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Playwright,
    expect,
    sync_playwright,
)
from twisted.trial.unittest import SynchronousTestCase

from msync.testing import BOUND, CERTS, ROOT, TWISTD, Daemon

pytestmark = pytest.mark.browser

#: Debian's Chromium; Playwright's own browser download is not used.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]

MSYNC = os.path.join(os.path.dirname(TWISTD), "msync")
SCREENSHOTS = os.path.join(ROOT, "docs", "console")
VIEWPORT = {"width": 1280, "height": 800}


class ConsoleCase(SynchronousTestCase):
    """
    One daemon and one browser per test, all stopped in cleanup; the
    page's script errors and CSP violations fail the test.
    """

    def setUp(self) -> None:
        if not os.path.exists(CHROMIUM):
            self.fail(f"{CHROMIUM} is missing: run `make browser-deps`")

        self.data_dir = tempfile.mkdtemp(prefix="msync-browser-")
        self.addCleanup(shutil.rmtree, self.data_dir, True)
        self.daemon = Daemon(self.data_dir)
        self.addCleanup(self.daemon.kill)
        self.daemon.start(wait_for=("HTTP", "devices"))
        self.base = self.daemon.http_url
        with open(os.path.join(self.data_dir, "bootstrap.json")) as f:
            self.bootstrap: dict[str, str] = json.load(f)
        self.instance = self.bootstrap["instance_id"]

        self.playwright: Playwright = sync_playwright().start()
        self.addCleanup(self.playwright.stop)
        self.browser: Browser = self.playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS
        )
        self.addCleanup(self.browser.close)
        self.context: BrowserContext = self.browser.new_context(
            viewport=VIEWPORT  # type: ignore[arg-type]
        )
        self.context.set_default_timeout(BOUND * 1000)
        expect.set_options(timeout=BOUND * 1000)
        self.problems: list[str] = []
        self.addCleanup(self._no_problems)
        self.page = self.new_page()

    def new_page(self) -> Page:
        """A tab of the test's browser whose errors are watched."""
        page = self.context.new_page()
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.problems.append(str(e)))
        return page

    def _console(self, message: ConsoleMessage) -> None:
        # The browser logs refused requests (the 401 of the session
        # check before login) as errors; those are the API's answers.
        text = message.text
        if "Content Security Policy" in text or (
            message.type == "error" and "Failed to load resource" not in text
        ):
            self.problems.append(text)

    def _no_problems(self) -> None:
        self.assertEqual(self.problems, [], "the page reported problems")

    # --- steps a person takes ------------------------------------------

    def open(self, route: str = "", page: Page | None = None) -> Page:
        """Go to the console's C{#/route}."""
        page = page or self.page
        page.goto(f"{self.base}/#/{route}")
        return page

    def log_in(self, page: Page | None = None) -> Page:
        """Log in as the bootstrap admin, landing on the configs."""
        page = page or self.page
        if "#/login" not in page.url:
            self.open("login", page)
        page.get_by_test_id("login-user").fill(self.bootstrap["admin_user"])
        page.get_by_test_id("login-password").fill(
            self.bootstrap["admin_password"]
        )
        page.get_by_test_id("login-submit").click()
        expect(page.get_by_test_id("whoami")).to_have_text(
            self.bootstrap["admin_user"]
        )
        return page

    def add_config(
        self, biz: str, target: str = "device", **choices: str
    ) -> None:
        """
        Add a config through the form; C{choices} name radio buttons to
        pick (C{range="global"}, C{multi_device="no"}, ...).
        """
        page = self.open("configs/new")
        page.get_by_test_id("config-biz").fill(biz)
        page.get_by_test_id("config-description").fill(f"{biz} by test")
        page.get_by_test_id(f"target-{target}").check()
        for name, value in choices.items():
            if name == "threshold":
                page.get_by_test_id("config-threshold").fill(value)
            else:
                page.get_by_test_id(f"{name}-{value}").check()
        page.get_by_test_id("config-submit").click()
        expect(page.get_by_test_id("page-title")).to_have_text(biz)

    def confirm(self, page: Page | None = None) -> None:
        """Accept the console's confirmation dialog."""
        page = page or self.page
        dialog = page.get_by_test_id("confirm-dialog")
        expect(dialog).to_be_visible()
        dialog.get_by_test_id("confirm-ok").click()
        expect(dialog).to_be_hidden()

    def send(
        self, biz: str, link: str, payload: str, page: Page | None = None
    ) -> str:
        """Send through the send page; return the result code shown."""
        page = self.open(f"send/{biz}", page)
        page.get_by_test_id("send-link").fill(link)
        page.get_by_test_id("send-payload").fill(payload)
        before = page.get_by_test_id("send-third-msg-id").input_value()
        page.get_by_test_id("send-submit").click()
        code = page.get_by_test_id("send-code")
        expect(code).to_be_visible()
        text = code.inner_text()
        if text == "OK":
            # A fresh data id for the next send.
            expect(page.get_by_test_id("send-third-msg-id")).not_to_have_value(
                before
            )
        return text

    def device(
        self, device_id: str, biz: str, count: int, *extra: str
    ) -> subprocess.Popen[str]:
        """
        Start C{msync device}, which exits once C{count} ops came (or
        fails after the bound); it is stopped in cleanup either way.
        """
        data = tempfile.mkdtemp(prefix="msync-browser-device-")
        self.addCleanup(shutil.rmtree, data, True)
        process = subprocess.Popen(
            [
                MSYNC,
                "device",
                "--host",
                "localhost",
                "--port",
                str(self.daemon.ports["devices"]),
                "--ca",
                os.path.join(CERTS, "ca.pem"),
                "--instance",
                self.instance,
                "--device-id",
                device_id,
                "--biz",
                biz,
                "--data-dir",
                data,
                "--count",
                str(count),
                "--timeout",
                str(BOUND),
                *extra,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        self.addCleanup(_stop, process)
        return process

    def wait_online(self, device_id: str) -> Page:
        """Look the device up until the console shows it online."""
        page = self.open(f"lookup/device/{device_id}")
        expect(page.get_by_test_id("lookup-online")).to_have_text("online")
        return page


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
    process.communicate(timeout=BOUND)


class LoginTests(ConsoleCase):
    """Logging in and out."""

    def test_wrong_password_then_right(self) -> None:
        """A wrong password is refused with a visible message and no way
        in; the right one opens the console."""
        page = self.open()
        page.get_by_test_id("login-user").fill("admin")
        page.get_by_test_id("login-password").fill("not-the-password")
        page.get_by_test_id("login-submit").click()

        error = page.get_by_test_id("login-error")
        expect(error).to_be_visible()
        expect(error).to_have_text("Wrong user or password")
        expect(page.get_by_test_id("login-password")).to_have_value("")
        expect(page.locator("#topbar")).to_be_hidden()

        self.log_in()
        expect(page.get_by_test_id("page-title")).to_have_text("Sync configs")
        expect(page.get_by_test_id("instance-select")).to_have_value(
            self.instance
        )

    def test_lockout_shown(self) -> None:
        """After five wrong passwords in a row the console says the user
        is locked out, and then even the right password is refused."""
        page = self.open()
        error = page.get_by_test_id("login-error")
        for attempt in range(5):
            page.get_by_test_id("login-user").fill("admin")
            page.get_by_test_id("login-password").fill(f"wrong-{attempt}")
            page.get_by_test_id("login-submit").click()
            expect(error).to_be_visible()
            # The next attempt waits for this answer to be shown.
            expect(page.get_by_test_id("login-password")).to_have_value("")

        page.get_by_test_id("login-user").fill("admin")
        page.get_by_test_id("login-password").fill(
            self.bootstrap["admin_password"]
        )
        page.get_by_test_id("login-submit").click()
        expect(error).to_contain_text("Too many failed logins")
        expect(error).to_contain_text("locked out")
        expect(page.locator("#topbar")).to_be_hidden()

    def test_logout_and_session_reuse(self) -> None:
        """A session survives a reload; logging out ends it, and a reload
        then stays on the login page."""
        page = self.log_in()
        page.reload()
        expect(page.get_by_test_id("page-title")).to_have_text("Sync configs")

        page.get_by_test_id("logout").click()
        expect(page.get_by_test_id("login-form")).to_be_visible()
        expect(page.get_by_test_id("notice")).to_have_text(
            "You have logged out."
        )
        page.reload()
        expect(page.get_by_test_id("login-form")).to_be_visible()
        expect(page.locator("#topbar")).to_be_hidden()

    def test_deep_link_after_login(self) -> None:
        """A page asked for before logging in is the one shown after."""
        page = self.open("service")
        expect(page.get_by_test_id("login-form")).to_be_visible()
        self.log_in()
        expect(page.get_by_test_id("page-title")).to_have_text(
            "Service management"
        )


class ConfigTests(ConsoleCase):
    """Sync configs: add, view, change, take offline and online."""

    def test_add_edit_offline_online(self) -> None:
        """A config added through the form is listed online; its edit
        form keeps biz type and target fixed; offline, sending to it is
        refused with BIZ_NOT_ONLINE; online again, it takes data."""
        page = self.log_in()
        expect(page.get_by_test_id("config-empty")).to_be_visible()

        # A bad biz type is named at its field.
        page.get_by_test_id("config-add").click()
        page.get_by_test_id("config-biz").fill("not valid!")
        page.get_by_test_id("config-submit").click()
        expect(page.get_by_test_id("config-error")).to_contain_text("Biz type")
        biz_field = page.locator('.field[data-field="biz_type"]')
        expect(biz_field.locator(".field-error")).to_be_visible()
        expect(page.get_by_test_id("config-biz")).to_have_attribute(
            "aria-invalid", "true"
        )

        # Threshold applies only to persistent threshold configs.
        threshold = page.get_by_test_id("config-threshold")
        expect(threshold).to_be_disabled()
        page.get_by_test_id("resend_mode-threshold").check()
        expect(threshold).to_be_enabled()
        threshold.fill("5")
        page.get_by_test_id("config-biz").fill("UCHAT")
        page.get_by_test_id("config-description").fill("Chat to users")
        page.get_by_test_id("config-submit").click()

        expect(page.get_by_test_id("page-title")).to_have_text("UCHAT")
        detail = page.get_by_test_id("config-detail")
        expect(detail).to_contain_text("Threshold: the newest 5 ops")
        expect(detail).to_contain_text("Chat to users")
        expect(page.get_by_test_id("config-state")).to_have_text("online")

        # Editing: biz type and target are shown, not changeable.
        page.get_by_test_id("config-edit").click()
        expect(page.get_by_test_id("config-biz")).not_to_be_editable()
        expect(page.get_by_test_id("target-user")).to_be_disabled()
        expect(page.get_by_test_id("target-device")).to_be_disabled()
        page.get_by_test_id("config-description").fill("Chat, edited")
        page.get_by_test_id("config-submit").click()
        expect(detail).to_contain_text("Chat, edited")

        # Offline, from the list, after confirming.
        self.open("configs")
        row = page.locator('[data-testid=config-row][data-biz="UCHAT"]')
        expect(row.get_by_test_id("config-state")).to_have_text("online")
        row.get_by_test_id("config-toggle").click()
        self.confirm()
        expect(row.get_by_test_id("config-state")).to_have_text("offline")

        self.assertEqual(self.send("UCHAT", "bob", "hi"), "BIZ_NOT_ONLINE")
        expect(page.get_by_test_id("send-result")).to_have_class(
            re.compile(r"\brefused\b")
        )
        expect(page.get_by_test_id("send-scope")).to_contain_text("offline")

        # Online again, from the detail page: the op is taken and kept
        # for bob, who is not connected.
        self.open("configs/UCHAT")
        page.get_by_test_id("config-toggle").click()
        self.confirm()
        expect(page.get_by_test_id("config-state")).to_have_text("online")
        self.assertEqual(self.send("UCHAT", "bob", "hi"), "NOT_ONLINE")
        expect(page.get_by_test_id("send-result")).to_have_class(
            re.compile(r"\bok\b")
        )
        expect(page.get_by_test_id("send-reason")).to_contain_text("stored")

    def test_cancel_keeps_config_online(self) -> None:
        """Cancelling the confirmation leaves the config as it was."""
        self.log_in()
        self.add_config("LOCK")
        page = self.page
        page.get_by_test_id("config-toggle").click()
        dialog = page.get_by_test_id("confirm-dialog")
        dialog.get_by_test_id("confirm-cancel").click()
        expect(dialog).to_be_hidden()
        page.reload()
        expect(page.get_by_test_id("config-state")).to_have_text("online")


class SendAndLookupTests(ConsoleCase):
    """Sending by hand and following the op to the device."""

    def test_push_seen_acked_without_reload(self) -> None:
        """Data sent from the send page reaches a connected device, and
        the lookup page, left open, shows the push acked by refreshing
        itself, without reloading the page."""
        self.log_in()
        self.add_config("LOCK")
        device = self.device("phone-1", "LOCK", 1)
        watching = self.wait_online("phone-1")
        expect(watching.get_by_test_id("push-empty")).to_be_visible()
        watching.evaluate("window.stillTheSamePage = true")
        loads = watching.get_by_test_id("lookup-updated")

        sending = self.new_page()
        self.assertEqual(self.send("LOCK", "phone-1", "unlock", sending), "OK")
        op_id = re.search(  # type: ignore[union-attr]
            r"op id (\d+)", sending.get_by_test_id("send-result").inner_text()
        ).group(1)

        row = watching.locator(f'[data-testid=push-row][data-op-id="{op_id}"]')
        expect(row.get_by_test_id("push-state")).to_have_text("acked")
        self.assertTrue(watching.evaluate("window.stillTheSamePage"))
        self.assertGreater(int(loads.get_attribute("data-loads") or 0), 1)
        expect(watching.get_by_test_id("lookup-pushes")).to_have_text("1")

        out, err = device.communicate(timeout=BOUND)
        self.assertEqual(device.returncode, 0, err)
        self.assertEqual(json.loads(out)["text"], "unlock")

    def test_user_lookup_lists_devices(self) -> None:
        """A user's lookup shows the user online with the bound device,
        and the op sent to the user."""
        self.log_in()
        self.add_config("CHAT", target="user")
        device = self.device(
            "tablet-7", "CHAT", 1, "--user", "alice", "--session", "s-1"
        )
        self.wait_online("tablet-7")

        self.assertEqual(self.send("CHAT", "alice", "hello"), "OK")
        page = self.open("lookup/user/alice")
        expect(page.get_by_test_id("lookup-name")).to_have_text("alice")
        rows = page.get_by_test_id("device-row")
        expect(rows).to_have_count(1)
        expect(rows).to_have_attribute("data-device", "tablet-7")
        expect(
            page.get_by_test_id("push-row").get_by_test_id("push-state")
        ).to_have_text("acked")
        device.communicate(timeout=BOUND)
        self.assertEqual(device.returncode, 0)

    def test_unknown_device_and_bad_input(self) -> None:
        """A device never seen is said to be missing; a send without a
        device id is refused with the reason shown near the form."""
        self.log_in()
        self.add_config("LOCK")
        page = self.open("lookup")
        page.get_by_test_id("lookup-kind").select_option("device")
        page.get_by_test_id("lookup-id").fill("nobody")
        page.get_by_test_id("lookup-submit").click()
        expect(page.get_by_test_id("lookup-missing")).to_contain_text(
            "No device nobody"
        )

        self.open("send/LOCK")
        page.get_by_test_id("send-payload").fill("x")
        page.get_by_test_id("send-submit").click()
        expect(page.get_by_test_id("send-code")).to_have_text("ARGS_IS_NULL")
        expect(page.get_by_test_id("send-reason")).to_contain_text(
            "link_token"
        )


class AccessTests(ConsoleCase):
    """Instances and access keys."""

    def test_instance_and_key(self) -> None:
        """A new instance appears in the header's selector; a new key's
        secret is shown once with a note to copy it, never again; a
        revoked key is marked so."""
        page = self.log_in()
        self.open("access")
        page.get_by_test_id("instance-id").fill("ACME_shop")
        page.get_by_test_id("instance-zone").fill("Mars/Olympus")
        page.get_by_test_id("instance-submit").click()
        zone_field = page.locator('.field[data-field="time_zone"]')
        expect(zone_field.locator(".field-error")).to_contain_text(
            "unknown time zone"
        )
        expect(page.get_by_test_id("instance-error")).to_contain_text(
            "Time zone"
        )

        page.get_by_test_id("instance-zone").fill("Asia/Shanghai")
        page.get_by_test_id("instance-submit").click()
        expect(page.get_by_test_id("notice")).to_contain_text("ACME_shop")
        expect(
            page.locator(
                '[data-testid=instance-row][data-instance="ACME_shop"]'
            )
        ).to_contain_text("Asia/Shanghai")
        expect(
            page.get_by_test_id("instance-select").locator("option")
        ).to_have_count(2)

        # No instance ticked: the API's reason, at the field.
        for box in page.get_by_test_id("key-instance").all():
            box.uncheck()
        page.get_by_test_id("key-submit").click()
        expect(page.get_by_test_id("key-error")).to_contain_text("instances")

        page.locator('[data-testid=key-instance][value="ACME_shop"]').check()
        page.get_by_test_id("key-submit").click()
        note = page.get_by_test_id("new-key")
        expect(note).to_contain_text("Copy the secret now")
        secret = page.get_by_test_id("new-key-secret").inner_text()
        key = page.get_by_test_id("new-key-id").inner_text()
        self.assertGreaterEqual(len(secret), 16)
        row = page.locator(f'[data-testid=key-row][data-key="{key}"]')
        expect(row).to_contain_text("ACME_shop")

        page.get_by_test_id("new-key-done").click()
        expect(note).to_have_count(0)
        page.reload()
        expect(row.get_by_test_id("key-state")).to_have_text("active")
        self.assertNotIn(secret, page.content())

        row.get_by_test_id("key-revoke").click()
        self.confirm()
        expect(row.get_by_test_id("key-state")).to_have_text("revoked")

    def test_switching_instance(self) -> None:
        """The configs page follows the instance chosen in the header."""
        page = self.log_in()
        self.add_config("LOCK")
        self.open("access")
        page.get_by_test_id("instance-id").fill("Other_app")
        page.get_by_test_id("instance-submit").click()
        expect(page.get_by_test_id("notice")).to_contain_text("Other_app")

        self.open("configs")
        expect(page.get_by_test_id("config-row")).to_have_count(1)
        page.get_by_test_id("instance-select").select_option("Other_app")
        expect(page.get_by_test_id("config-empty")).to_be_visible()
        page.reload()
        expect(page.get_by_test_id("instance-select")).to_have_value(
            "Other_app"
        )


class ServiceTests(ConsoleCase):
    """Service management."""

    def test_signature_switch(self) -> None:
        """Turning signature checks off asks first and lasts across a
        reload; turning them on again needs no confirmation."""
        page = self.log_in()
        self.open("service")
        switch = page.get_by_test_id("signature-switch")
        expect(switch).to_be_checked()

        switch.click()
        self.confirm()
        expect(page.get_by_test_id("signature-state")).to_contain_text("Off")
        page.reload()
        expect(switch).not_to_be_checked()

        switch.click()
        expect(page.get_by_test_id("signature-state")).to_contain_text("On")
        page.reload()
        expect(switch).to_be_checked()

    def test_add_admin(self) -> None:
        """A short password is refused at its field; a new admin can
        then log in."""
        page = self.log_in()
        self.open("service")
        page.get_by_test_id("admin-user").fill("ops")
        page.get_by_test_id("admin-password").fill("short")
        page.get_by_test_id("admin-submit").click()
        password_field = page.locator('.field[data-field="password"]')
        expect(password_field.locator(".field-error")).to_contain_text(
            "at least 8"
        )

        page.get_by_test_id("admin-password").fill("long enough pass")
        page.get_by_test_id("admin-submit").click()
        expect(page.get_by_test_id("admin-row")).to_have_count(2)

        page.get_by_test_id("logout").click()
        page.get_by_test_id("login-user").fill("ops")
        page.get_by_test_id("login-password").fill("long enough pass")
        page.get_by_test_id("login-submit").click()
        expect(page.get_by_test_id("whoami")).to_have_text("ops")


@pytest.mark.skipif(
    os.environ.get("MSYNC_SCREENSHOTS") != "1",
    reason="set MSYNC_SCREENSHOTS=1 to write docs/console/*.png",
)
class ScreenshotTests(ConsoleCase):
    """The pictures in docs/console.md, made from a real run."""

    def shoot(self, name: str, page: Page | None = None) -> None:
        """Save the whole page as docs/console/NAME.png."""
        page = page or self.page
        # Nothing blinks: the caret and hover states stay out.
        page.mouse.move(0, 0)
        page.locator(":focus").evaluate_all(
            "nodes => nodes.forEach(n => n.blur())"
        )
        os.makedirs(SCREENSHOTS, exist_ok=True)
        page.screenshot(
            path=os.path.join(SCREENSHOTS, f"{name}.png"), full_page=True
        )

    def test_screenshots(self) -> None:
        """Every main page, filled with a little real traffic."""
        page = self.open()
        page.get_by_test_id("login-user").fill("admin")
        page.get_by_test_id("login-password").fill("not-the-password")
        page.get_by_test_id("login-submit").click()
        expect(page.get_by_test_id("login-error")).to_be_visible()
        self.shoot("login")

        self.log_in()
        self.add_config("DEVICE-LOCK")
        self.add_config("UCHAT", target="user")
        self.add_config(
            "FEED", target="user", resend_mode="threshold", threshold="20"
        )
        self.add_config("NOTICE", range="global")
        self.open("configs/FEED")
        page.get_by_test_id("config-toggle").click()
        self.confirm()
        expect(page.get_by_test_id("config-state")).to_have_text("offline")
        self.open("configs")
        expect(page.get_by_test_id("config-row")).to_have_count(4)
        self.shoot("configs")

        self.open("configs/new")
        page.get_by_test_id("config-biz").fill("ORDER-STATUS")
        page.get_by_test_id("config-description").fill(
            "Order updates, to the user's latest device"
        )
        page.get_by_test_id("multi_device-no").check()
        page.get_by_test_id("resend_mode-threshold").check()
        page.get_by_test_id("config-threshold").fill("50")
        self.shoot("config-form")

        # More ops than will come: it stays online for the pictures.
        self.device(
            "phone-8f3a", "UCHAT", 99, "--user", "alice", "--session", "s-1"
        )
        self.wait_online("phone-8f3a")
        for text in ("Hello Alice", "Are you there?"):
            self.assertEqual(self.send("UCHAT", "alice", text), "OK")
        self.send("UCHAT", "alice", '{"type": "read", "upTo": 2}')
        self.shoot("send")

        self.open("lookup/user/alice")
        rows = page.get_by_test_id("push-row")
        expect(rows).to_have_count(3)
        for state in rows.get_by_test_id("push-state").all():
            expect(state).to_have_text("acked")
        expect(page.get_by_test_id("lookup-online")).to_have_text("online")
        self.shoot("lookup")

        self.open("access")
        page.get_by_test_id("key-submit").click()
        expect(page.get_by_test_id("new-key")).to_be_visible()
        self.shoot("keys")

        self.open("service")
        expect(page.get_by_test_id("signature-switch")).to_be_checked()
        self.shoot("service")


class MountTests(SynchronousTestCase):
    """The console's files as the real daemon serves them."""

    def test_served_with_security_headers(self) -> None:
        """The page and its assets come from the daemon with their types
        and the security headers; other names under static are 404."""
        daemon = Daemon()
        self.addCleanup(shutil.rmtree, daemon.data_dir, True)
        self.addCleanup(daemon.kill)
        daemon.start()

        def get(path: str) -> Any:
            try:
                return urllib.request.urlopen(
                    daemon.http_url + path, timeout=BOUND
                )
            except urllib.error.HTTPError as e:
                return e

        for path, kind in [
            ("/", "text/html"),
            ("/console/", "text/html"),
            ("/console/static/console.js", "text/javascript"),
            ("/console/static/console.css", "text/css"),
        ]:
            with get(path) as answer:
                self.assertEqual(answer.status, 200, path)
                headers = answer.headers
                self.assertTrue(headers["content-type"].startswith(kind))
                self.assertIn(
                    "default-src 'self'", headers["content-security-policy"]
                )
                self.assertEqual(headers["x-frame-options"], "DENY")
                self.assertEqual(headers["x-content-type-options"], "nosniff")
        for path in [
            "/console/static/pages.py",
            "/console/static/..%2fpages.py",
            "/console/static/index.html",
        ]:
            with get(path) as answer:
                self.assertEqual(answer.status, 404, path)
