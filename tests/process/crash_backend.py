"""
A business backend for the daemon crash test: keep calling the gateway
with signed sends over a few keep-alive connections, and journal every
call that was answered.

Run as C{python crash_backend.py CONTROL JOURNAL SEED}.

It follows the control file (L{crash_world.Control}): it calls the HTTP
port the file names, fires a burst of concurrent calls each time
C{bursts} grows, and once C{stop} is set it makes no new call, waits for
those in flight, prints its counts and exits.

Journal lines, each written with one C{write}:

  - C{sent MSGID} just before a call goes out;
  - C{burst CALLS} once the calls of a burst are on their way;
  - C{ok MSGID OPID CODE} for a call answered with a success code;
  - C{err MSGID CODE} for a call answered with a refusal.

A call that got no answer (the daemon died, the connection broke, the
call timed out) gets no second line: the backend does not know whether
its op was stored, and the test allows both.  Such a message is never
sent again; the next call carries a new message id.
"""

from __future__ import annotations

import random
import sys
from collections import Counter
from collections.abc import Generator
from typing import Any

from crash_world import (
    CONTROL_INTERVAL,
    DEVICE_BIZ,
    DEVICES,
    GLOBAL_BIZ,
    INSTANCE,
    KEY,
    SECRET,
    UNKNOWN_BIZ,
    USER_BIZ,
    USERS,
    append_line,
    message_id,
    open_journal,
    read_control,
)
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.task import LoopingCall, deferLater, react
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool

from msync.gateway.app import GLOBAL_METHOD, METHOD
from msync.gateway.client import GatewayClient, GatewayResult, business_params

#: Calls made one after another, each on its own keep-alive connection.
WORKERS = 4

#: Seconds a worker rests after an answered call: about 100 calls a
#: second in all, a moderate load for a two-core machine.
PACE = 0.04

#: Seconds a worker rests after an unanswered call (the daemon is down).
RETRY_DELAY = 0.1

#: Calls fired at once for each burst the test asks for.
BURST = 80

#: Seconds a call may take before it counts as unanswered.
CALL_TIMEOUT = 20.0

#: What the calls address, with their weights: a device, a user, every
#: device, and two kinds the gateway refuses (a biz type with no config,
#: and a device op whose validity ended before it was sent).
MIX = (
    ("device", 40),
    ("user", 40),
    ("global", 6),
    ("unknown", 7),
    ("expired", 7),
)

#: The gateway's own codes that still mean the op was stored.
SUCCESS = frozenset({"OK", "NOT_ONLINE", "DUPLICATED_BIZ_ID"})


def make_call(rng: random.Random, seq: int) -> tuple[str, str, dict[str, str]]:
    """
    Choose the C{seq}th call.

    @return: its message id, the gateway method and the business
        parameters.
    """
    kinds, weights = zip(*MIX, strict=True)
    kind = rng.choices(kinds, weights)[0]
    expire = ""
    if kind == "user":
        biz, link = USER_BIZ, rng.choice(USERS)
    elif kind == "global":
        biz, link = GLOBAL_BIZ, ""
    elif kind == "unknown":
        biz, link = UNKNOWN_BIZ, rng.choice(DEVICES)
    else:
        biz, link = DEVICE_BIZ, rng.choice(DEVICES)
        if kind == "expired":
            expire = "2000-01-01 00:00:00"
    msg_id = message_id(seq, biz, link)
    business = business_params(
        INSTANCE,
        biz,
        msg_id.encode(),
        msg_id,
        link_token=link,
        expire_date=expire,
    )
    return msg_id, GLOBAL_METHOD if kind == "global" else METHOD, business


class Backend:
    """
    Keeps L{WORKERS} calls going, fires bursts, and journals answers.

    @param control_path: The control file to follow.
    @param journal_fd: An C{O_APPEND} descriptor for the journal.
    """

    def __init__(
        self,
        reactor: Any,
        control_path: str,
        journal_fd: int,
        rng: random.Random,
    ) -> None:
        self._reactor = reactor
        self._control_path = control_path
        self._journal = journal_fd
        self._rng = rng
        self._seq = 0
        self._port = 0
        self._pool: HTTPConnectionPool | None = None
        self._client: GatewayClient | None = None
        # Every burst asked for is owed, even one asked for while this
        # process was still starting.
        self._bursts = 0
        self._stopping = False
        self._in_flight = 0
        self.counts: Counter[str] = Counter()
        self.done: Deferred[None] = Deferred()
        """Fires once asked to stop and no call is in flight."""

    def start(self) -> None:
        """Follow the control file and start the workers."""
        watch = LoopingCall(self._watch)
        watch.clock = self._reactor
        watch.start(CONTROL_INTERVAL).addErrback(self._crashed)
        for _ in range(WORKERS):
            self._work().addErrback(self._crashed)

    def _crashed(self, failure: Failure) -> None:
        # A bug of this program: end it with the reason, loudly.
        if not self.done.called:
            self.done.errback(failure)

    def _watch(self) -> None:
        control = read_control(self._control_path)
        if control.http and control.http != self._port:
            self._connect(control.http)
        if control.bursts > self._bursts:
            calls = BURST * (control.bursts - self._bursts)
            for _ in range(calls):
                self._call()
            self._bursts = control.bursts
            # Said last: once the test reads this line, every call of the
            # burst is on its way.
            append_line(self._journal, "burst", calls)
        if control.stop and not self._stopping:
            self._stopping = True
            self._finish_if_idle()

    def _connect(self, port: int) -> None:
        # The old daemon is dead: forget its connections, and call the
        # new one through a fresh pool.
        if self._pool is not None:
            self._pool.closeCachedConnections()
        self._port = port
        self._pool = HTTPConnectionPool(self._reactor)
        self._pool.maxPersistentPerHost = WORKERS
        # Each call is made once: one the pool retried on a new
        # connection would be a second call the journal knows nothing of.
        self._pool.retryAutomatically = False
        self._client = GatewayClient(
            Agent(self._reactor, pool=self._pool),
            f"http://127.0.0.1:{port}/gateway.do",
            KEY,
            SECRET,
            clock=self._reactor,
            timeout=CALL_TIMEOUT,
        )

    @inlineCallbacks
    def _work(self) -> Generator[Deferred[Any], Any, None]:
        while not self._stopping:
            answered = yield self._call()
            rest = PACE if answered else RETRY_DELAY
            yield deferLater(self._reactor, rest, lambda: None)

    def _call(self) -> Deferred[bool]:
        """
        Make one call with a fresh message id.

        @return: Fires with whether the call was answered.
        """
        if self._client is None or self._stopping:
            return succeed(False)
        self._seq += 1
        msg_id, method, business = make_call(self._rng, self._seq)
        append_line(self._journal, "sent", msg_id)
        self._in_flight += 1
        self.counts["sent"] += 1
        d = self._client.call(method, business)
        d.addCallbacks(
            self._answered,
            self._unanswered,
            callbackArgs=(msg_id,),
        )
        d.addBoth(self._ended)
        return d

    def _answered(self, result: GatewayResult, msg_id: str) -> bool:
        if result.success and result.return_code in SUCCESS:
            append_line(
                self._journal,
                "ok",
                msg_id,
                result.op_log_id,
                result.return_code,
            )
            self.counts["ok"] += 1
        else:
            code = result.return_code or result.result_code
            append_line(self._journal, "err", msg_id, code)
            self.counts["err"] += 1
        return True

    def _unanswered(self, failure: Failure) -> bool:
        self.counts[f"unanswered ({failure.type.__name__})"] += 1
        return False

    def _ended(self, answered: bool) -> bool:
        self._in_flight -= 1
        self._finish_if_idle()
        return answered

    def _finish_if_idle(self) -> None:
        if self._stopping and not self._in_flight and not self.done.called:
            if self._pool is not None:
                self._pool.closeCachedConnections()
            self.done.callback(None)


@inlineCallbacks
def main(
    reactor: Any, control_path: str, journal_path: str, seed: str
) -> Generator[Deferred[Any], Any, None]:
    """Call the gateway until the control file says stop."""
    journal = open_journal(journal_path)
    backend = Backend(reactor, control_path, journal, random.Random(seed))
    backend.start()
    yield backend.done
    for name, count in sorted(backend.counts.items()):
        print(f"{name}: {count}")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(f"usage: {sys.argv[0]} CONTROL JOURNAL SEED")
    react(main, sys.argv[1:])
