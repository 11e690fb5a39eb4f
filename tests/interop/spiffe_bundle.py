"""SPIFFE bundle interop with an independent implementation: the `spiffe` package (py-spiffe)
and `cryptography`, no meshfed code.

    fetch URL CA_PEM ENDPOINT_ID TRUST_DOMAIN
        Fetch a bundle from a meshfed bundle endpoint (https_spiffe): TLS verified against CA_PEM,
        the server's URI SAN checked against ENDPOINT_ID. Read each x509-svid authority with
        py-spiffe's X509Bundle and print each one's DER, base64, one per line.

    make TRUST_DOMAIN OUT_JSON
        Make a CA with `cryptography` and write a SPIFFE bundle (JWK set) holding it, as another
        implementation would. Print the CA's DER, base64.

py-spiffe 0.3 reads X.509 bundles as PEM or DER, not as JWK sets, so the JWK set is taken
apart here (x5c is standard base64 DER, RFC 7517) and each certificate handed to py-spiffe.
"""

import base64
import datetime
import json
import socket
import ssl
import sys
import urllib.parse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from spiffe import TrustDomain, X509Bundle


def b64url(n: int, size: int) -> str:
    return base64.urlsafe_b64encode(n.to_bytes(size, "big")).rstrip(b"=").decode()


def fetch(url: str, ca_pem: str, endpoint_id: str, trust_domain: str) -> None:
    parsed = urllib.parse.urlsplit(url)
    context = ssl.create_default_context(cafile=ca_pem)
    # SPIFFE authentication: no DNS name to check; the URI SAN is checked below instead.
    context.check_hostname = False
    context.set_alpn_protocols(["http/1.1"])
    with socket.create_connection((parsed.hostname, parsed.port), timeout=10) as raw:
        with context.wrap_socket(raw) as tls:
            server = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
            uris = server.extensions.get_extension_for_class(
                x509.SubjectAlternativeName
            ).value.get_values_for_type(x509.UniformResourceIdentifier)
            if uris != [endpoint_id]:
                sys.exit(f"endpoint presented {uris}, expected {endpoint_id}")
            path = parsed.path or "/"
            tls.sendall(
                f"GET {path} HTTP/1.1\r\nHost: {parsed.netloc}\r\nConnection: close\r\n\r\n".encode()
            )
            response = b""
            while chunk := tls.recv(65536):
                response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        sys.exit(f"endpoint answered {head.splitlines()[0]!r}")
    document = json.loads(body)
    for key in document["keys"]:
        if key.get("use") != "x509-svid":
            continue
        (der_b64,) = key["x5c"]
        bundle = X509Bundle.parse_raw(TrustDomain(trust_domain), base64.b64decode(der_b64))
        for authority in bundle.x509_authorities:
            der = authority.public_bytes(serialization.Encoding.DER)
            print(base64.b64encode(der).decode())


def make(trust_domain: str, out: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "interop")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    numbers = key.public_key().public_numbers()
    document = {
        "keys": [
            {
                "use": "x509-svid",
                "kty": "EC",
                "crv": "P-256",
                "x": b64url(numbers.x, 32),
                "y": b64url(numbers.y, 32),
                "x5c": [base64.b64encode(der).decode()],
            }
        ],
        "spiffe_sequence": 1,
        "spiffe_refresh_hint": 60,
    }
    with open(out, "w") as f:
        json.dump(document, f)
    print(base64.b64encode(der).decode())


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"fetch": fetch, "make": make}[command](*args)
