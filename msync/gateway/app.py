"""
The backend gateway, C{POST /gateway.do}: read a signed form, check the
caller, hand the op to the L{Sender} and answer with a signed result.

The wire contract is C{GATEWAY-SIGNING.md}.  Checks run in this order,
cheapest and unauthenticated first:

  1. the body fits (413 otherwise, before it is read);
  2. query string and body decode as UTF-8 forms, no name twice;
  3. the system parameters are present;
  4. the access key exists and the signature matches.

Answers to requests refused at those steps are unsigned: the caller is
not known yet.  From then on every answer is signed with the key's
secret:

  5. method and version, C{req_time} within the allowed skew, a fresh
     C{req_msg_id} (remembered, so a replay is refused);
  6. the key may write to C{instance_id}; the business parameters are
     well formed;
  7. the L{Sender}'s outcome, in C{bizResult}.

The rules live in L{msync.gateway.calls}; this module is their Klein
route.  The daemon's HTTP listener answers C{/gateway.do} with the lean
parser of L{msync.gateway.lean} instead, over the same rules.
"""

from __future__ import annotations

from klein import Klein
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource

from msync.delivery.sender import Sender
from msync.gateway.calls import (
    GLOBAL_METHOD,
    INVALID_PARAMETER,
    METHOD,
    SIGNATURE_CHECK,
    SKEW_SECONDS,
    VERSION,
    Call,
    Checks,
    Gateway,
    Intake,
    SeenRequests,
    refused,
    render,
)
from msync.gateway.forms import (
    BodyTooLarge,
    GatewayError,
    decode_form,
    read_body,
)
from msync.store import Store

__all__ = [
    "GLOBAL_METHOD",
    "JSON",
    "MAX_BODY",
    "METHOD",
    "SIGNATURE_CHECK",
    "VERSION",
    "BodyTooLarge",
    "GatewayApp",
    "GatewayError",
    "SeenRequests",
    "decode_form",
    "read_body",
]

#: The default limit on a request body, in bytes.  The largest payload
#: (24 KiB - 1) is 32 KiB of base64, and a form may percent-encode every
#: C{+} and C{/} of it as three characters: up to 96 KiB in the worst
#: case, before the other parameters.
MAX_BODY = 128 * 1024

#: The content type of every answer.
JSON = b"application/json;charset=utf-8"


class GatewayApp:
    """
    The C{/gateway.do} route, over a store (for keys, instances and the
    signature switch), a sender and a clock.
    """

    app = Klein()

    def __init__(
        self,
        store: Store,
        sender: Sender,
        clock: IReactorTime,
        *,
        max_body: int = MAX_BODY,
        skew_seconds: float = SKEW_SECONDS,
        replay_memory: int = 250_000,
    ) -> None:
        """
        @param max_body: The largest request body read, in bytes.
        @param skew_seconds: How far C{req_time} may be from C{clock}.
        @param replay_memory: The most C{req_msg_id}s remembered.
        """
        self.max_body = max_body
        self.intake = Intake(sender, clock, replay_memory)
        self.checks = Checks(store, clock, skew_seconds)
        self.calls = Gateway(self.checks, self.intake.take)
        """The whole call, for any HTTP front end."""

    def resource(self) -> IResource:
        """The route as a resource to mount."""
        resource: IResource = self.app.resource()
        return resource

    @app.route("/gateway.do", methods=["POST"])
    def gateway(self, request: IRequest) -> bytes | Deferred[bytes]:
        """Answer one backend call; the answer is always a JSON body."""
        request.setHeader(b"content-type", JSON)
        request.setHeader(b"cache-control", b"no-store")
        try:
            body = read_body(request, self.max_body)
        except BodyTooLarge as e:
            request.setResponseCode(413)
            return _sized(
                request, render(refused(INVALID_PARAMETER, str(e)), Call())
            )

        _, _, query = request.uri.partition(b"?")
        d = self.calls.answer(
            query,
            body,
            request.getHeader(b"content-type"),
            str(request.getClientAddress()),
        )
        # A length, not chunks: cheaper for every client to read.
        return d.addCallback(_sized_after, request)


def _sized_after(body: bytes, request: IRequest) -> bytes:
    return _sized(request, body)


def _sized(request: IRequest, body: bytes) -> bytes:
    request.setHeader(b"content-length", b"%d" % len(body))
    return body
