"""TLS for the control plane's listeners (gRPC and the HTTP gateway): a certificate given to
it, or one it makes for itself (`--tls auto`), and the rule that nothing listens beyond this
machine without TLS unless told to (`--insecure`).

`--tls auto` makes a CA once and keeps it in the data dir (clients trust that CA's file); the
server certificate it signs names localhost, 127.0.0.1, ::1, the host name and the hosts the
server listens on, and is made again when those change or it nears its end.
"""

import dataclasses
import datetime
import ipaddress
import os
import pathlib
import socket

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .. import exception

CA_DAYS = 3650
SERVER_DAYS = 397     # what browsers accept for a server certificate
RENEW_DAYS = 30       # a server certificate closer than this to its end is made again
WILDCARDS = {"", "0.0.0.0", "::"}


@dataclasses.dataclass
class ServerTLS:
    cert_file: pathlib.Path
    key_file: pathlib.Path
    ca_file: pathlib.Path | None = None   # made by --tls auto: what clients must trust

    def key_and_chain(self) -> tuple[bytes, bytes]:
        try:
            return self.key_file.read_bytes(), self.cert_file.read_bytes()
        except OSError as e:
            raise exception.InvalidError(f"cannot read the TLS certificate or key ({e.filename}: {e.strerror}): "
                                         "check --tls-cert and --tls-key") from None


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def names_for(hosts: list[str]) -> list[str]:
    """The names a server certificate should hold for a server listening on these hosts."""
    names = ["localhost", "127.0.0.1", "::1", socket.gethostname()]
    for h in hosts:
        h = h.strip("[]")
        if h in WILDCARDS:
            # Listening everywhere: the addresses the host name resolves to are the likely ones, and
            # the one other machines most likely reach it at, that of its default route (the host
            # name often resolves to 127.0.1.1 alone: Debian's /etc/hosts).
            try:
                names += [info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)]
            except OSError:
                pass
            names += _default_route_addresses()
        else:
            names.append(h)
    return list(dict.fromkeys(n for n in names if n))


def _default_route_addresses() -> list[str]:
    """This machine's own address on the way to the world, IPv4 and IPv6, where it has one. A UDP
    socket's connect only chooses the route and source address: nothing is sent."""
    found = []
    for family, far in ((socket.AF_INET, "203.0.113.1"), (socket.AF_INET6, "2001:db8::1")):
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.connect((far, 9))
                found.append(s.getsockname()[0])
        except OSError:  # no route of that family
            pass
    return found


def auto(directory: pathlib.Path, hosts: list[str]) -> ServerTLS:
    """The CA and server certificate of `--tls auto`, made where missing (or out of date)."""
    directory.mkdir(parents=True, exist_ok=True)
    tls = ServerTLS(directory / "server.pem", directory / "server.key", directory / "ca.pem")
    ca_key_file = directory / "ca.key"
    if not (tls.ca_file.exists() and ca_key_file.exists()):
        ca_key = ec.generate_private_key(ec.SECP256R1())
        _write_key(ca_key_file, ca_key)
        tls.ca_file.write_bytes(_ca_cert(ca_key).public_bytes(serialization.Encoding.PEM))
        tls.cert_file.unlink(missing_ok=True)  # signed by a CA that is gone
    ca_key = serialization.load_pem_private_key(ca_key_file.read_bytes(), None)
    ca = x509.load_pem_x509_certificate(tls.ca_file.read_bytes())
    names = names_for(hosts)
    if not _current(tls.cert_file, ca, names):
        key = ec.generate_private_key(ec.SECP256R1())
        _write_key(tls.key_file, key)
        tls.cert_file.write_bytes(_server_cert(key, ca, ca_key, names).public_bytes(serialization.Encoding.PEM))
    return tls


def fingerprint(cert_file: pathlib.Path) -> str:
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def _write_key(path: pathlib.Path, key):
    path.unlink(missing_ok=True)
    # Created owner-only: the key is never readable by others, not even for a moment.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _ca_cert(key) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Ember CA ({socket.gethostname()})")])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - datetime.timedelta(hours=1))
            .not_valid_after(_now() + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))


def _san(names: list[str]) -> x509.SubjectAlternativeName:
    entries = []
    for n in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            entries.append(x509.DNSName(n))
    return x509.SubjectAlternativeName(entries)


def _server_cert(key, ca: x509.Certificate, ca_key, names: list[str]) -> x509.Certificate:
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - datetime.timedelta(hours=1))
            .not_valid_after(_now() + datetime.timedelta(days=SERVER_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(_san(names), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))


def _current(cert_file: pathlib.Path, ca: x509.Certificate, names: list[str]) -> bool:
    """Whether the server certificate there is signed by this CA, names all of `names`, and lasts a while yet."""
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    except (OSError, ValueError):
        return False
    if cert.issuer != ca.subject or cert.not_valid_after_utc - _now() < datetime.timedelta(days=RENEW_DAYS):
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    have = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(_san(names)) <= set(have)
