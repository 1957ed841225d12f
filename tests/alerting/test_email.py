"""The e-mail receiver against a real (minimal) SMTP server on 127.0.0.1: delivered, a 5xx is
final, a 4xx is retried (RFC 5321 §4.2.1: 4yz transient, 5yz permanent)."""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Iterator

import pytest

from shipyard.alerting.receivers import Receiver, send

PAYLOAD = {
    "version": "4",
    "groupKey": "mail:{}",
    "status": "firing",
    "receiver": "mail",
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "DataDrift"},
            "annotations": {"summary": "drift on age"},
        }
    ],
}


class SmtpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.data_reply = "250 queued"
        super().__init__(("127.0.0.1", 0), SmtpHandler)


class SmtpHandler(socketserver.StreamRequestHandler):
    server: SmtpServer

    def reply(self, line: str) -> None:
        self.wfile.write(f"{line}\r\n".encode())

    def handle(self) -> None:
        self.reply("220 test ESMTP")
        while line := self.rfile.readline().decode().strip():
            verb = line.split(" ")[0].upper()
            if verb in ("EHLO", "HELO"):
                self.reply("250 test")
            elif verb in ("MAIL", "RCPT", "RSET", "NOOP"):
                self.reply("250 ok")
            elif verb == "DATA":
                self.reply("354 go ahead")
                body = []
                while (chunk := self.rfile.readline().decode()) not in (".\r\n", ""):
                    body.append(chunk)
                if self.server.data_reply.startswith("250"):
                    self.server.messages.append("".join(body))
                self.reply(self.server.data_reply)
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("502 unknown")


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield server  # a short poll: shutdown() waits for the next one
    server.shutdown()
    server.server_close()


def _receiver(port: int) -> Receiver:
    return Receiver("mail", "email", smtp_port=port, email_to=("ml@example.com",), timeout_s=2)


def test_mail_is_delivered_with_the_summary(smtp: SmtpServer) -> None:
    result = send(_receiver(smtp.server_address[1]), PAYLOAD, "k1")
    assert result.ok, result.detail
    [message] = smtp.messages
    assert "Subject: [FIRING] mail:{}" in message and "drift on age" in message


def test_a_5xx_is_final_and_a_4xx_is_retried(smtp: SmtpServer) -> None:
    smtp.data_reply = "554 rejected"
    result = send(_receiver(smtp.server_address[1]), PAYLOAD, "k1")
    assert (result.ok, result.retry) == (False, False) and "554" in result.detail
    smtp.data_reply = "451 try later"
    result = send(_receiver(smtp.server_address[1]), PAYLOAD, "k1")
    assert (result.ok, result.retry) == (False, True) and "451" in result.detail


def test_no_server_is_retried() -> None:
    with socketserver.TCPServer(("127.0.0.1", 0), socketserver.BaseRequestHandler) as s:
        port = s.server_address[1]  # a port that is closed once this block ends
    result = send(_receiver(port), PAYLOAD, "k1")
    assert (result.ok, result.retry) == (False, True)
