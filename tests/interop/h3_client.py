#!/usr/bin/env python3
"""An independent HTTP/3 client (aioquic) for meshfed's federation port.

It does what docs/protocol.md says a peer does: QUIC with ALPN h3, mutual TLS with an
X.509-SVID, and a request whose :authority is the service's clusterset name. The server's
certificate is checked the SPIFFE way (issued by the trust domain's CA, with the expected
SPIFFE ID as its URI SAN), because Web PKI hostname checks do not apply to SVIDs.

Usage: h3_client.py HOST:PORT AUTHORITY CERT KEY CA EXPECTED_ID [METHOD] [PATH]

With METHOD CONNECT, AUTHORITY is `<svc>.<ns>.svc.clusterset.local:<port>` and PATH is the
text to send through the tunnel; the body printed is what came back before the tunnel ended.

Prints one JSON line: {"status": ..., "body": ...}. Exits 2 if no connection could be made
(handshake refused), 3 if the server is not who it should be.
"""

import asyncio
import json
import ssl
import sys

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated
from cryptography import x509


class Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.responses = {}
        self.terminated = asyncio.get_event_loop().create_future()

    def quic_event_received(self, event):
        if isinstance(event, ConnectionTerminated) and not self.terminated.done():
            self.terminated.set_result(event)
        for h3_event in self.h3.handle_event(event):
            waiter = self.responses.get(h3_event.stream_id)
            if waiter is None:
                continue
            state, done = waiter
            if isinstance(h3_event, HeadersReceived):
                state["headers"].extend(h3_event.headers)
            elif isinstance(h3_event, DataReceived):
                state["body"] += h3_event.data
            if getattr(h3_event, "stream_ended", False) and not done.done():
                done.set_result(state)

    async def request(self, method, authority, path, payload):
        stream_id = self._quic.get_next_available_stream_id()
        done = asyncio.get_event_loop().create_future()
        self.responses[stream_id] = ({"headers": [], "body": b""}, done)
        if method == "CONNECT":
            # RFC 9114 section 4.4: :method and :authority (host:port) only. The payload is
            # sent as the tunnel's bytes, then our side is closed (half-close).
            headers = [(b":method", b"CONNECT"), (b":authority", authority.encode())]
            self.h3.send_headers(stream_id, headers, end_stream=False)
            self.h3.send_data(stream_id, payload, end_stream=True)
        else:
            headers = [
                (b":method", method.encode()),
                (b":scheme", b"https"),
                (b":authority", authority.encode()),
                (b":path", path.encode()),
            ]
            self.h3.send_headers(stream_id, headers, end_stream=True)
        self.transmit()
        finished = await asyncio.wait(
            [done, self.terminated], return_when=asyncio.FIRST_COMPLETED, timeout=10
        )
        if done not in finished[0]:
            raise ConnectionError("the connection ended before the response")
        return done.result()


def server_certificate(client):
    tls = client._quic.tls
    return getattr(tls, "_peer_certificate", None)


async def main():
    address, authority, cert, key, ca, expected_id = sys.argv[1:7]
    method = sys.argv[7] if len(sys.argv) > 7 else "GET"
    path = sys.argv[8] if len(sys.argv) > 8 else "/"
    host, port = address.rsplit(":", 1)
    configuration = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN)
    # SVIDs carry no DNS names: the server is checked below, against its SPIFFE ID.
    configuration.verify_mode = ssl.CERT_NONE
    configuration.load_cert_chain(cert, key)
    configuration.max_datagram_frame_size = None
    try:
        async with connect(
            host, int(port), configuration=configuration, create_protocol=Client,
            wait_connected=True,
        ) as client:
            peer = server_certificate(client)
            with open(ca, "rb") as f:
                root = x509.load_pem_x509_certificate(f.read())
            try:
                peer.verify_directly_issued_by(root)
                uris = peer.extensions.get_extension_for_class(
                    x509.SubjectAlternativeName
                ).value.get_values_for_type(x509.UniformResourceIdentifier)
            except Exception as error:  # any failure means: not the expected server
                print(f"server certificate refused: {error}", file=sys.stderr)
                sys.exit(3)
            if uris != [expected_id]:
                print(f"server is {uris}, expected {expected_id}", file=sys.stderr)
                sys.exit(3)
            response = await client.request(method, authority, path, path.encode())
    except (ConnectionError, OSError, asyncio.TimeoutError) as error:
        print(f"no connection: {error!r}", file=sys.stderr)
        sys.exit(2)
    headers = {k.decode(): v.decode() for k, v in response["headers"]}
    print(json.dumps({
        "status": int(headers.get(":status", "0")),
        "error": headers.get("x-meshfed-error"),
        "body": response["body"].decode(errors="replace"),
    }))


if __name__ == "__main__":
    asyncio.run(main())
