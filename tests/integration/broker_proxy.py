"""A TCP proxy in front of the test broker (127.0.0.1:5672), for the faults a real network
has: `cut()` drops every open connection (the broker sees the socket close); `blackhole()`
keeps every socket open but stops forwarding (what arrives is dropped, as a dead path drops
packets, so those connections never work again); `restore()` forwards new connections
again. `hold()` keeps what arrives and `release()` forwards it late, as a slow path does
(nothing is lost).  `cut_when_sent(pattern)` drops a connection the moment its client sends
bytes holding `pattern` (before they are forwarded): a connection lost at one exact step of
a protocol.  `late_close = True` forwards what the server sends but not its close (a path
that delays the FIN): the client reads the server's last words and still thinks the
connection open.  With `tls`, it terminates TLS in front of the plain broker.  `upstream` puts it
in front of another server (PostgreSQL) instead.
A CA and a server certificate for 127.0.0.1 are made with `make_ca`."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

BROKER = ("127.0.0.1", 5672)


@dataclass
class Link:
    """One client connection through the proxy."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    dead: bool = False  # opened or caught in a blackhole: never forwards again
    client_gone: asyncio.Event = field(default_factory=asyncio.Event)  # the client hung up
    server_gone: asyncio.Event = field(default_factory=asyncio.Event)  # the server hung up


class Proxy:
    def __init__(self, tls: ssl.SSLContext | None = None,
                 upstream: tuple[str, int] = BROKER) -> None:
        self.tls = tls
        self.upstream = upstream
        self.cut_pattern: bytes | None = None
        self.cuts = 0  # connections dropped by cut_when_sent
        self.late_close = False
        self.links: list[Link] = []
        self.blackholed = False
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    def url(self, scheme: str = "amqp", query: str = "") -> str:
        return f"{scheme}://guest:guest@127.0.0.1:{self.port}/" + (f"?{query}" if query else "")

    async def start(self) -> Proxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0, ssl=self.tls)
        return self

    def blackhole(self) -> None:
        self.blackholed = True
        for link in self.links:
            link.dead = True

    def restore(self) -> None:
        self.blackholed = False

    def hold(self) -> None:
        """From now on keep what arrives, in both directions, until release()."""
        self._flowing.clear()

    def release(self) -> None:
        self._flowing.set()

    def cut(self) -> None:
        """Drop every open connection at once; new ones are forwarded as before."""
        for link in self.open_links():
            for writer in (link.client, link.upstream):
                if writer is not None:
                    writer.transport.abort()

    def cut_when_sent(self, pattern: bytes | None) -> None:
        """From now on, drop the connection whose client sends `pattern` (None: stop)."""
        self.cut_pattern = pattern

    def open_links(self) -> list[Link]:
        return [link for link in self.links if not link.client_gone.is_set()]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in self.links:
            for writer in (link.client, link.upstream):
                if writer is not None:
                    writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = Link(client=writer, dead=self.blackholed)
        self.links.append(link)
        if not link.dead:
            try:
                up_reader, link.upstream = await asyncio.open_connection(*self.upstream)
            except OSError:
                writer.transport.abort()
                link.client_gone.set()
                return
            self._spawn(self._back(up_reader, writer, link))
        await self._pump(reader, link.upstream, link, watch=True)
        link.client_gone.set()
        if link.upstream is not None:
            link.upstream.transport.abort()

    async def _back(self, reader: asyncio.StreamReader, client: asyncio.StreamWriter,
                    link: Link) -> None:
        """Upstream to client; when the server closes, so does the client's socket (unless
        the path is dead, or the close is late: then the client is not told)."""
        await self._pump(reader, client, link)
        link.server_gone.set()
        if not link.dead and not self.late_close:
            client.transport.abort()

    def _spawn(self, coroutine) -> None:  # type: ignore[no-untyped-def]
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter | None, link: Link,
        watch: bool = False,
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                await self._flowing.wait()
                if watch and self.cut_pattern is not None and self.cut_pattern in data:
                    self.cuts += 1
                    for end in (link.client, link.upstream):
                        if end is not None:
                            end.transport.abort()
                    return
                if not link.dead and writer is not None:
                    writer.write(data)


@dataclass
class Certificates:
    ca: Path  # the CA's certificate (PEM): what a client trusts
    cert: Path  # the server's certificate for 127.0.0.1 and localhost, signed by the CA
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context


def make_ca(folder: Path, name: str = "test") -> Certificates:
    """A CA and a server certificate it signed, for 127.0.0.1 and localhost, in `folder`."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    paths = Certificates(folder / f"{name}-ca.pem", folder / f"{name}-server.pem",
                         folder / f"{name}-server.key")
    paths.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return paths
