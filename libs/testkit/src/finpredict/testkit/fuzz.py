"""Hypothesis strategies over protobuf messages, generic RPC calls, and the outcome checks of the
fuzz tests, and the harness of a fuzzed server.

The strategies are built from the message descriptors, so every field of every request message
is covered, including ones added later: strings from a list of hostile values (empty, NUL, path
escapes, URIs, right-to-left marks, 200 kB) or any UTF-8 text, integers at their width's edges,
doubles including NaN and the infinities, unknown enum numbers, oversized bytes, maps and repeated
fields. ``hints`` (by field name, ``<name>.key`` / ``<name>.value`` for map entries) mix in
values that exist on the server so that calls get past the first lookup and reach deeper code;
``<MessageName>.<name>`` applies to one message type only (where field types differ).

Budget: ``FINPREDICT_FUZZ_EXAMPLES`` examples per RPC (default 12, what ``task test`` runs; ``task
fuzz`` raises it). Runs are derandomized (the same examples every time, so ``task test`` is not
flaky) unless ``FINPREDICT_FUZZ_RANDOM=1`` (what ``task fuzz`` sets, exploring new inputs each run).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from finpredict.common.auth import bearer_metadata
from finpredict.testkit.process import ServiceProcess

EXAMPLES = int(os.environ.get("FINPREDICT_FUZZ_EXAMPLES", "12"))
RANDOM = os.environ.get("FINPREDICT_FUZZ_RANDOM", "") == "1"
CALL_TIMEOUT_S = 20.0  # every call has a deadline; reaching it on a non-watch RPC counts as a hang
WATCH_TIMEOUT_S = 0.3  # watch streams never end on their own: a live stream ends at this deadline
MAX_DEPTH = 4

# Codes that mean the server broke rather than refused the input.
SERVER_FAULTS = {
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.DATA_LOSS,
    grpc.StatusCode.UNIMPLEMENTED,
}

HUGE_TEXT = "x" * 200_000
NASTY_TEXT = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\n",
    "..",
    "../../../../etc/passwd",
    "/etc/passwd",
    "..\\..\\windows",
    "%2e%2e%2f%2e%2e%2f",
    "file:///etc/passwd",
    "s3://bucket/../../x",
    "https://127.0.0.1:1/x",
    "wandb-artifact://../x",
    "\u202etxt.exe",
    "\ufeffBOM",
    "é",
    "💥" * 20,
    "Ω≈ç√∫",
    "A" * 65,
    "a" * 64,
    "a" * 129,
    HUGE_TEXT,
    "-1",
    "9" * 40,
    "NaN",
    "null",
    "{",
    '{"a": [1, 2, {"b": null}]}',
    "[]",
    "'; DROP TABLE models; --",
    "{model}{reason}{0}",
    "--help",
    "v1:",
    "djE6OTk5OTk5OTk5OTk5OTk5OTk5OTk5",  # "v1:" + a number past int64, as a page token
    "djE6LTE",  # "v1:-1"
    "djE6YWJj",  # "v1:abc"
    "djI6MQ",  # "v2:1"
    "%%%%",
    "=",
]
NASTY_BYTES = [b"", b"\x00", b"\xff\xfe\xfd", bytes(range(256)), b"\x00" * 300_000]
NASTY_FLOATS = [0.0, -0.0, 0.5, 1.0, -1.0, 1e-300, 5e-324, 1e308, -1e308, math.nan, math.inf, -math.inf]


def _ints(lo: int, hi: int) -> st.SearchStrategy[int]:
    edges = [0, 1, -1, 2, 7, 1000, 10**6, 2**31 - 1, -(2**31), 2**53 + 1, lo, hi, lo + 1, hi - 1]
    return st.one_of(st.sampled_from(sorted({e for e in edges if lo <= e <= hi})), st.integers(lo, hi))


TEXT = st.one_of(st.sampled_from(NASTY_TEXT), st.text(st.characters(codec="utf-8"), max_size=40))
BYTES = st.one_of(st.sampled_from(NASTY_BYTES), st.binary(max_size=64))
DOUBLES = st.one_of(st.sampled_from(NASTY_FLOATS), st.floats(allow_nan=True, allow_infinity=True))
FLOATS = st.one_of(st.sampled_from(NASTY_FLOATS), st.floats(width=32))
_C = FieldDescriptor
INTS: dict[int, st.SearchStrategy[int]] = {
    _C.CPPTYPE_INT32: _ints(-(2**31), 2**31 - 1),
    _C.CPPTYPE_INT64: _ints(-(2**63), 2**63 - 1),
    _C.CPPTYPE_UINT32: _ints(0, 2**32 - 1),
    _C.CPPTYPE_UINT64: _ints(0, 2**64 - 1),
}

Hints = Mapping[str, st.SearchStrategy[Any]]


def _scalar(fd: FieldDescriptor) -> st.SearchStrategy[Any]:
    cpp = fd.cpp_type
    if cpp in INTS:
        return INTS[cpp]
    if cpp == _C.CPPTYPE_DOUBLE:
        return DOUBLES
    if cpp == _C.CPPTYPE_FLOAT:
        return FLOATS
    if cpp == _C.CPPTYPE_BOOL:
        return st.booleans()
    if cpp == _C.CPPTYPE_ENUM:
        assert fd.enum_type is not None
        known = [v.number for v in fd.enum_type.values]
        return st.one_of(st.sampled_from(known), _ints(-(2**31), 2**31 - 1))  # proto3 enums are open
    if cpp == _C.CPPTYPE_STRING:
        return BYTES if fd.type == _C.TYPE_BYTES else TEXT
    raise AssertionError(f"unhandled field type of {fd.full_name}")


def _value(
    fd: FieldDescriptor, hints: Hints, depth: int, hint_key: str, owner: str
) -> st.SearchStrategy[Any]:
    generic = messages(fd.message_type, hints, depth + 1) if fd.message_type is not None else _scalar(fd)
    hint = hints.get(f"{owner}.{hint_key}", hints.get(hint_key))
    return st.one_of(hint, generic) if hint is not None else generic


def _fill(draw: st.DrawFn, msg: Message, fd: FieldDescriptor, hints: Hints, depth: int) -> None:
    """Sets field ``fd`` of ``msg`` to drawn values (map entries, list items or one value)."""
    target = getattr(msg, fd.name)
    owner = msg.DESCRIPTOR.name
    entry = fd.message_type
    if entry is not None and entry.GetOptions().map_entry:
        key_fd, val_fd = entry.fields_by_name["key"], entry.fields_by_name["value"]
        for _ in range(draw(st.integers(0, 3))):
            key = draw(_value(key_fd, hints, depth, f"{fd.name}.key", owner))
            value = draw(_value(val_fd, hints, depth, f"{fd.name}.value", owner))
            if val_fd.message_type is not None:
                target[key].CopyFrom(value)
            else:
                target[key] = value
    elif fd.is_repeated:
        items = draw(st.lists(_value(fd, hints, depth, fd.name, owner), max_size=3))
        if fd.message_type is not None:
            for item in items:
                target.add().CopyFrom(item)
        else:
            target.extend(items)
    elif fd.message_type is not None:
        target.CopyFrom(draw(_value(fd, hints, depth, fd.name, owner)))
    else:
        setattr(msg, fd.name, draw(_value(fd, hints, depth, fd.name, owner)))


@st.composite
def messages(draw: st.DrawFn, descriptor: Descriptor, hints: Hints | None = None, depth: int = 0) -> Message:
    """Any message of ``descriptor``: a random subset of its fields, in a random order (so every
    member of a oneof gets its turn), each with hostile or hinted values."""
    hints = hints or {}
    msg: Message = message_factory.GetMessageClass(descriptor)()
    fields = list(descriptor.fields)
    if depth >= MAX_DEPTH:
        fields = [f for f in fields if f.message_type is None]
    for fd in draw(st.permutations(fields)):
        if draw(st.booleans()):
            _fill(draw, msg, fd, hints, depth)
    return msg


@st.composite
def one_field_off(draw: st.DrawFn, base: Message, hints: Hints | None = None, depth: int = 0) -> Message:
    """``base`` (a valid request) with one field, possibly deep inside, replaced by a drawn value:
    so a hostile value gets past the checks of every other field and reaches deep code."""
    hints = hints or {}
    msg: Message = type(base)()
    msg.CopyFrom(base)
    # (the stubs type DESCRIPTOR as either implementation's descriptor; both are Descriptors)
    fields = list(cast(Descriptor, msg.DESCRIPTOR).fields)
    fd = draw(st.sampled_from(fields))
    nested = fd.message_type is not None and not fd.is_repeated and not fd.message_type.GetOptions().map_entry
    if nested and depth < MAX_DEPTH and draw(st.booleans()):
        getattr(msg, fd.name).CopyFrom(draw(one_field_off(getattr(msg, fd.name), hints, depth + 1)))
    else:
        msg.ClearField(fd.name)
        _fill(draw, msg, fd, hints, depth)
    return msg


def timestamps(lo: int, hi: int) -> st.SearchStrategy[Timestamp]:
    """Plausible event times (seconds in [lo, hi]) with valid nanos."""
    return st.builds(Timestamp, seconds=st.integers(lo, hi), nanos=st.integers(0, 999_999_999))


def requests_for(
    method: MethodDescriptor,
    hints: Hints,
    valid: Any | None = None,
    extra: st.SearchStrategy[Any] | None = None,
) -> st.SearchStrategy[Any]:
    """A request for ``method``: one message, or a list of them for client-streaming RPCs; any
    message, or ``valid`` (a valid unary request) with one field off, or ``extra``."""
    one = messages(method.input_type, hints)
    choices = [st.lists(one, max_size=4) if method.client_streaming else one]
    if valid is not None:
        choices.append(one_field_off(valid, hints))
    if extra is not None:
        choices.append(extra)
    return st.one_of(*choices)


# ----- calls and their outcomes ------------------------------------------------------------------


@dataclass
class Outcome:
    code: grpc.StatusCode
    details: str
    responses: int


def _cls(descriptor: Descriptor) -> Any:
    return message_factory.GetMessageClass(descriptor)


def call(
    channel: grpc.Channel,
    service: ServiceDescriptor,
    method: MethodDescriptor,
    request: Any,
    metadata: Sequence[tuple[str, str]] = (),
    timeout: float | None = None,
) -> Outcome:
    """Calls ``method`` with ``request`` (a list for client streams); returns the final status."""
    path = f"/{service.full_name}/{method.name}"
    serialize, deserialize = _cls(method.input_type).SerializeToString, _cls(method.output_type).FromString
    kind = {
        (False, False): channel.unary_unary,
        (True, False): channel.stream_unary,
        (False, True): channel.unary_stream,
        (True, True): channel.stream_stream,
    }[(method.client_streaming, method.server_streaming)]
    rpc: Any = kind(path, request_serializer=serialize, response_deserializer=deserialize)
    if timeout is None:
        timeout = WATCH_TIMEOUT_S if method.name.startswith("Watch") else CALL_TIMEOUT_S
    payload = iter(request) if method.client_streaming else request
    count = 0
    try:
        if method.server_streaming:
            for _ in rpc(payload, metadata=tuple(metadata), timeout=timeout):
                count += 1
        else:
            rpc(payload, metadata=tuple(metadata), timeout=timeout)
            count = 1
    except grpc.RpcError as exc:
        return Outcome(exc.code(), exc.details() or "", count)  # type: ignore[attr-defined]
    return Outcome(grpc.StatusCode.OK, "", count)


def describe(request: Any) -> str:
    text = repr(request)
    return text if len(text) < 2000 else text[:2000] + f"... ({len(text)} characters)"


def check_outcome(method: MethodDescriptor, request: Any, outcome: Outcome, proc: ServiceProcess) -> None:
    """The contract: the server stays up, answers before the deadline, and every refusal is a
    clear status (not UNKNOWN/INTERNAL) with a message."""
    where = f"{method.name}({describe(request)})"
    assert proc.proc.poll() is None, f"{proc.name} died on {where}:\n{proc.logs()[-5000:]}"
    assert outcome.code not in SERVER_FAULTS, f"{where} -> {outcome.code.name}: {outcome.details}"
    if outcome.code == grpc.StatusCode.DEADLINE_EXCEEDED:
        assert method.name.startswith("Watch"), f"{where} hung past its deadline"
        return
    if outcome.code != grpc.StatusCode.OK:
        assert outcome.details.strip(), f"{where} -> {outcome.code.name} without a message"
        assert "Traceback" not in outcome.details, f"{where} leaked a traceback: {outcome.details}"


def fuzz_settings(examples: int | None = None) -> settings:
    # derandomized runs keep no example database; random ones use the default one
    no_database: dict[str, Any] = {} if RANDOM else {"database": None}
    return settings(
        max_examples=examples or EXAMPLES,
        deadline=None,
        derandomize=not RANDOM,
        **no_database,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        print_blob=True,
    )


_SERVER_ERROR_LINES = re.compile(r"Traceback|unhandled error|Exception in callback|Task exception")


def assert_clean_logs(proc: ServiceProcess) -> None:
    """No traceback, unhandled error or orphaned asyncio task error in the service's log."""
    logs = proc.logs()
    bad = [line for line in logs.splitlines() if _SERVER_ERROR_LINES.search(line)]
    assert not bad, f"{proc.name} logged server errors:\n" + "\n".join(bad[:20]) + "\n" + logs[-4000:]


@dataclass
class FuzzTarget:
    """A server under fuzzing: its process, a channel to it and the metadata of every call."""

    proc: ServiceProcess
    channel: grpc.Channel
    metadata: tuple[tuple[str, str], ...]


@contextmanager
def fuzz_target(proc: ServiceProcess, token: str) -> Iterator[FuzzTarget]:
    """Fuzzes ``proc`` with ``token``'s bearer metadata; at the end the server must still be
    serving, have logged no server error, and stop cleanly (exit code 0)."""
    channel = grpc.insecure_channel(proc.target)
    try:
        yield FuzzTarget(proc, channel, bearer_metadata(token))
        assert proc.health() == health_pb2.HealthCheckResponse.SERVING
        assert_clean_logs(proc)
    finally:
        channel.close()
        assert proc.stop(timeout=20) == 0, proc.logs()[-5000:]


def fuzz_rpc(
    target: FuzzTarget,
    service: ServiceDescriptor,
    method_name: str,
    hints: Hints,
    valid: Any | None = None,
    extra: st.SearchStrategy[Any] | None = None,
    examples: int | None = None,
) -> None:
    """Sends ``method_name`` generated requests (see :func:`requests_for`) and checks the
    contract of :func:`check_outcome` on each."""
    method = service.methods_by_name[method_name]

    @fuzz_settings(examples)
    @given(requests_for(method, hints, valid, extra))
    def run(request: Any) -> None:
        outcome = call(target.channel, service, method, request, target.metadata)
        check_outcome(method, request, outcome, target.proc)

    run()


def rpc_names(service: ServiceDescriptor) -> list[str]:
    return [m.name for m in service.methods]
