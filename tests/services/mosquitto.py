"""A real mosquitto broker on 127.0.0.1, started per test from a generated config file.

Fixtures: ``mosquitto`` (anonymous) and ``mosquitto_with_password`` (a password file made with
``mosquitto_passwd``; anonymous clients refused). Each yields a :class:`MosquittoService` that can be
stopped and started again on the same port, to test reconnects. A missing binary fails the test: CI must
never pass by skipping the broker (``.ci/run`` installs the Debian package ``mosquitto``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

_START_TIMEOUT_SECONDS = 10.0
_STOP_TIMEOUT_SECONDS = 5.0
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin"])


def _require(program: str, package: str = "mosquitto") -> str:
    path = shutil.which(program, path=_SEARCH_PATH)
    if path is None:
        pytest.fail(
            f"{program} is not installed; `.ci/run` installs it with the Debian package {package} "
            f"(apt-get install -y {package})"
        )
    return path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class MosquittoService:
    """One mosquitto process; ``stop`` and ``start`` may be called again to restart it on the same port."""

    host = "127.0.0.1"

    def __init__(self, directory: Path, settings: Sequence[str] = ("allow_anonymous true",)) -> None:
        self.directory = directory
        self.port = _free_port()
        self.config_file = directory / "mosquitto.conf"
        self.log_file = directory / "mosquitto.log"
        self._binary = _require("mosquitto")
        self._process: subprocess.Popen[bytes] | None = None
        self.tls_ca_file: Path | None = None
        lines = [
            f"listener {self.port} {self.host}",
            *settings,
            "persistence false",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # as root, mosquitto otherwise drops to user "mosquitto" and fails
        self.config_file.write_text("\n".join(lines) + "\n")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> None:
        """Start mosquitto and return once it accepts TCP connections."""
        if self._process is not None:
            return
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                [self._binary, "-c", str(self.config_file)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + _START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                pytest.fail(f"mosquitto exited at start on {self.address}:\n{self.log_file.read_text()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.01)
        self.stop()
        pytest.fail(f"mosquitto did not listen on {self.address} within {_START_TIMEOUT_SECONDS} s")

    def stop(self) -> None:
        """Terminate mosquitto (SIGTERM, then SIGKILL) and wait for it to exit."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(_STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoService]:
    """An anonymous mosquitto on 127.0.0.1:<free port>, stopped after the test."""
    service = MosquittoService(tmp_path)
    service.start()
    try:
        yield service
    finally:
        service.stop()


MOSQUITTO_USERNAME = "layerfed"
MOSQUITTO_PASSWORD = "correct horse battery staple"


@pytest.fixture
def mosquitto_with_password(tmp_path: Path) -> Iterator[MosquittoService]:
    """A mosquitto that accepts only MOSQUITTO_USERNAME / MOSQUITTO_PASSWORD."""
    password_file = tmp_path / "passwords"
    subprocess.run(
        [
            _require("mosquitto_passwd", "mosquitto"),
            "-b",
            "-c",
            str(password_file),
            MOSQUITTO_USERNAME,
            MOSQUITTO_PASSWORD,
        ],
        check=True,
        capture_output=True,
    )
    service = MosquittoService(tmp_path, ["allow_anonymous false", f"password_file {password_file}"])
    service.start()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def mosquitto_with_tls(tmp_path: Path) -> Iterator[MosquittoService]:
    """An anonymous mosquitto that speaks only TLS; its CA certificate is ``service.tls_ca_file``."""
    ca_file, certificate_file, key_file = _make_certificates(tmp_path, "127.0.0.1")
    service = MosquittoService(
        tmp_path, ["allow_anonymous true", f"certfile {certificate_file}", f"keyfile {key_file}"]
    )
    service.tls_ca_file = ca_file
    service.start()
    try:
        yield service
    finally:
        service.stop()


def make_certificate_authority(directory: Path) -> tuple[Path, Path]:
    """A self-signed CA certificate and its key (EC P-256, valid one day): ``(certificate, key)``."""
    directory.mkdir(parents=True, exist_ok=True)
    certificate, key = directory / "ca.pem", directory / "ca.key"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(certificate), "-days", "1", "-subj", "/CN=layerfed test CA",
    )  # fmt: skip
    return certificate, key


def _make_certificates(directory: Path, ip_address: str) -> tuple[Path, Path, Path]:
    ca_certificate, ca_key = make_certificate_authority(directory / "ca")
    key, request, certificate = directory / "server.key", directory / "server.csr", directory / "server.pem"
    extensions = directory / "server.ext"
    extensions.write_text(f"subjectAltName=IP:{ip_address}\n")
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(request), "-subj", f"/CN={ip_address}",
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(request), "-CA", str(ca_certificate), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(certificate), "-days", "1", "-extfile", str(extensions),
    )  # fmt: skip
    return ca_certificate, certificate, key


def _openssl(*arguments: str) -> None:
    subprocess.run([_require("openssl", "openssl"), *arguments], check=True, capture_output=True)
