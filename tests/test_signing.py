"""
The gateway's signatures (GATEWAY-SIGNING.md sections 2 and 3): the
canonical string, request and answer signatures, and the guard that
keeps C{"sign"} out of an answer's signed text.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qsl, quote, unquote

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from msync.gateway import signing

# The worked example of GATEWAY-SIGNING.md section 4, as sent.
EXAMPLE_QUERY = (
    "method=mpaas.msync.sync.syncdata&version=1.0&sign_type=HmacSHA1"
    "&req_time=2017-04-01T04%3A00%3A00Z"
    "&req_msg_id=0123456789abcdef0123456789abcdef"
    "&access_key=ACCESS_KEY_EXAMPLE&base_sdk_version=TeaSDK-2.0"
    "&sdk_version=1.2.10&_prod_code=MPAASFACEVERIFY"
    "&_prod_channel=undefined&sign=KJF%2Bo5HIAGyuCDofnZrnBWidWJ8%3D"
)
EXAMPLE_BODY = (
    "biz_type=UCHAT&expire_date=2017-04-02+12%3A00%3A00"
    "&immediate_sync=true&instance_id=ONEX123456789-default"
    "&link_token=user+01&os_type=ANDROID"
    "&payload=aGVsbG8sIOS4lueVjA%3D%3D"
    "&start_date=2017-04-01+12%3A00%3A00&third_msg_id=msg~001%2A"
)
EXAMPLE_CANONICAL = (
    "_prod_channel=undefined&_prod_code=MPAASFACEVERIFY"
    "&access_key=ACCESS_KEY_EXAMPLE&base_sdk_version=TeaSDK-2.0"
    "&biz_type=UCHAT&expire_date=2017-04-02%2012%3A00%3A00"
    "&immediate_sync=true&instance_id=ONEX123456789-default"
    "&link_token=user%2001&method=mpaas.msync.sync.syncdata"
    "&os_type=ANDROID&payload=aGVsbG8sIOS4lueVjA%3D%3D"
    "&req_msg_id=0123456789abcdef0123456789abcdef"
    "&req_time=2017-04-01T04%3A00%3A00Z&sdk_version=1.2.10"
    "&sign_type=HmacSHA1&start_date=2017-04-01%2012%3A00%3A00"
    "&third_msg_id=msg~001%2A&version=1.0"
)
EXAMPLE_ANSWER = (
    '{"response":{"result_code":"OK","result_msg":"SUCCESS",'
    '"req_msg_id":"0123456789abcdef0123456789abcdef",'
    '"bizResult":{"success":"true","returnCode":"SUCCESS",'
    '"returnReason":"","opLogId":"op-0001"}},'
    '"sign":"wiOnP9AGQcyBoW5gL36iPTxETJ8="}'
)


def example_params() -> dict[str, str]:
    return dict(parse_qsl(EXAMPLE_QUERY) + parse_qsl(EXAMPLE_BODY))


# Text rich in the characters that matter to the "sign" guard.
tricky_text = st.text(alphabet=st.sampled_from('sign"\\ab,:{}'), max_size=20)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text() | tricky_text,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text() | tricky_text, inner, max_size=4)
    ),
    max_leaves=12,
)


class PercentEncodingTests(SynchronousTestCase):
    """The RFC 3986 encoder of the canonical string."""

    def test_documented_examples(self) -> None:
        """Space, C{*}, C{/}, C{+}, C{=} and C{é} encode as the contract
        lists, in upper-case hex, and the unreserved characters stay."""
        self.assertEqual(signing.percent_encode(" "), "%20")
        self.assertEqual(signing.percent_encode("*"), "%2A")
        self.assertEqual(signing.percent_encode("/"), "%2F")
        self.assertEqual(signing.percent_encode("+"), "%2B")
        self.assertEqual(signing.percent_encode("="), "%3D")
        self.assertEqual(signing.percent_encode("é"), "%C3%A9")
        self.assertEqual(signing.percent_encode("aZ09-_.~"), "aZ09-_.~")

    @given(st.text())
    def test_matches_urllib_quote(self, text: str) -> None:
        """Any text encodes exactly as C{quote(s, safe="-_.~")} does."""
        self.assertEqual(
            signing.percent_encode(text), quote(text, safe="-_.~")
        )

    @given(st.text())
    def test_round_trips(self, text: str) -> None:
        """Decoding the encoding gives back the text, and the encoding
        uses only unreserved characters and C{%}."""
        encoded = signing.percent_encode(text)
        self.assertEqual(unquote(encoded, errors="strict"), text)
        self.assertEqual(quote(encoded, safe="-_.~%"), encoded)


class RequestSignatureTests(SynchronousTestCase):
    """Signing and verifying a request's parameters."""

    def test_vector(self) -> None:
        """C{{test: ok}} with secret C{secret} signs as the contract
        says, with SHA-1 by default."""
        self.assertEqual(signing.canonical({"test": "ok"}), "test=ok")
        self.assertEqual(
            signing.sign({"test": "ok"}, "secret"),
            "qlB4B1lFcehlWRelL7Fo4uNHPCs=",
        )

    def test_vector_sha256(self) -> None:
        """C{HmacSHA256} is the same scheme with SHA-256 (value computed
        independently with openssl)."""
        self.assertEqual(
            signing.sign({"test": "ok"}, "secret", "HmacSHA256"),
            "iSc6AX1OG2jLV7FubAgzUSXbwOizCcFJ1Bd1XFE5U1k=",
        )

    def test_worked_example(self) -> None:
        """The worked example's parameters give its string to sign and
        its sign, which verifies."""
        params = example_params()
        self.assertEqual(signing.canonical(params), EXAMPLE_CANONICAL)
        self.assertEqual(
            signing.sign(params, "SECRET_EXAMPLE"),
            "KJF+o5HIAGyuCDofnZrnBWidWJ8=",
        )
        self.assertTrue(
            signing.verify(params, "SECRET_EXAMPLE", params["sign"])
        )

    def test_sign_left_out(self) -> None:
        """The C{sign} parameter is not part of the string it signs."""
        self.assertEqual(
            signing.canonical({"a": "1", "sign": "x", "b": ""}), "a=1&b="
        )

    def test_empty_value(self) -> None:
        """An empty value is written as C{name=}."""
        self.assertEqual(signing.canonical({"n": ""}), "n=")

    def test_code_point_order(self) -> None:
        """Names sort by code point: upper case, C{_}, lower case, then
        non-ASCII."""
        params = {"é": "1", "b": "2", "_a": "3", "B": "4", "a": "5"}
        self.assertEqual(
            signing.canonical(params), "B=4&_a=3&a=5&b=2&%C3%A9=1"
        )

    def test_names_are_encoded(self) -> None:
        """Names are percent-encoded like values."""
        self.assertEqual(signing.canonical({"a b": "c d"}), "a%20b=c%20d")

    def test_verify_refuses(self) -> None:
        """A wrong secret, a changed value, another algorithm, an empty
        or a non-ASCII sign do not verify."""
        params = example_params()
        good = params["sign"]
        self.assertFalse(signing.verify(params, "other", good))
        self.assertFalse(
            signing.verify({**params, "biz_type": "X"}, "SECRET_EXAMPLE", good)
        )
        self.assertFalse(
            signing.verify(params, "SECRET_EXAMPLE", good, "HmacSHA256")
        )
        self.assertFalse(signing.verify(params, "SECRET_EXAMPLE", ""))
        self.assertFalse(signing.verify(params, "SECRET_EXAMPLE", "é" * 28))

    def test_unknown_algorithm(self) -> None:
        """An algorithm other than the two known is an error."""
        self.assertRaises(
            signing.UnknownAlgorithm, signing.sign, {}, "s", "HmacMD5"
        )

    @given(
        st.dictionaries(st.text(), st.text(), max_size=6),
        st.text(),
        st.sampled_from(sorted(signing.ALGORITHMS)),
    )
    def test_sign_then_verify(
        self, params: dict[str, str], secret: str, algorithm: str
    ) -> None:
        """Any parameters signed with a secret verify with it."""
        s = signing.sign(params, secret, algorithm)
        self.assertTrue(
            signing.verify({**params, "sign": s}, secret, s, algorithm)
        )

    @given(st.dictionaries(st.text(min_size=1), st.text(), max_size=6))
    def test_canonical_decodes_back(self, params: dict[str, str]) -> None:
        """The canonical string holds every parameter but C{sign}, each
        recoverable by percent-decoding."""
        params.pop("sign", None)
        text = signing.canonical(params)
        pairs = [p.split("=") for p in text.split("&")] if params else []
        decoded = {unquote(n): unquote(v) for n, v in pairs}
        self.assertEqual(decoded, params)


class AnswerTests(SynchronousTestCase):
    """Signed answers."""

    def test_worked_example(self) -> None:
        """The worked example's answer signs as the contract says, and
        reads back with that text and sign."""
        response, text, sign = signing.read_answer(EXAMPLE_ANSWER.encode())
        self.assertEqual(
            signing.sign_response(text, "SECRET_EXAMPLE"),
            "wiOnP9AGQcyBoW5gL36iPTxETJ8=",
        )
        self.assertEqual(sign, "wiOnP9AGQcyBoW5gL36iPTxETJ8=")
        self.assertEqual(response["bizResult"]["opLogId"], "op-0001")
        self.assertEqual(
            signing.seal_answer(response, "SECRET_EXAMPLE"),
            EXAMPLE_ANSWER.encode(),
        )

    def test_unsigned(self) -> None:
        """Without a secret the answer has no sign member."""
        body = signing.seal_answer({"result_code": "ACCESS_DENIED"}, None)
        self.assertEqual(body, b'{"response":{"result_code":"ACCESS_DENIED"}}')
        self.assertEqual(
            signing.read_answer(body),
            ({"result_code": "ACCESS_DENIED"}, body[12:-1].decode(), None),
        )

    def test_sha256(self) -> None:
        """An answer to an C{HmacSHA256} call is signed with SHA-256."""
        body = signing.seal_answer({"a": "b"}, "k", "HmacSHA256")
        _, text, sign = signing.read_answer(body)
        self.assertEqual(sign, signing.sign_response(text, "k", "HmacSHA256"))
        self.assertNotEqual(sign, signing.sign_response(text, "k"))

    def test_sign_guard(self) -> None:
        """Values that would write C{"sign"} (exactly C{sign}, or ending
        in C{"sign}) are escaped so the body holds it once, as the
        member name, and they read back unchanged."""
        response = {"a": "sign", "b": 'x"sign', "c": ["sign"]}
        body = signing.seal_answer(response, "k")
        self.assertEqual(body.count(b'"sign"'), 1)
        read, text, sign = signing.read_answer(body)
        self.assertEqual(read, response)
        self.assertEqual(sign, signing.sign_response(text, "k"))

    @given(st.dictionaries(st.text() | tricky_text, json_values))
    def test_guard_any_value(self, response: dict[str, object]) -> None:
        """For any JSON object, even one with C{sign} keys, the text has
        no C{"sign"}, reads back equal, and the signature covers it."""
        text = signing.response_text(response)
        self.assertNotIn('"sign"', text)
        self.assertEqual(json.loads(text), response)
        body = signing.seal_answer(response, "k")
        _, signed_text, sign = signing.read_answer(body)
        self.assertEqual(signed_text, text)
        self.assertEqual(sign, signing.sign_response(text, "k"))

    def test_unreadable(self) -> None:
        """Bodies that are not answers are refused clearly."""
        for body in [
            b"",
            b"\xff",
            b"[]",
            b'{"response":1}',
            b"<html>",
            b'{"\\u0072esponse":{}}',
        ]:
            self.assertRaises(
                signing.UnreadableAnswer, signing.read_answer, body
            )
        self.assertRaises(
            signing.UnreadableAnswer,
            signing.read_answer,
            b'{"response":{},"sign":1}',
        )
