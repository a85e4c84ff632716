"""
C{msync admin} against the real L{msync.console.api.ConsoleApi}, in
memory through C{StubTreq}: arguments, output, exit statuses.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import tempfile
from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import Deferred, ensureDeferred, fail
from twisted.internet.error import ConnectionRefusedError
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from msync import cli
from msync.console.admin_cli import admin
from msync.model import ConfigState, Range, ResendMode, Target
from tests.delivery_world import INSTANCE
from tests.test_console_api import PASSWORD, Console

URL = "http://console.test"


class Refusing:
    """An HTTP client whose every connection is refused."""

    def request(self, *args: Any, **kw: Any) -> Deferred[Any]:
        return fail(ConnectionRefusedError("no one listens"))


class NotTheApi(Resource):
    """A proxy's error page where the API should be."""

    isLeaf = True

    def render(self, request: Any) -> bytes:
        request.setResponseCode(502)
        request.setHeader(b"content-type", b"text/html")
        return b"<html>bad gateway</html>"


class CliCase(SynchronousTestCase):
    """The admin CLI over a console with one admin."""

    def setUp(self) -> None:
        self.c = Console(self)
        self.world = self.c.world
        self.store = self.world.store

    def admin(
        self,
        *argv: str,
        login: tuple[str, ...] = ("--user", "admin", "--password", PASSWORD),
        http: Any = None,
        environ: dict[str, str] | None = None,
    ) -> tuple[int, str, str]:
        """Run C{msync admin}; return its status, output and errors."""
        args = cli.parser().parse_args(["admin", "--url", URL, *login, *argv])
        out, err = io.StringIO(), io.StringIO()
        status = self.successResultOf(
            ensureDeferred(
                admin(
                    args,
                    StubTreq(self.c.root) if http is None else http,
                    self.world.clock,
                    out=out,
                    err=err,
                    environ={} if environ is None else environ,
                )
            )
        )
        return status, out.getvalue(), err.getvalue()

    def ok(self, *argv: str, **kw: Any) -> str:
        """Run a command that must succeed; return its output."""
        status, out, err = self.admin(*argv, **kw)
        self.assertEqual((status, err), (0, ""), out)
        return out

    def usage_error(self, *argv: str) -> str:
        """Parse a command line argparse must refuse; return its words."""
        err = io.StringIO()
        with (
            contextlib.redirect_stderr(err),
            self.assertRaises(SystemExit) as caught,
        ):
            cli.parser().parse_args(["admin", "--token", "t", *argv])
        self.assertEqual(caught.exception.code, 2)
        return err.getvalue()


class ConfigCommandTests(CliCase):
    """C{msync admin config ...}."""

    def test_add_user_config(self) -> None:
        """config add reads the console form's choices as flags."""
        out = self.ok(
            "config",
            "add",
            "--instance",
            INSTANCE,
            "--biz",
            "UCHAT",
            "--target",
            "user",
            "--range",
            "specified",
            "--multi-device",
            "--persistent",
            "--resend",
            "threshold",
            "--threshold",
            "100",
            "--consistency",
        )
        config = self.store.config(INSTANCE, "UCHAT")
        assert config is not None
        self.assertEqual(
            (
                config.target,
                config.range,
                config.multi_device,
                config.persistent,
                config.resend_mode,
                config.threshold,
                config.consistency,
            ),
            (
                Target.USER,
                Range.SPECIFIED,
                True,
                True,
                ResendMode.THRESHOLD,
                100,
                True,
            ),
        )
        lines = out.splitlines()
        self.assertIn("biz type:     UCHAT", lines)
        self.assertIn("resend mode:  threshold", lines)
        self.assertIn("consistency:  yes", lines)
        self.assertIn("state:        online", lines)

    def test_add_device_config(self) -> None:
        """The opposite flags and a description are read too."""
        self.ok(
            "config",
            "add",
            "--instance",
            INSTANCE,
            "--biz",
            "DEVICE-LOCK",
            "--target",
            "device",
            "--range",
            "global",
            "--no-persistent",
            "--resend",
            "all",
            "--description",
            "lock the device",
        )
        config = self.store.config(INSTANCE, "DEVICE-LOCK")
        assert config is not None
        self.assertEqual(
            (
                config.target,
                config.range,
                config.persistent,
                config.resend_mode,
                config.description,
            ),
            (
                Target.DEVICE,
                Range.GLOBAL,
                False,
                ResendMode.ALL,
                "lock the device",
            ),
        )

    def test_single_device(self) -> None:
        """--single-device asks for a single-device user config."""
        self.ok(
            "config",
            *("add", "--instance", INSTANCE, "--biz", "ONE"),
            *("--target", "user", "--single-device"),
        )
        config = self.store.config(INSTANCE, "ONE")
        assert config is not None
        self.assertIs(config.multi_device, False)

    def test_refused(self) -> None:
        """A refused config exits 1 with the reason and field on stderr."""
        status, out, err = self.admin(
            "config",
            *("add", "--instance", INSTANCE, "--biz", "X"),
            *("--target", "user", "--threshold", "0"),
        )
        self.assertEqual((status, out), (1, ""))
        self.assertTrue(
            err.startswith("msync admin: refused: 400 invalid (threshold): ")
        )

    def test_list_show_set_offline_online(self) -> None:
        """The other config actions print what the API answered."""
        self.ok(
            "config",
            *("add", "--instance", INSTANCE, "--biz", "UCHAT"),
            *("--target", "user"),
        )
        where = ("--instance", INSTANCE, "--biz", "UCHAT")
        table = self.ok("config", "list", "--instance", INSTANCE)
        header, row = table.splitlines()
        self.assertTrue(header.startswith("BIZ TYPE  STATE   RANGE"))
        self.assertTrue(row.startswith("UCHAT     online  specified"))
        self.assertEqual(header.index("STATE"), row.index("online"))

        out = self.ok("config", "set", *where, "--description", "chat")
        self.assertIn("description:  chat", out.splitlines())
        out = self.ok("config", "offline", *where)
        self.assertIn("state:        offline", out.splitlines())
        config = self.store.config(INSTANCE, "UCHAT")
        assert config is not None
        self.assertIs(config.state, ConfigState.OFFLINE)
        out = self.ok("config", "online", *where)
        self.assertIn("state:        online", out.splitlines())
        self.assertIn("description:  chat", self.ok("config", "show", *where))

    def test_json(self) -> None:
        """--json prints the API's JSON as it came."""
        self.c.login()
        self.c.make_config()
        out = self.ok(
            "--json",
            "config",
            "show",
            "--instance",
            INSTANCE,
            "--biz",
            "UCHAT",
        )
        expected = self.c.get(f"/instances/{INSTANCE}/configs/UCHAT").body
        self.assertEqual(json.loads(out), expected)

    def test_set_needs_a_change(self) -> None:
        """config set with nothing to change is a usage error (2)."""
        status, out, err = self.admin(
            "config", "set", "--instance", INSTANCE, "--biz", "UCHAT"
        )
        self.assertEqual((status, out), (2, ""))
        self.assertIn("say what to change", err)

    def test_unknown_config(self) -> None:
        """An unknown config exits 1 with the API's 404."""
        status, _, err = self.admin(
            "config", "show", "--instance", INSTANCE, "--biz", "NONE"
        )
        self.assertEqual(status, 1)
        self.assertIn("404 not_found", err)

    def test_usage_errors(self) -> None:
        """Missing or clashing options are refused by the parser."""
        self.usage_error("config", "add", "--instance", INSTANCE, "--biz", "X")
        self.usage_error(
            "config",
            *("add", "--instance", INSTANCE, "--biz", "X", "--target", "user"),
            *("--multi-device", "--single-device"),
        )
        self.usage_error(
            "config",
            *(
                "add",
                "--instance",
                INSTANCE,
                "--biz",
                "X",
                "--target",
                "group",
            ),
        )
        self.usage_error("config", "list")
        self.usage_error("config")


class SendCommandTests(CliCase):
    """C{msync admin send} and C{msync admin lookup}."""

    def setUp(self) -> None:
        super().setUp()
        self.c.login()
        self.c.make_config()
        self.device = self.world.device("d1").connect(user="u1", session="s")

    def send(self, *argv: str) -> tuple[int, str, str]:
        return self.admin(
            *("send", "--instance", INSTANCE, "--biz", "UCHAT"), *argv
        )

    def test_send_text(self) -> None:
        """A send prints the sender's result and the device gets it."""
        status, out, err = self.send(
            *("--link-token", "u1", "--payload", "hello"),
            *("--third-msg-id", "m1"),
        )
        self.assertEqual((status, err), (0, ""))
        lines = out.splitlines()
        self.assertIn("code:    OK", lines)
        self.assertIn("success: yes", lines)
        self.assertEqual(self.device.link.payloads(), [b"hello"])

    def test_send_bytes(self) -> None:
        """--payload-base64 and --payload-file send bytes as they are."""
        data = bytes(range(7))
        self.send(
            *("--link-token", "u1", "--third-msg-id", "m1"),
            *("--payload-base64", base64.b64encode(data).decode()),
        )
        with tempfile.NamedTemporaryFile(delete=False) as f:
            f.write(b"\xff\x00file")
        self.addCleanup(os.unlink, f.name)
        self.send(
            *("--link-token", "u1", "--third-msg-id", "m2"),
            *("--payload-file", f.name),
        )
        self.assertEqual(self.device.link.payloads(), [data, b"\xff\x00file"])

    def test_send_refused_by_business(self) -> None:
        """A business refusal prints the result and exits 1."""
        status, out, _ = self.send(
            "--global", "--payload", "x", "--third-msg-id", "m1"
        )
        self.assertEqual(status, 1)
        self.assertIn("code:    NOT_SUPPORT_GLOBAL", out.splitlines())
        self.assertIn("success: no", out.splitlines())

    def test_send_json(self) -> None:
        """--json prints the send's JSON result."""
        status, out, _ = self.admin(
            "--json",
            *("send", "--instance", INSTANCE, "--biz", "UCHAT"),
            *("--link-token", "u1", "--payload", "x", "--third-msg-id", "m1"),
            *("--os", "ANDROID", "--app-min-version", "1.0"),
        )
        self.assertEqual(status, 0)
        result = json.loads(out)
        self.assertEqual(set(result), {"code", "success", "op_id", "reason"})
        self.assertEqual(result["code"], "OK")

    def test_send_bad_date(self) -> None:
        """A malformed date is refused by the API: exit 1, field named."""
        status, _, err = self.send(
            *("--link-token", "u1", "--payload", "x", "--third-msg-id", "m"),
            *("--start-date", "soon"),
        )
        self.assertEqual(status, 1)
        self.assertIn("400 invalid (start_date)", err)

    def test_send_usage(self) -> None:
        """A send needs one target and one payload, and a third_msg_id."""
        base = ("send", "--instance", INSTANCE, "--biz", "UCHAT")
        self.usage_error(*base, "--payload", "x", "--third-msg-id", "m")
        self.usage_error(
            *base,
            *("--global", "--link-token", "u1", "--payload", "x"),
            *("--third-msg-id", "m"),
        )
        self.usage_error(*base, "--link-token", "u1", "--third-msg-id", "m")
        self.usage_error(*base, "--link-token", "u1", "--payload", "x")

    def test_lookup_device(self) -> None:
        """lookup --device prints the device, its days and its pushes."""
        self.send(
            *("--link-token", "u1", "--payload", "a", "--third-msg-id", "m1")
        )
        self.device.ack_all()
        self.send(
            *("--link-token", "u1", "--payload", "b", "--third-msg-id", "m2")
        )
        out = self.ok("lookup", "--instance", INSTANCE, "--device", "d1")
        lines = out.splitlines()
        self.assertIn("device:      d1", lines)
        self.assertIn("user:        u1", lines)
        self.assertIn("online:      yes", lines)
        pushes = lines[lines.index("recent pushes:") + 1 :]
        self.assertTrue(pushes[0].startswith("OP "))
        self.assertEqual(
            [row.split()[3] for row in pushes[1:]], ["pushed", "acked"]
        )
        self.assertIn("m2", pushes[1])

    def test_lookup_user(self) -> None:
        """lookup --user prints the user's devices and pushes."""
        self.send(
            *("--link-token", "u1", "--payload", "a", "--third-msg-id", "m1")
        )
        out = self.ok("lookup", "--instance", INSTANCE, "--user", "u1")
        lines = out.splitlines()
        self.assertIn("user:   u1", lines)
        devices = lines[lines.index("devices:") + 1 :]
        self.assertTrue(devices[1].startswith("d1      yes"))
        pushes = lines[lines.index("recent pushes:") + 1 :]
        self.assertEqual(pushes[1].split()[1], "d1")

    def test_lookup_json(self) -> None:
        """lookup --json prints the device's JSON."""
        out = self.ok(
            "--json", "lookup", "--instance", INSTANCE, "--device", "d1"
        )
        self.assertEqual(json.loads(out)["device_id"], "d1")

    def test_lookup_unknown(self) -> None:
        """An unknown device exits 1 with the API's 404."""
        status, _, err = self.admin(
            "lookup", "--instance", INSTANCE, "--device", "ghost"
        )
        self.assertEqual(status, 1)
        self.assertIn("404 not_found", err)

    def test_lookup_needs_one_target(self) -> None:
        """lookup takes --user or --device, not both, not neither."""
        self.usage_error("lookup", "--instance", INSTANCE)
        self.usage_error(
            "lookup", "--instance", INSTANCE, "--user", "u", "--device", "d"
        )


class ServiceCommandTests(CliCase):
    """Instances, keys, the signature switch, tokens and admins."""

    def test_signature(self) -> None:
        """signature on/off switches the check; show says where it is."""
        self.assertEqual(self.ok("signature", "show"), "signature check: on\n")
        self.assertEqual(self.ok("signature", "off"), "signature check: off\n")
        self.assertIs(self.store.setting("signature_check", True), False)
        self.assertEqual(
            self.ok("signature", "show"), "signature check: off\n"
        )
        self.assertEqual(self.ok("signature", "on"), "signature check: on\n")
        self.assertIs(self.store.setting("signature_check", True), True)

    def test_instance_add(self) -> None:
        """instance add creates an instance and prints it."""
        out = self.ok(
            "instance", "add", "WS_new", "--time-zone", "Asia/Shanghai"
        )
        lines = out.splitlines()
        self.assertIn("instance:       WS_new", lines)
        self.assertIn("time zone:      Asia/Shanghai", lines)
        self.assertIn("app key set:    no", lines)
        instance = self.store.instance("WS_new")
        assert instance is not None
        self.assertEqual(instance.time_zone, "Asia/Shanghai")

    def test_instance_add_exists(self) -> None:
        """Adding an instance that exists exits 1 with the 409."""
        status, _, err = self.admin("instance", "add", INSTANCE)
        self.assertEqual(status, 1)
        self.assertIn("409 exists", err)

    def test_instance_list_show_set(self) -> None:
        """instance list, show and set print what the API answered."""
        self.ok("instance", "add", "WS_new")
        header, *rows = self.ok("instance", "list").splitlines()
        self.assertTrue(header.startswith("INSTANCE  TIME ZONE"))
        self.assertEqual([r.split()[0] for r in rows], ["WS_app", "WS_new"])
        out = self.ok("instance", "set", "WS_new", "--app-key", "k")
        self.assertIn("app key set:    yes", out.splitlines())
        self.assertNotIn(" k\n", out)
        out = self.ok("instance", "set", "WS_new", "--clear-app-key")
        self.assertIn("app key set:    no", out.splitlines())
        self.assertIn(
            "instance:       WS_new", self.ok("instance", "show", "WS_new")
        )

    def test_key_add(self) -> None:
        """key add prints the new key and its secret, once."""
        self.ok("instance", "add", "WS_two")
        status, out, err = self.admin(
            "key", "add", "--instance", INSTANCE, "--instance", "WS_two"
        )
        self.assertEqual(status, 0)
        self.assertIn("shown only this once", err)
        fields = dict(line.split(":", 1) for line in out.splitlines())
        access_key, secret = (
            fields["access key"].strip(),
            fields["secret"].strip(),
        )
        stored = self.store.access_key(access_key)
        assert stored is not None
        self.assertEqual(stored.secret, secret)
        self.assertEqual(fields["instances"].strip(), f"{INSTANCE}, WS_two")

        listed = self.ok("key", "list")
        self.assertIn(access_key, listed)
        self.assertNotIn(secret, listed)
        out = self.ok("key", "revoke", access_key)
        self.assertIn("revoked:    yes", out.splitlines())

    def test_key_add_needs_an_instance(self) -> None:
        """key add without --instance is a usage error."""
        self.usage_error("key", "add")

    def test_token(self) -> None:
        """token add prints a token that later commands can use, until it
        is revoked."""
        status, out, err = self.admin("token", "add")
        self.assertEqual(status, 0)
        self.assertIn("shown only this once", err)
        fields = dict(line.split(": ", 1) for line in out.splitlines())
        token, token_id = fields["token"].strip(), fields["id"].strip()
        self.ok("signature", "off", login=("--token", token))
        out = self.ok("token", "revoke", token_id, login=("--token", token))
        self.assertIn(token_id, out)
        status, _, err = self.admin(
            "signature", "show", login=("--token", token)
        )
        self.assertEqual(status, 1)
        self.assertIn("401 unauthenticated", err)

    def test_admin_add(self) -> None:
        """admin add makes a login that works."""
        out = self.ok(
            "admin",
            *("add", "--new-user", "ops", "--new-password", "ops-password"),
        )
        self.assertEqual(out, "admin added: ops\n")
        self.assertEqual(self.ok("admin", "list"), "ADMIN\nadmin\nops\n")
        self.ok(
            "signature",
            "show",
            login=("--user", "ops", "--password", "ops-password"),
        )

    def test_admin_add_short_password(self) -> None:
        """A short password is refused by the API: exit 1."""
        status, _, err = self.admin(
            "admin", "add", "--new-user", "ops", "--new-password", "short"
        )
        self.assertEqual(status, 1)
        self.assertIn("400 invalid (password)", err)


class LoginCommandTests(CliCase):
    """Credentials, the connection, and what goes wrong with them."""

    def test_wrong_password(self) -> None:
        """A wrong password exits 1 with the API's refusal."""
        status, out, err = self.admin(
            "signature", "show", login=("--user", "admin", "--password", "x")
        )
        self.assertEqual((status, out), (1, ""))
        self.assertIn("401 unauthenticated", err)

    def test_password_from_environment(self) -> None:
        """The password may come from MSYNC_ADMIN_PASSWORD."""
        self.ok(
            "signature",
            "show",
            login=("--user", "admin"),
            environ={"MSYNC_ADMIN_PASSWORD": PASSWORD},
        )

    def test_token_from_environment(self) -> None:
        """The token may come from MSYNC_ADMIN_TOKEN."""
        self.c.login()
        token = self.c.post("/tokens").body["token"]
        self.ok(
            "signature",
            "show",
            login=(),
            environ={"MSYNC_ADMIN_TOKEN": token},
        )

    def test_credentials_usage(self) -> None:
        """No credentials, both kinds, or a user without a password are
        usage errors (2)."""
        for login in [
            (),
            ("--user", "admin"),
            ("--token", "t", "--user", "admin", "--password", "p"),
        ]:
            status, out, err = self.admin("signature", "show", login=login)
            self.assertEqual((status, out), (2, ""), login)
            self.assertTrue(err.startswith("msync admin: "), err)

    def test_bad_url(self) -> None:
        """A URL that is not http(s) is a usage error (2)."""
        args = cli.parser().parse_args(
            ["admin", "--url", "ftp://x", "--token", "t", "signature", "show"]
        )
        err = io.StringIO()
        status = self.successResultOf(
            ensureDeferred(
                admin(
                    args,
                    StubTreq(self.c.root),
                    self.world.clock,
                    out=io.StringIO(),
                    err=err,
                    environ={},
                )
            )
        )
        self.assertEqual(status, 2)
        self.assertIn("not an http(s) URL", err.getvalue())

    def test_unreachable(self) -> None:
        """A daemon that cannot be reached exits 2."""
        status, out, err = self.admin("signature", "show", http=Refusing())
        self.assertEqual((status, out), (2, ""))
        self.assertIn(f"cannot reach {URL}", err)

    def test_not_the_api(self) -> None:
        """An answer that is not the API's JSON exits 1."""
        root = Resource()
        root.putChild(b"api", NotTheApi())
        status, _, err = self.admin("signature", "show", http=StubTreq(root))
        self.assertEqual(status, 1)
        self.assertIn("not JSON", err)

    def test_url_with_api_suffix(self) -> None:
        """A URL ending in /api/ reaches the same routes."""
        args = cli.parser().parse_args(
            [
                *("admin", "--url", URL + "/api/", "--user", "admin"),
                *("--password", PASSWORD, "signature", "show"),
            ]
        )
        out = io.StringIO()
        status = self.successResultOf(
            ensureDeferred(
                admin(
                    args,
                    StubTreq(self.c.root),
                    self.world.clock,
                    out=out,
                    err=io.StringIO(),
                    environ={},
                )
            )
        )
        self.assertEqual(
            (status, out.getvalue()), (0, "signature check: on\n")
        )

    def test_groups_need_an_action(self) -> None:
        """Each group needs an action."""
        for group in ["instance", "key", "config", "token", "admin"]:
            self.usage_error(group)
        self.usage_error("signature", "maybe")
