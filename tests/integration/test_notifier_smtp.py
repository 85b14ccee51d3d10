"""The SMTP failure notifier never sends credentials in clear and verifies the server's certificate.

A small real SMTP server on 127.0.0.1 (a thread of this test) records every command it gets:
- without STARTTLS the notifier refuses with a message naming the connection and the cause,
  and the server has seen no AUTH (nor any mail);
- with STARTTLS but a self-signed certificate, the TLS handshake fails on verification, no
  AUTH is sent;
- with a certificate signed by a CA the client trusts (SSL_CERT_FILE), the mail is delivered
  after STARTTLS and AUTH.
"""

from __future__ import annotations

import base64
import datetime
import json
import socket
import ssl
import threading
from pathlib import Path

import pytest

PASSWORD = "smtp-secret-pw-h5"


class SmtpServer:
    """Single-threaded SMTP server for one connection at a time: EHLO, STARTTLS (if a cert is
    given), AUTH PLAIN/LOGIN, MAIL, RCPT, DATA, QUIT. Every command line is recorded."""

    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        self.context = context
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(5)
        self.port = self.sock.getsockname()[1]
        self.commands: list[str] = []
        self.messages: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.sock.close()
        self.thread.join(5)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                self._session(conn)
            except (OSError, ssl.SSLError):
                pass
            finally:
                conn.close()

    def _session(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        fh = conn.makefile("rb")
        conn.sendall(b"220 test ESMTP\r\n")
        tls = False
        while True:
            line = fh.readline()
            if not line:
                return
            cmd = line.decode(errors="replace").rstrip("\r\n")
            self.commands.append(cmd)
            verb = cmd.split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                lines = ["250-test", "250-AUTH PLAIN LOGIN"]
                if self.context and not tls:
                    lines.append("250-STARTTLS")
                conn.sendall(("\r\n".join(lines) + "\r\n250 OK\r\n").encode())
            elif verb == "STARTTLS" and self.context:
                conn.sendall(b"220 go ahead\r\n")
                conn = self.context.wrap_socket(conn, server_side=True)
                fh = conn.makefile("rb")
                tls = True
            elif verb == "AUTH":
                conn.sendall(b"235 ok\r\n")
            elif verb == "DATA":
                conn.sendall(b"354 go\r\n")
                body = []
                while (data := fh.readline()) not in (b".\r\n", b""):
                    body.append(data.decode(errors="replace"))
                self.messages.append("".join(body))
                conn.sendall(b"250 queued\r\n")
            elif verb == "QUIT":
                conn.sendall(b"221 bye\r\n")
                return
            else:
                conn.sendall(b"250 OK\r\n")


def _cert(tmp_path: Path, name: str, ca: tuple | None = None) -> tuple[Path, Path, object, object]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_cert, issuer_key = ca if ca else (None, key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(issuer_cert.subject if issuer_cert else subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1)))
    if ca is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    builder = builder.add_extension(
        x509.SubjectAlternativeName([x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]),
        critical=False)
    cert = builder.sign(issuer_key, hashes.SHA256())
    cert_file, key_file = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file, cert, key


def _server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


@pytest.fixture
def notify(monkeypatch):
    """notify(port, **extra) sends a failure notice through connection hfc_test_smtp."""
    from hfc_tasks.provider.notifiers import HfcFailureNotifier

    def send(port: int, **extra):
        monkeypatch.setenv("AIRFLOW_CONN_HFC_TEST_SMTP", json.dumps({
            "conn_type": "smtp", "host": "127.0.0.1", "port": port, "login": "hfc-mailer",
            "password": PASSWORD, "extra": {"to": "ops@example.org", "from": "hfc@example.org", **extra}}))
        context = {"run_id": "scheduled__2024-02-10", "params": {"night": "2024-02-10"},
                   "exception": RuntimeError("archive failed")}
        HfcFailureNotifier(conn_id="hfc_test_smtp").notify(context)

    return send


def _sent_auth(server: SmtpServer) -> list[str]:
    return [c for c in server.commands if c.upper().startswith("AUTH")]


def test_no_starttls_is_refused_without_sending_credentials(notify):
    server = SmtpServer()  # plain SMTP, no STARTTLS offered
    try:
        for extra in ({}, {"starttls": "false"}):
            with pytest.raises(Exception) as err:
                notify(server.port, **extra)
            msg = str(err.value)
            assert "hfc_test_smtp" in msg and "TLS" in msg, msg
            assert PASSWORD not in msg
        assert _sent_auth(server) == [], server.commands
        assert server.messages == []
        assert not any(PASSWORD in c or base64.b64encode(PASSWORD.encode()).decode() in c
                       for c in server.commands)
    finally:
        server.close()


def test_untrusted_certificate_is_refused(notify, tmp_path):
    cert_file, key_file, _, _ = _cert(tmp_path, "selfsigned")
    server = SmtpServer(_server_context(cert_file, key_file))
    try:
        with pytest.raises(Exception) as err:
            notify(server.port)
        assert "certificate" in str(err.value).lower(), err.value
        assert "hfc_test_smtp" in str(err.value)
        assert "STARTTLS" in [c.upper() for c in server.commands]
        assert _sent_auth(server) == [], server.commands
        assert server.messages == []
    finally:
        server.close()


def test_trusted_certificate_delivers_after_starttls(notify, tmp_path, monkeypatch):
    _, _, ca_cert, ca_key = _cert(tmp_path, "test-ca")
    cert_file, key_file, _, _ = _cert(tmp_path, "smtp-server", ca=(ca_cert, ca_key))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "test-ca.crt"))
    server = SmtpServer(_server_context(cert_file, key_file))
    try:
        notify(server.port)
        verbs = [c.split(" ", 1)[0].upper() for c in server.commands]
        assert verbs.index("STARTTLS") < verbs.index("AUTH") < verbs.index("MAIL")
        assert len(server.messages) == 1 and "night 2024-02-10" in server.messages[0]
    finally:
        server.close()
