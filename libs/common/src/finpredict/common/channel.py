"""Outgoing gRPC channels with trace propagation, message limits and optional (m)TLS."""

from __future__ import annotations

from pathlib import Path

import grpc

from finpredict.common.interceptors import client_interceptors


def create_channel(
    target: str,
    *,
    tls_ca_file: Path | None = None,
    tls_cert_file: Path | None = None,
    tls_key_file: Path | None = None,
    max_message_bytes: int = 16 * 1024 * 1024,
    propagate: bool = True,
) -> grpc.aio.Channel:
    """An aio channel to ``target``; TLS when a CA is given, mutual TLS when a client key pair is too.

    With ``propagate`` its calls carry the caller's trace context and request id (client
    interceptors); without, the caller adds them
    (:func:`~finpredict.common.interceptors.outgoing_metadata`): grpc.aio runs an intercepted call
    through extra tasks, a cost a hot path can skip."""
    options = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
    ]
    interceptors = client_interceptors() if propagate else None
    if tls_ca_file is None:
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    creds = grpc.ssl_channel_credentials(
        root_certificates=tls_ca_file.read_bytes(),
        private_key=tls_key_file.read_bytes() if tls_key_file else None,
        certificate_chain=tls_cert_file.read_bytes() if tls_cert_file else None,
    )
    return grpc.aio.secure_channel(target, creds, options=options, interceptors=interceptors)
