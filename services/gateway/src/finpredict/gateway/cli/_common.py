"""What every gateway command shares: the connection (options, else the client settings), the
consoles, the exit codes, errors with hints, and the channel."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any, NoReturn

import grpc
import typer
from google.protobuf import json_format
from google.protobuf.message import Message
from rich.console import Console
from rich.markup import escape

from finpredict.api.rollout.v1 import rollout_pb2_grpc
from finpredict.common import addresses
from finpredict.common.auth import bearer_metadata
from finpredict.common.config import ClientSettings, ConfigError, env_var_name, load_settings

TARGET_ENV = env_var_name(ClientSettings, "gateway_target")
TOKEN_ENV = env_var_name(ClientSettings, "token")

EXIT_USAGE = 2
EXIT_NOT_PROMOTED = 3
EXIT_TIMEOUT = 4

out = Console()
err = Console(stderr=True)


@dataclass
class Conn:
    """Where the gateway is and the caller's bearer token."""

    target: str
    token: str


TargetOption = Annotated[
    str | None,
    typer.Option(
        "--target",
        help=f"Gateway address host:port (default: {TARGET_ENV}, else {addresses.GATEWAY_ADDRESS}).",
        show_default=False,
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option("--token", help=f"Bearer token (default: {TOKEN_ENV}).", show_default=False),
]


def connection(target: str | None, token: str | None) -> Conn:
    """The gateway address and token: the options, else the client settings (the environment)."""
    try:
        settings = load_settings(ClientSettings)
    except ConfigError as exc:
        usage(str(exc))
    return Conn(
        settings.gateway_target if target is None else target,
        settings.token.get_secret_value() if token is None else token,
    )


# ----- errors ----------------------------------------------------------------------------------


def usage(message: str) -> NoReturn:
    """Bad usage or bad input: nothing was sent to the gateway."""
    err.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    raise typer.Exit(EXIT_USAGE)


def hint_for(code: grpc.StatusCode, details: str, target: str) -> str | None:
    d = details.lower()
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return f"set a valid gateway token with --token or {TOKEN_ENV}"
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return (
            "rollout, shadow and experiment changes need a token with the admin role "
            "(status, list and scoring need reader)"
        )
    if code == grpc.StatusCode.UNAVAILABLE:
        if "model server" in d or "circuit" in d:
            return (
                "the gateway answered, but its model server did not: is the model server running "
                "(the gateway's FINPREDICT_GATEWAY_MODEL_SERVER_TARGET)? Retry once it is up."
            )
        if "registry" in d:
            return (
                "the gateway answered, but cannot reach the registry "
                "(the gateway's FINPREDICT_GATEWAY_REGISTRY_TARGET)"
            )
        if "monitor" in d:
            return (
                "the gateway answered, but cannot reach its monitor "
                "(the gateway's FINPREDICT_GATEWAY_MONITOR_TARGET); retry once it is up"
            )
        return f"is the gateway running at {target}? (--target or {TARGET_ENV})"
    if code == grpc.StatusCode.NOT_FOUND:
        if "rollout" in d:
            return "list rollouts with `finpredict rollout list`"
        if "experiment" in d:
            return "the experiment is not running (or the id is wrong)"
        return "check the model name and version with `finpredict models list MODEL`"
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        if "production" in d:
            return "the model needs a production version first: `finpredict models promote MODEL VERSION`"
        if "experiment" in d:
            return "stop the experiment first: `finpredict rollout experiment stop --id ID`"
        if "active rollout" in d:
            return "see it with `finpredict rollout status --model MODEL`; finish or abort it first"
        if "ended" in d or "only a running" in d or "cannot" in d:
            return "the rollout is not in a state that allows this: `finpredict rollout status --id ID`"
        return None
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return "the gateway did not answer in time: retry, or check its logs"
    return None


def rpc_error(exc: grpc.RpcError, target: str, hint: str | None = None) -> NoReturn:
    code: grpc.StatusCode = exc.code()  # type: ignore[attr-defined]
    details: str = exc.details() or ""  # type: ignore[attr-defined]
    err.print(f"[red]error:[/red] {code.name}: {escape(details)}", soft_wrap=True)
    hint = hint or hint_for(code, details, target)
    if hint:
        err.print(f"hint: {escape(hint)}", soft_wrap=True)
    raise typer.Exit(1)


@contextmanager
def open_channel(conn: Conn) -> Iterator[tuple[grpc.Channel, tuple[tuple[str, str], ...]]]:
    """A channel to the gateway and the call metadata; RPC errors end the command with a hint."""
    if not conn.token:
        usage(f"no token: pass --token or set {TOKEN_ENV}")
    channel = grpc.insecure_channel(conn.target)
    try:
        yield channel, bearer_metadata(conn.token)
    except grpc.RpcError as exc:
        rpc_error(exc, conn.target)
    finally:
        channel.close()


@contextmanager
def rollout_service(ctx: typer.Context) -> Iterator[tuple[rollout_pb2_grpc.RolloutServiceStub, Any]]:
    """The RolloutService of the ``rollout`` group's connection and the call metadata."""
    with open_channel(ctx.obj) as (channel, md):
        yield rollout_pb2_grpc.RolloutServiceStub(channel), md


# ----- JSON ------------------------------------------------------------------------------------


def to_json(msg: Message) -> str:
    return json.dumps(to_dict(msg), indent=2)


def to_dict(msg: Message) -> dict[str, Any]:
    return json_format.MessageToDict(
        msg,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
        unquote_int64_if_possible=True,
    )
