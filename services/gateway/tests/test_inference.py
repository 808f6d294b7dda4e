"""The Open Inference Protocol on a real gateway and registry, scoring with an in-process stand-in
model server (no Ray): the standard Python client (``tritonclient[grpc]``, in a process of its
own: see finpredict.testkit.triton), raw and typed layouts of every supported datatype,
responses that mirror the request, malformed inputs.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import pytest

from finpredict.api.common.v1 import types_pb2
from finpredict.api.inference import grpc_predict_v2_pb2 as oip
from finpredict.api.inference import grpc_predict_v2_pb2_grpc as oip_grpc
from finpredict.common.auth import bearer_metadata
from finpredict.testkit.cli import READER_TOKEN, CliStack, FakeModelServer, cli_stack, fake_model_server
from finpredict.testkit.models import SMALL_SCHEMA, train_small_model
from finpredict.testkit.triton import TritonInput, triton_infer

CLIENT = bearer_metadata(READER_TOKEN)
ROWS: list[dict[str, Any]] = [
    {"annual_revenue": 120000.0, "debt": 30000.0, "owner_income": None, "years_in_business": 4,
     "late_payments_12m": 1, "sector": "retail"},
    {"annual_revenue": 50000.0, "debt": 90000.0, "owner_income": 40000.5, "years_in_business": 12,
     "late_payments_12m": 0, "sector": "tech"},
    {"annual_revenue": 2500000.0, "debt": 1000.0, "owner_income": 150000.0, "years_in_business": 30,
     "late_payments_12m": 3, "sector": "construction"},
]  # fmt: skip
ENTITIES = [b"cust-a", b"cust-b", b"cust-\xc3\xa9"]


@dataclass
class Gateway:
    stack: CliStack
    fake: FakeModelServer
    model: str
    version: int


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    trained = (train_small_model(seed=1, rounds=5), train_small_model(seed=2, rounds=6))
    with (
        fake_model_server() as (target, fake),
        cli_stack(tmp_path_factory.mktemp("oip"), trained, target) as stack,
    ):
        model = stack.model("oip")
        yield Gateway(stack, fake, model, stack.admin.production(model))


@pytest.fixture(autouse=True)
def fresh_model_server(gw: Gateway) -> None:
    """Each test sees only the rows its own requests sent to the model server."""
    gw.fake.requests.clear()


@pytest.fixture
def stub(gw: Gateway) -> Iterator[oip_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(gw.stack.target) as channel:
        yield oip_grpc.GRPCInferenceServiceStub(channel)


def expected_features(row: dict[str, Any]) -> dict[str, types_pb2.FeatureValue]:
    """What the model server must receive for ``row``: numbers, categories, missing for None."""
    out = {}
    for name, value in row.items():
        if value is None:
            out[name] = types_pb2.FeatureValue()
        elif isinstance(value, str):
            out[name] = types_pb2.FeatureValue(category=value)
        else:
            out[name] = types_pb2.FeatureValue(number=float(value))
    return out


def expected_scores(rows: Sequence[dict[str, Any]]) -> list[float]:
    return [FakeModelServer.score(expected_features(r)) for r in rows]


def raw_bytes_tensor(items: Sequence[bytes]) -> bytes:
    """The OIP raw BYTES layout, written independently of the gateway's decoder."""
    return b"".join(len(item).to_bytes(4, "little") + item for item in items)


def column(name: str, rows: Sequence[dict[str, Any]]) -> list[Any]:
    return [math.nan if r[name] is None else r[name] for r in rows]


# ----- the standard client ---------------------------------------------------------------------


def test_standard_client_gets_every_output_as_a_numpy_array(gw: Gateway) -> None:
    datatypes = {"categorical": "BYTES", "integer": "INT64", "numeric": "FP64"}
    inputs = [
        TritonInput(spec.name, datatypes[spec.kind], column(spec.name, ROWS))
        for spec in SMALL_SCHEMA.features
    ]
    inputs.append(TritonInput("entity_id", "BYTES", [e.decode() for e in ENTITIES]))
    result = triton_infer(gw.stack.target, READER_TOKEN, gw.model, inputs, request_id="tc-1")
    assert not result.error_message, result
    assert result.live
    assert result.metadata_outputs == ["score", "decision", "model_version", "variant"]
    scores = result.outputs["score"]
    assert (scores.dtype, scores.shape) == ("float64", [3])
    assert scores.values == pytest.approx(expected_scores(ROWS))
    decisions = result.outputs["decision"]
    assert (decisions.dtype, decisions.shape) == ("object", [3])
    assert decisions.values == [
        "decline" if s >= FakeModelServer.THRESHOLD else "approve" for s in scores.values
    ]
    assert set(decisions.values) == {"approve", "decline"}  # both branches exercised
    versions = result.outputs["model_version"]
    assert (versions.dtype, versions.values) == ("int64", [gw.version] * 3)
    assert result.outputs["variant"].values == ["stable"] * 3
    assert (result.response_id, result.model_version) == ("tc-1", str(gw.version))
    # the client sent raw inputs: every output came back raw, none as typed contents
    assert (result.raw_output_contents, result.typed_outputs) == (4, 0)
    assert gw.fake.rows() == [expected_features(r) for r in ROWS]


def test_standard_client_gets_invalid_argument_naming_the_input(gw: Gateway) -> None:
    inputs = [TritonInput("debt", "FP64", [1.0]), TritonInput("sector", "FP64", [2.0, 3.0])]
    result = triton_infer(gw.stack.target, READER_TOKEN, gw.model, inputs)
    assert result.error_status == "StatusCode.INVALID_ARGUMENT", result
    assert 'inputs[1] ("sector").shape: 2 rows, but inputs[0] has 1' in result.error_message
    assert gw.fake.requests == []


# ----- raw and typed layouts -------------------------------------------------------------------

# feature -> (datatype, how the test encodes one column raw, how it fills typed contents)
RAW_NUMBERS = {"FP32": "<f4", "FP64": "<f8", "INT32": "<i4", "INT64": "<i8", "BOOL": "u1"}
TYPED_FIELD = {
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "BOOL": "bool_contents",
    "BYTES": "bytes_contents",
}
# Each datatype on a feature whose values it can carry (BOOL: late payments 1/0/1 -> True/False/True).
DATATYPES = {
    "annual_revenue": "FP32",
    "debt": "FP64",
    "owner_income": "FP64",
    "years_in_business": "INT32",
    "late_payments_12m": "BOOL",
    "sector": "BYTES",
}
BOOL_ROWS = [{**r, "late_payments_12m": int(bool(r["late_payments_12m"]))} for r in ROWS]


def tensor_values(name: str, datatype: str, rows: Sequence[dict[str, Any]]) -> list[Any]:
    values = column(name, rows)
    if datatype == "BYTES":
        return [v.encode() for v in values]
    if datatype == "BOOL":
        return [bool(v) for v in values]
    return values


def infer_request(
    raw: bool, rows: Sequence[dict[str, Any]] = BOOL_ROWS, shape_n1: bool = True, **kw: Any
) -> oip.ModelInferRequest:
    """Every feature in the datatype of DATATYPES plus entity ids, as raw or typed contents."""
    request = oip.ModelInferRequest(id="layouts", **kw)
    columns = [(name, dt, tensor_values(name, dt, rows)) for name, dt in DATATYPES.items()]
    columns.append(("entity_id", "BYTES", ENTITIES[: len(rows)]))
    for name, datatype, values in columns:
        shape = [len(rows), 1] if shape_n1 and name == "debt" else [len(rows)]
        tensor = request.inputs.add(name=name, datatype=datatype, shape=shape)
        if not raw:
            getattr(tensor.contents, TYPED_FIELD[datatype]).extend(values)
        elif datatype == "BYTES":
            request.raw_input_contents.append(raw_bytes_tensor(values))
        else:
            request.raw_input_contents.append(np.asarray(values, dtype=RAW_NUMBERS[datatype]).tobytes())
    return request


def raw_outputs(response: oip.ModelInferResponse) -> dict[str, list[Any]]:
    """The raw outputs decoded independently: numbers little-endian, BYTES length-prefixed."""
    out: dict[str, list[Any]] = {}
    for tensor, content in zip(response.outputs, response.raw_output_contents, strict=True):
        if tensor.datatype == "BYTES":
            items, pos = [], 0
            while pos < len(content):
                (size,) = struct.unpack_from("<I", content, pos)
                items.append(content[pos + 4 : pos + 4 + size])
                pos += 4 + size
            out[tensor.name] = items
        else:
            out[tensor.name] = np.frombuffer(content, dtype=RAW_NUMBERS[tensor.datatype]).tolist()
        assert list(tensor.shape) == [len(out[tensor.name])], tensor
    return out


def test_raw_inputs_of_every_datatype_get_raw_outputs_in_their_datatypes(
    gw: Gateway, stub: oip_grpc.GRPCInferenceServiceStub
) -> None:
    response = stub.ModelInfer(infer_request(raw=True, model_name=gw.model), metadata=CLIENT, timeout=30)
    assert gw.fake.rows() == [expected_features(r) for r in BOOL_ROWS]
    assert {o.name: o.datatype for o in response.outputs} == {
        "score": "FP64",
        "decision": "BYTES",
        "model_version": "INT64",
        "variant": "BYTES",
    }
    assert all(o.contents.ByteSize() == 0 for o in response.outputs)
    outputs = raw_outputs(response)
    scores = expected_scores(BOOL_ROWS)
    assert outputs["score"] == pytest.approx(scores)
    assert outputs["decision"] == [b"decline" if s >= 0.5 else b"approve" for s in scores]
    assert outputs["model_version"] == [gw.version] * 3
    assert outputs["variant"] == [b"stable"] * 3


def test_typed_inputs_get_typed_outputs(gw: Gateway, stub: oip_grpc.GRPCInferenceServiceStub) -> None:
    response = stub.ModelInfer(infer_request(raw=False, model_name=gw.model), metadata=CLIENT, timeout=30)
    assert gw.fake.rows() == [expected_features(r) for r in BOOL_ROWS]
    assert not response.raw_output_contents
    outputs = {o.name: o for o in response.outputs}
    scores = expected_scores(BOOL_ROWS)
    assert list(outputs["score"].contents.fp64_contents) == pytest.approx(scores)
    assert list(outputs["decision"].contents.bytes_contents) == [
        b"decline" if s >= 0.5 else b"approve" for s in scores
    ]
    assert list(outputs["model_version"].contents.int64_contents) == [gw.version] * 3
    assert list(outputs["variant"].contents.bytes_contents) == [b"stable"] * 3
    assert all(list(o.shape) == [3] for o in response.outputs)


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "typed"])
def test_only_the_requested_outputs_come_back_in_the_requested_order(
    gw: Gateway, stub: oip_grpc.GRPCInferenceServiceStub, raw: bool
) -> None:
    wanted = [oip.ModelInferRequest.InferRequestedOutputTensor(name=n) for n in ("variant", "score")]
    request = infer_request(raw=raw, model_name=gw.model, outputs=wanted)
    response = stub.ModelInfer(request, metadata=CLIENT, timeout=30)
    assert [o.name for o in response.outputs] == ["variant", "score"]
    assert len(response.raw_output_contents) == (2 if raw else 0)


# ----- malformed requests ----------------------------------------------------------------------


def _replace_raw(index: int, content: bytes) -> Any:
    def edit(request: oip.ModelInferRequest) -> None:
        request.raw_input_contents[index] = content

    return edit


def _set(attr: str, index: int, value: Any) -> Any:
    def edit(request: oip.ModelInferRequest) -> None:
        tensor = request.inputs[index]
        if attr == "shape":
            del tensor.shape[:]
            tensor.shape.extend(value)
        else:
            setattr(tensor, attr, value)

    return edit


def _add_typed_contents(request: oip.ModelInferRequest) -> None:
    request.inputs[1].contents.fp64_contents.extend([1.0, 2.0, 3.0])


def _drop_last_raw(request: oip.ModelInferRequest) -> None:
    del request.raw_input_contents[-1]


def _ask_unknown_output(request: oip.ModelInferRequest) -> None:
    request.outputs.add(name="probability")


# names index: 0 annual_revenue FP32, 1 debt FP64 [3, 1], 2 owner_income, 3 years INT32, 4 late BOOL,
# 5 sector BYTES, 6 entity_id BYTES
MALFORMED = {
    "fp64 short": (
        _replace_raw(1, b"\x00" * 23),
        'inputs[1] ("debt"): raw content has 23 bytes, expected 24',
    ),
    "fp32 long": (_replace_raw(0, b"\x00" * 13), 'inputs[0] ("annual_revenue"): raw content has 13 bytes'),
    "int32 as int64": (
        _replace_raw(3, np.array([1, 2, 3], dtype="<i8").tobytes()),
        'inputs[3] ("years_in_business"): raw content has 24 bytes, expected 12 for 3 INT32',
    ),
    "bool not 0 or 1": (
        _replace_raw(4, b"\x01\x02\x00"),
        'inputs[4] ("late_payments_12m"): raw BOOL content',
    ),
    "bytes truncated": (
        _replace_raw(5, raw_bytes_tensor([b"retail", b"tech"]) + b"\x09\x00\x00\x00constr"),
        'inputs[5] ("sector"): raw BYTES content is truncated (2 of 3 elements)',
    ),
    "bytes short prefix": (
        _replace_raw(6, raw_bytes_tensor([b"a", b"b"]) + b"\x01\x00"),
        'inputs[6] ("entity_id"): raw BYTES content is truncated',
    ),
    "bytes trailing": (
        _replace_raw(5, raw_bytes_tensor([b"retail", b"tech", b"tech"]) + b"xx"),
        'inputs[5] ("sector"): raw BYTES content has 2 bytes after its 3 elements',
    ),
    "raw and typed": (_add_typed_contents, 'inputs[1] ("debt").contents: must be empty'),
    "raw count": (_drop_last_raw, "raw_input_contents: 6 entries for 7 inputs"),
    "shape two columns": (_set("shape", 1, [3, 2]), 'inputs[1] ("debt").shape: [3, 2] must be [N] or [N, 1]'),
    "shape rank 3": (_set("shape", 0, [3, 1, 1]), 'inputs[0] ("annual_revenue").shape: [3, 1, 1] must be'),
    "shape negative": (
        _set("shape", 0, [-3]),
        'inputs[0] ("annual_revenue").shape: [-3] has a negative size',
    ),
    "shape rows differ": (
        _set("shape", 2, [2]),
        'inputs[2] ("owner_income").shape: 2 rows, but inputs[0] has 3',
    ),
    "unsupported datatype": (
        _set("datatype", 1, "FP16"),
        "inputs[1] (\"debt\").datatype: 'FP16' is not supported",
    ),
    "entity ids as numbers": (_set("datatype", 6, "INT64"), "inputs[6] (\"entity_id\").datatype: 'INT64'"),
    "unknown output": (_ask_unknown_output, 'outputs[0] ("probability").name: unknown output'),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_raw_requests_are_invalid_argument_naming_the_input(
    gw: Gateway, stub: oip_grpc.GRPCInferenceServiceStub, case: str
) -> None:
    edit, needle = MALFORMED[case]
    request = infer_request(raw=True, model_name=gw.model)
    edit(request)
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(request, metadata=CLIENT, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value
    assert needle in err.value.details(), err.value.details()
    assert gw.fake.requests == []  # refused before any scoring


def test_typed_contents_must_match_the_shape(gw: Gateway, stub: oip_grpc.GRPCInferenceServiceStub) -> None:
    request = infer_request(raw=False, model_name=gw.model)
    request.inputs[3].contents.int_contents.append(7)
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(request, metadata=CLIENT, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert 'inputs[3] ("years_in_business"): 4 values for shape [3]' in err.value.details()
