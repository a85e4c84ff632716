"""
Tests for L{msync.devcerts}, the development certificate generator.
"""

from __future__ import annotations

import datetime
import io
import ipaddress
import os
import runpy
import shutil
import stat
import sys
import tempfile

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store
from OpenSSL import SSL
from service_identity import VerificationError
from service_identity.pyopenssl import verify_hostname, verify_ip_address
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    PrivateCertificate,
    optionsForClientTLS,
)
from twisted.internet.task import Clock
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.test.iosim import connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase

from msync import devcerts
from msync.devcerts import DevCerts, ensure_dev_certs

#: A fixed moment for tests that check validity dates exactly.
NOW = datetime.datetime(2026, 3, 1, 12, 0, 0, tzinfo=datetime.UTC)

ALL_FILES = ("ca.pem", "ca.key", "server.pem", "server.key")

SCRIPT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)),
    os.pardir,
    "certs",
    "make_dev_certs.py",
)


def make_directory(case: SynchronousTestCase) -> str:
    """
    Make an empty directory that is removed when C{case} ends.
    """
    # trial's mktemp() is relative to the working directory, which under
    # pytest is the checkout; a system temporary directory keeps it clean.
    path = tempfile.mkdtemp(prefix="msync-devcerts-")
    case.addCleanup(shutil.rmtree, path, ignore_errors=True)
    return path


def read_all(directory: str) -> dict[str, bytes]:
    """
    Read every certificate and key file in C{directory}.
    """
    contents = {}
    for name in ALL_FILES:
        with open(os.path.join(directory, name), "rb") as f:
            contents[name] = f.read()
    return contents


def load_chain(path: str) -> list[x509.Certificate]:
    """
    Load every certificate in the PEM file at C{path}, in order.
    """
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificates(f.read())


def common_name(certificate: x509.Certificate) -> object:
    """
    Get the common name of C{certificate}'s subject.
    """
    [attribute] = certificate.subject.get_attributes_for_oid(
        NameOID.COMMON_NAME
    )
    return attribute.value


class EnsureDevCertsTests(SynchronousTestCase):
    """
    Tests for the files L{ensure_dev_certs} writes and when it writes them.
    """

    def setUp(self) -> None:
        self.directory = make_directory(self)

    def test_creates_files(self) -> None:
        """
        An empty directory gets all four files and the paths say where.
        """
        result = ensure_dev_certs(self.directory)

        self.assertEqual(
            result,
            DevCerts(
                ca=os.path.join(self.directory, "ca.pem"),
                cert=os.path.join(self.directory, "server.pem"),
                key=os.path.join(self.directory, "server.key"),
                created=True,
            ),
        )
        # No temporary file is left behind.
        self.assertEqual(sorted(os.listdir(self.directory)), sorted(ALL_FILES))

    def test_creates_missing_directory(self) -> None:
        """
        A directory that does not exist yet is created, parents included.
        """
        nested = os.path.join(self.directory, "a", "b")

        result = ensure_dev_certs(nested)

        self.assertTrue(result.created)
        self.assertEqual(sorted(os.listdir(nested)), sorted(ALL_FILES))

    def test_modes(self) -> None:
        """
        Keys are 0600 and certificates 0644, whatever the umask allows.
        """
        # With no umask to narrow them, the modes seen are exactly the ones
        # the files were created with.
        self.addCleanup(os.umask, os.umask(0))

        ensure_dev_certs(self.directory)

        modes = {
            name: stat.S_IMODE(
                os.stat(os.path.join(self.directory, name)).st_mode
            )
            for name in ALL_FILES
        }
        self.assertEqual(
            modes,
            {
                "ca.pem": 0o644,
                "ca.key": 0o600,
                "server.pem": 0o644,
                "server.key": 0o600,
            },
        )

    def test_keeps_existing(self) -> None:
        """
        A second call leaves a complete set untouched and reports so.
        """
        first = ensure_dev_certs(self.directory)
        before = read_all(self.directory)
        inode = os.stat(first.key).st_ino

        second = ensure_dev_certs(self.directory)

        self.assertEqual(
            second, DevCerts(first.ca, first.cert, first.key, False)
        )
        self.assertEqual(read_all(self.directory), before)
        self.assertEqual(os.stat(second.key).st_ino, inode)

    def test_missing_file_regenerates_all(self) -> None:
        """
        Losing any one of the three files replaces every file.
        """
        for name in ("ca.pem", "server.pem", "server.key"):
            directory = make_directory(self)
            ensure_dev_certs(directory)
            before = read_all(directory)
            os.remove(os.path.join(directory, name))

            result = ensure_dev_certs(directory)

            self.assertTrue(result.created, name)
            after = read_all(directory)
            for each in ALL_FILES:
                self.assertNotEqual(after[each], before[each], (name, each))

    def test_interrupted_run_is_redone(self) -> None:
        """
        A run that dies part way is redone in full by the next one.
        """
        ensure_dev_certs(self.directory)
        os.remove(os.path.join(self.directory, "server.key"))
        real_write = devcerts._write_atomically

        def dying_write(path: str, data: bytes, mode: int) -> None:
            # Die after the server key, the last write but one: every file
            # but the chain is new, and the old chain must not survive.
            real_write(path, data, mode)
            if path.endswith("server.key"):
                raise OSError("disk on fire")

        self.patch(devcerts, "_write_atomically", dying_write)
        self.assertRaises(OSError, ensure_dev_certs, self.directory)
        self.assertFalse(
            os.path.exists(os.path.join(self.directory, "server.pem"))
        )

        self.patch(devcerts, "_write_atomically", real_write)
        self.assertTrue(ensure_dev_certs(self.directory).created)


class CertificateTests(SynchronousTestCase):
    """
    Tests for what the generated certificates and keys contain.
    """

    def setUp(self) -> None:
        self.certs = ensure_dev_certs(make_directory(self), now=NOW)
        [self.ca] = load_chain(self.certs.ca)
        self.chain = load_chain(self.certs.cert)
        self.server = self.chain[0]

    def test_ca(self) -> None:
        """
        The CA is a self-signed P-256 CA that may sign only leaf certificates.
        """
        ca = self.ca
        self.assertEqual(common_name(ca), "msync development CA")
        self.assertEqual(ca.issuer, ca.subject)
        ca.verify_directly_issued_by(ca)

        key = ca.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        self.assertIsInstance(key.curve, ec.SECP256R1)

        constraints = ca.extensions.get_extension_for_class(
            x509.BasicConstraints
        )
        self.assertTrue(constraints.critical)
        self.assertTrue(constraints.value.ca)
        usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
        self.assertTrue(usage.key_cert_sign)
        self.assertTrue(usage.crl_sign)
        self.assertFalse(usage.digital_signature)

        start = NOW - datetime.timedelta(hours=1)
        self.assertEqual(ca.not_valid_before_utc, start)
        self.assertEqual(
            ca.not_valid_after_utc, start + datetime.timedelta(days=3650)
        )

    def test_server(self) -> None:
        """
        The server certificate names loopback only and serves TLS only.
        """
        server = self.server
        self.assertEqual(common_name(server), "localhost")
        self.assertEqual(server.issuer, self.ca.subject)

        names = server.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value
        self.assertEqual(
            names.get_values_for_type(x509.DNSName), ["localhost"]
        )
        self.assertEqual(
            names.get_values_for_type(x509.IPAddress),
            [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")],
        )
        purposes = server.extensions.get_extension_for_class(
            x509.ExtendedKeyUsage
        ).value
        self.assertEqual(list(purposes), [ExtendedKeyUsageOID.SERVER_AUTH])
        constraints = server.extensions.get_extension_for_class(
            x509.BasicConstraints
        ).value
        self.assertFalse(constraints.ca)

        key = server.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        self.assertIsInstance(key.curve, ec.SECP256R1)

        start = NOW - datetime.timedelta(hours=1)
        self.assertEqual(server.not_valid_before_utc, start)
        self.assertEqual(
            server.not_valid_after_utc, start + datetime.timedelta(days=825)
        )

    def test_chain_file(self) -> None:
        """
        server.pem holds the server certificate followed by the CA.
        """
        self.assertEqual(self.chain, [self.server, self.ca])

    def test_server_key(self) -> None:
        """
        server.key is an unencrypted PKCS#8 key matching the certificate.
        """
        with open(self.certs.key, "rb") as f:
            pem = f.read()
        self.assertTrue(pem.startswith(b"-----BEGIN PRIVATE KEY-----\n"))

        key = serialization.load_pem_private_key(pem, password=None)
        self.assertEqual(key.public_key(), self.server.public_key())

    def test_ca_key(self) -> None:
        """
        ca.key is an unencrypted PKCS#8 key matching the CA certificate.
        """
        path = os.path.join(os.path.dirname(self.certs.ca), "ca.key")
        with open(path, "rb") as f:
            pem = f.read()
        self.assertTrue(pem.startswith(b"-----BEGIN PRIVATE KEY-----\n"))

        key = serialization.load_pem_private_key(pem, password=None)
        self.assertEqual(key.public_key(), self.ca.public_key())

    def test_verifies_against_ca(self) -> None:
        """
        A verifier trusting only the CA accepts the server for each name.
        """
        builder = (
            PolicyBuilder()
            .store(Store([self.ca]))
            .time(NOW + datetime.timedelta(days=1))
        )
        subjects: list[x509.verification.Subject] = [
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]
        for subject in subjects:
            verifier = builder.build_server_verifier(subject)
            path = verifier.verify(self.server, self.chain[1:])
            self.assertEqual(path, [self.server, self.ca])

    def test_rejected_by_other_ca(self) -> None:
        """
        A verifier trusting a different development CA refuses the server.
        """
        [other] = load_chain(ensure_dev_certs(make_directory(self)).ca)
        verifier = (
            PolicyBuilder()
            .store(Store([other]))
            .time(NOW + datetime.timedelta(days=1))
            .build_server_verifier(x509.DNSName("localhost"))
        )
        self.assertRaises(
            x509.verification.VerificationError,
            verifier.verify,
            self.server,
            [],
        )


class Recorder(Protocol):
    """
    An application protocol that keeps what it is sent.

    @ivar greeting: What to send as soon as the connection is made.
    @ivar reply: Whether to answer the first bytes received with C{b"pong"}.
    @ivar received: The bytes received so far.
    @ivar lost: Why the connection was lost, once it has been.
    """

    def __init__(self, greeting: bytes = b"", reply: bool = False) -> None:
        self.greeting = greeting
        self.reply = reply
        self.received = b""
        self.lost: Failure | None = None

    def connectionMade(self) -> None:
        if self.greeting:
            self.transport.write(self.greeting)

    def dataReceived(self, data: bytes) -> None:
        if self.reply and not self.received:
            self.transport.write(b"pong")
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = reason


def handshake(
    certs: DevCerts, trusted_ca: str
) -> tuple[TLSMemoryBIOProtocol, Recorder, Recorder]:
    """
    Run a TLS conversation in memory between a server using C{certs} and a
    client that trusts only C{trusted_ca} and expects C{localhost}.

    The client says C{b"ping"} and the server answers C{b"pong"}.

    @return: The client's TLS protocol, the client application protocol,
        and the server application protocol.
    """
    with open(certs.cert, "rb") as f:
        chain_pem = f.read()
    with open(certs.key, "rb") as f:
        key_pem = f.read()
    with open(trusted_ca, "rb") as f:
        ca_pem = f.read()

    # loadPEM takes the first certificate it finds, the server's own; the
    # rest of server.pem goes out as the chain, as a real server sends it.
    server_identity = PrivateCertificate.loadPEM(chain_pem + key_pem)
    extra = [
        Certificate.loadPEM(each.public_bytes(serialization.Encoding.PEM))
        for each in x509.load_pem_x509_certificates(chain_pem)[1:]
    ]
    server_options = CertificateOptions(
        privateKey=server_identity.privateKey.original,
        certificate=server_identity.original,
        extraCertChain=[each.original for each in extra],
    )
    client_options = optionsForClientTLS(
        "localhost", trustRoot=Certificate.loadPEM(ca_pem)
    )

    # The TLS layer batches small writes until the clock next turns; one
    # clock shared with the pump keeps the global reactor out of it.
    clock = Clock()
    server_app = Recorder(reply=True)
    client_app = Recorder(greeting=b"ping")
    server_factory = TLSMemoryBIOFactory(
        server_options,
        False,
        Factory.forProtocol(lambda: server_app),
        clock,
    )
    client_factory = TLSMemoryBIOFactory(
        client_options,
        True,
        Factory.forProtocol(lambda: client_app),
        clock,
    )
    address = IPv4Address("TCP", "127.0.0.1", 8443)
    client, _, pump = connectedServerAndClient(
        lambda: server_factory.buildProtocol(address),
        lambda: client_factory.buildProtocol(address),
        clock=clock,
    )
    pump.flush()
    return client, client_app, server_app


class HandshakeTests(SynchronousTestCase):
    """
    Tests that real TLS clients and servers accept the certificates.
    """

    def setUp(self) -> None:
        self.certs = ensure_dev_certs(make_directory(self))

    def test_handshake(self) -> None:
        """
        A client trusting only ca.pem completes a handshake and bytes flow.
        """
        _, client_app, server_app = handshake(self.certs, self.certs.ca)

        self.assertIsNone(client_app.lost)
        self.assertIsNone(server_app.lost)
        self.assertEqual(server_app.received, b"ping")
        self.assertEqual(client_app.received, b"pong")

    def test_other_ca_refused(self) -> None:
        """
        A client trusting a different CA refuses the server.
        """
        other = ensure_dev_certs(make_directory(self))

        _, client_app, server_app = handshake(self.certs, other.ca)

        assert client_app.lost is not None
        self.assertTrue(client_app.lost.check(SSL.Error))
        self.assertEqual(server_app.received, b"")
        self.assertEqual(client_app.received, b"")

    def test_service_identity(self) -> None:
        """
        service_identity accepts the loopback names and refuses others.
        """
        client, _, _ = handshake(self.certs, self.certs.ca)
        connection = client.getHandle()

        verify_hostname(connection, "localhost")
        verify_ip_address(connection, "127.0.0.1")
        verify_ip_address(connection, "::1")
        self.assertRaises(
            VerificationError, verify_hostname, connection, "example.com"
        )
        self.assertRaises(
            VerificationError, verify_ip_address, connection, "10.0.0.1"
        )


class MainTests(SynchronousTestCase):
    """
    Tests for the command line, L{devcerts.main} and its script.
    """

    def setUp(self) -> None:
        self.directory = os.path.join(make_directory(self), "certs")
        self.stdout = io.StringIO()
        self.patch(sys, "stdout", self.stdout)

    def test_created_then_kept(self) -> None:
        """
        main says it created the certificates, then that it kept them.
        """
        self.assertEqual(devcerts.main([self.directory]), 0)
        self.assertEqual(devcerts.main([self.directory]), 0)

        self.assertEqual(
            self.stdout.getvalue().splitlines(),
            [
                f"Created new development certificates in {self.directory}",
                f"Kept existing development certificates in {self.directory}",
            ],
        )

    def test_default_directory(self) -> None:
        """
        Without an argument, main uses ./certs.
        """
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(os.path.dirname(self.directory))

        self.assertEqual(devcerts.main([]), 0)

        self.assertEqual(sorted(os.listdir(self.directory)), sorted(ALL_FILES))

    def test_failure(self) -> None:
        """
        A directory that cannot be made is reported, with exit status 1.
        """
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        blocker = os.path.join(os.path.dirname(self.directory), "file")
        with open(blocker, "wb"):
            pass

        self.assertEqual(devcerts.main([os.path.join(blocker, "certs")]), 1)

        self.assertIn(blocker, stderr.getvalue())
        self.assertEqual(self.stdout.getvalue(), "")

    def test_script(self) -> None:
        """
        certs/make_dev_certs.py runs main and exits with its status.
        """
        self.patch(sys, "argv", [SCRIPT, self.directory])

        with self.assertRaises(SystemExit) as caught:
            runpy.run_path(SCRIPT, run_name="__main__")

        self.assertEqual(caught.exception.code, 0)
        self.assertTrue(os.path.isfile(os.path.join(self.directory, "ca.pem")))
