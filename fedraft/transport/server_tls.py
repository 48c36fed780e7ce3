"""Server TLS whose certificate and trusted client CAs can change while the server runs (decision 0015).

grpc asks the fetcher for a configuration before each new handshake; it answers with a new one only
after `update`. Connections already established keep the certificate they were made with, so a
certificate or CA rotation needs no restart and drops no connection.
"""

from __future__ import annotations

import threading

import grpc

__all__ = ["ServerTls"]


class ServerTls:
    def __init__(self, key_pem: bytes, cert_pem: bytes, ca_pem: bytes | None = None, *,
                 require_client_auth: bool = False) -> None:
        self._lock = threading.Lock()
        self._pair = (key_pem, cert_pem)
        self._ca = ca_pem
        self._require_client_auth = require_client_auth
        self._version = 0
        self._served = 0

    def _config(self) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration([self._pair], root_certificates=self._ca)

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        with self._lock:
            if self._served == self._version:
                return None
            self._served = self._version
            return self._config()

    def credentials(self) -> grpc.ServerCredentials:
        with self._lock:
            initial = self._config()
        # grpc documents None from the fetcher as "no change"; its stubs do not allow it.
        return grpc.dynamic_ssl_server_credentials(initial, self._fetch,  # type: ignore[arg-type]
                                                   require_client_authentication=self._require_client_auth)

    def update(self, key_pem: bytes, cert_pem: bytes, ca_pem: bytes | None = None) -> None:
        """New handshakes use this certificate (and trust these client CAs) from now on."""
        with self._lock:
            self._pair = (key_pem, cert_pem)
            self._ca = ca_pem
            self._version += 1
