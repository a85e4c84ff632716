"""
TLS settings for every listener and client msync makes: TLS 1.2 or newer,
forward-secret AEAD ciphers only.
"""

from __future__ import annotations

from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator

#: TLS 1.2 suites with ECDHE and AEAD; TLS 1.3 suites are all acceptable.
MODERN_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)


class TLSConfigError(ValueError):
    """The certificate or key cannot be used; the text says why."""


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise TLSConfigError(f"cannot read {path}: {e}") from e


def server_options(cert_path: str, key_path: str) -> ssl.CertificateOptions:
    """
    Build server TLS options from a PEM certificate file (the leaf first,
    then any chain) and a PEM private key file.

    @raise TLSConfigError: if they cannot be read or do not match.
    """
    chain_pem = _read(cert_path)
    key_pem = _read(key_path)
    blocks = [
        b"-----BEGIN CERTIFICATE-----" + part
        for part in chain_pem.split(b"-----BEGIN CERTIFICATE-----")[1:]
    ]
    if not blocks:
        raise TLSConfigError(f"{cert_path} holds no PEM certificate")
    try:
        leaf = ssl.PrivateCertificate.loadPEM(blocks[0] + b"\n" + key_pem)
        extra = [ssl.Certificate.loadPEM(b).original for b in blocks[1:]]
        options = ssl.CertificateOptions(
            privateKey=leaf.privateKey.original,
            certificate=leaf.original,
            extraCertChain=extra,
            raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
            acceptableCiphers=ssl.AcceptableCiphers.fromOpenSSLCipherString(
                MODERN_CIPHERS
            ),
        )
        # Build the context now so a mismatched key fails at startup.
        options.getContext()
    except Exception as e:
        raise TLSConfigError(
            f"cannot use certificate {cert_path} with key {key_path}: {e}"
        ) from e
    return options


def client_options(
    hostname: str, ca_path: str
) -> IOpenSSLClientConnectionCreator:
    """
    Build client TLS options that trust only the CA in C{ca_path} and
    check that the server is C{hostname}.

    @raise TLSConfigError: if the CA file cannot be read.
    """
    try:
        ca = ssl.Certificate.loadPEM(_read(ca_path))
    except TLSConfigError:
        raise
    except Exception as e:
        raise TLSConfigError(f"{ca_path} is not a PEM certificate: {e}") from e
    return ssl.optionsForClientTLS(
        hostname,
        trustRoot=ca,
        extraCertificateOptions={
            "raiseMinimumTo": ssl.TLSVersion.TLSv1_2,
        },
    )
