"""
Gateway worker processes on loopback: a real C{twistd msync} with
C{--gateway-workers 2}, a backend calling the signed gateway, a device.
"""

from __future__ import annotations

import os
import re
import signal
import time
import uuid
from typing import Any

import pytest
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.web.http_headers import Headers

from msync.auth import hash_password
from msync.console.admin_client import AdminClient
from msync.gateway.app import METHOD
from msync.gateway.client import build_request, business_params, read_result
from msync.store import LMDBEngine, catalog
from msync.testing import BOUND
from tests.process.test_end_to_end import INSTANCE, KEY, SECRET, DaemonCase

pytestmark = pytest.mark.process

_READY = re.compile(r"gateway worker (\d+) accepting \(pid (\d+)\)")


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class GatewayWorkerTests(DaemonCase):
    """The gateway answered by worker processes beside the daemon."""

    http_port = ["--gateway-workers", "2"]

    def seed_more(self, data_dir: str) -> None:
        """An admin, to change keys and settings while workers run."""
        hashed = hash_password("admin-password")
        LMDBEngine.offline(
            data_dir,
            lambda tx: catalog.put_admin(tx, "admin", hashed),
        )

    def worker_pids(self) -> list[int]:
        """The pids of every worker that said it was ready, in order."""
        return [int(pid) for _, pid in _READY.findall(self.daemon.log())]

    def worker_number(self, pid: int) -> str:
        """The number the daemon gave the worker with C{pid}."""
        numbers: dict[int, str] = {
            int(found): n for n, found in _READY.findall(self.daemon.log())
        }
        return numbers[pid]

    @inlineCallbacks
    def until(self, condition: Any, what: str) -> Any:
        """Wait, without blocking the reactor, until C{condition} holds."""
        deadline = time.monotonic() + BOUND
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            yield deferLater(reactor, 0.05, lambda: None)

    def post(self, req_msg_id: str, third: str, secret: str = SECRET) -> Any:
        """One signed call on a fresh connection; its answer's body."""
        business = business_params(
            INSTANCE, "CHAT", b"hi", third, link_token="bob"
        )
        url, body = build_request(
            self.daemon.http_url + "/gateway.do",
            KEY,
            secret,
            METHOD,
            business,
            now=time.time(),
            req_msg_id=req_msg_id,
        )
        d = treq.post(
            url,
            data=body,
            headers=Headers(
                {b"Content-Type": [b"application/x-www-form-urlencoded"]}
            ),
            persistent=False,
        )
        return d.addCallback(treq.content)

    @inlineCallbacks
    def test_signed_call_durable_and_pushed(self) -> Any:
        """With both workers ready and the daemon no longer accepting, a
        signed call is answered OK with a signed answer, and the op
        reaches the online device."""
        self.assertEqual(len(self.worker_pids()), 2)
        client, inbox = self.device()
        yield self.connect(client)
        result = yield self.send("LOCK", client.device_id, b"via worker")
        self.assertEqual(
            (result.result_code, result.return_code), ("OK", "OK")
        )
        yield inbox.count(1)
        self.assertEqual(inbox.messages[0].payload, b"via worker")
        self.assertEqual(str(inbox.messages[0].op_id), result.op_log_id)

    @inlineCallbacks
    def calls(self, n: int, secret: str = SECRET) -> Any:
        """C{n} calls on fresh connections, signed with C{secret}; their
        result codes."""
        codes = []
        for _ in range(n):
            req_msg_id = uuid.uuid4().hex
            body = yield self.post(req_msg_id, uuid.uuid4().hex, secret)
            codes.append(read_result(body, SECRET, req_msg_id).result_code)
        return codes

    @inlineCallbacks
    def answered(self, code: str, secret: str = SECRET) -> Any:
        """
        Call until a call is answered C{code}, then check that the next
        ones are too: the daemon's word crosses the link as the console
        answers, so the first call after may still be read by a worker
        that has not heard it yet; none after it may.
        """
        deadline = time.monotonic() + BOUND
        while (yield self.calls(1, secret)) != [code]:
            if time.monotonic() > deadline:
                raise AssertionError(f"no call answered {code}")
            yield deferLater(reactor, 0.05, lambda: None)
        self.assertEqual((yield self.calls(6, secret)), [code] * 6)

    @inlineCallbacks
    def test_catalog_changes_reach_workers(self) -> Any:
        """Workers remember keys and settings they read, and forget them
        when the daemon changes them: turning signature checks off is
        obeyed, and a revoked key is refused, by every worker."""
        self.assertEqual((yield self.calls(6)), ["OK"] * 6)
        self.assertEqual((yield self.calls(1, "wrong")), ["INVALID_SIGNATURE"])
        admin = AdminClient(self.http, self.daemon.http_url, clock=reactor)
        yield Deferred.fromCoroutine(admin.login("admin", "admin-password"))
        yield Deferred.fromCoroutine(
            admin.call("PATCH", "/settings", {"signature_check": False})
        )
        yield self.answered("OK", "wrong")
        yield Deferred.fromCoroutine(admin.call("POST", f"/keys/{KEY}/revoke"))
        yield self.answered("ACCESS_DENIED")

    @inlineCallbacks
    def test_replay_refused_across_connections(self) -> Any:
        """A req_msg_id seen once is refused the second time, whichever
        worker reads it: the replay memory is the daemon's."""
        req_msg_id = uuid.uuid4().hex
        first = yield self.post(req_msg_id, "t-1")
        self.assertEqual(
            read_result(first, SECRET, req_msg_id).result_code, "OK"
        )
        again = yield self.post(req_msg_id, "t-2")
        replay = read_result(again, SECRET, req_msg_id)
        self.assertEqual(
            (replay.result_code, replay.result_msg),
            ("INVALID_PARAMETER", "replayed req_msg_id"),
        )

    @inlineCallbacks
    def test_other_routes_handed_to_daemon(self) -> Any:
        """Health, metrics and a refused method on the gateway path are
        served, through the workers, by the daemon's twisted.web."""
        health = yield treq.get(
            self.daemon.http_url + "/healthz", persistent=False
        )
        self.assertEqual(health.code, 200)
        self.assertEqual((yield health.json())["status"], "ok")
        metrics = yield treq.get(
            self.daemon.http_url + "/metrics", persistent=False
        )
        self.assertIn(b"msync_ops_pushed_total", (yield treq.content(metrics)))
        wrong = yield treq.get(
            self.daemon.http_url + "/gateway.do", persistent=False
        )
        self.assertEqual(wrong.code, 405)
        yield treq.content(wrong)

    @inlineCallbacks
    def test_killed_worker_restarted(self) -> Any:
        """A worker killed is started again, and calls keep working."""
        first, second = self.worker_pids()
        os.kill(first, signal.SIGKILL)
        yield self.until(lambda: len(self.worker_pids()) == 3, "a new worker")
        self.assertNotIn(self.worker_pids()[-1], (first, second))
        self.assertIn(
            f"gateway worker {self.worker_number(first)} ended",
            self.daemon.log(),
        )
        for _ in range(4):
            result = yield self.send("CHAT", "carol", b"still")
            self.assertEqual(result.result_code, "OK")

    @inlineCallbacks
    def test_stop_stops_workers(self) -> Any:
        """Stopping the daemon stops its workers."""
        pids = self.worker_pids()
        self.assertTrue(all(alive(pid) for pid in pids))
        self.daemon.terminate()
        yield self.until(
            lambda: not any(alive(pid) for pid in pids), "workers to end"
        )

    @inlineCallbacks
    def test_killed_daemon_leaves_no_worker(self) -> Any:
        """A daemon killed outright takes its workers with it: each sees
        its link close and exits."""
        pids = self.worker_pids()
        self.daemon.kill()
        yield self.until(
            lambda: not any(alive(pid) for pid in pids), "workers to end"
        )
