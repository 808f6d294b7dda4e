# ruff: noqa: N802  (gRPC method names are CamelCase)
"""The KServe Open Inference Protocol v2 (``inference.GRPCInferenceService``) on the gateway.

Model-level calls take the same path as the scoring API (routing, validation, rollout
measurement, prediction log), so an existing inference client can call finpredict unchanged.

- ``ModelMetadata`` lists one input per feature of the version's schema: ``FP64`` (numeric and
  integer features; NaN means missing) or ``BYTES`` (categorical), shape ``[-1]``; plus an
  optional ``entity_id`` ``BYTES`` input used for sticky routing.
- ``ModelInfer`` takes those inputs as typed contents or ``raw_input_contents`` (``FP32``,
  ``FP64``, ``INT32``, ``INT64`` or ``BOOL`` for numbers, ``BYTES`` for categories; shape ``[N]``
  or ``[N, 1]``) and answers ``score`` (FP64), ``decision`` (BYTES: approve/decline),
  ``model_version`` (INT64) and ``variant`` (BYTES), one per row, or only the ``outputs`` asked
  for. Without ``entity_id`` a row is routed by the request id and its index.
- Responses mirror the request, as Triton and KServe servers do (several standard clients read
  only raw outputs): inputs as ``raw_input_contents`` get every output as ``raw_output_contents``,
  typed contents get typed contents. Raw layouts are little-endian; a raw ``BYTES`` element is
  a 4-byte little-endian length followed by its bytes.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any

import grpc
import numpy as np

from finpredict.api.common.v1 import types_pb2
from finpredict.api.inference import grpc_predict_v2_pb2 as pb
from finpredict.api.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from finpredict.gateway.catalog import VersionInfo
from finpredict.gateway.scoring import Application, ScoringCore
from finpredict.gateway.scoring_service import guarded
from finpredict.gateway.validation import RequestError, validate_batch_size, validate_model_name

SERVER_NAME = "finpredict"
SERVER_VERSION = "0.1.0"
ENTITY_INPUT = "entity_id"
Context = grpc.aio.ServicerContext[Any, Any]
# Number datatypes: the typed contents field and the raw layout (numpy dtype, little-endian).
NUMBER_TYPES = {
    "FP32": ("fp32_contents", "<f4"),
    "FP64": ("fp64_contents", "<f8"),
    "INT32": ("int_contents", "<i4"),
    "INT64": ("int64_contents", "<i8"),
    "BOOL": ("bool_contents", "u1"),
}
OUTPUTS = {"score": "FP64", "decision": "BYTES", "model_version": "INT64", "variant": "BYTES"}
Value = float | int | bool | bytes


def _datatype(spec: types_pb2.FeatureSpec) -> str:
    return "BYTES" if spec.type == types_pb2.FEATURE_TYPE_CATEGORICAL else "FP64"


def model_metadata(info: VersionInfo) -> pb.ModelMetadataResponse:
    inputs = [
        pb.ModelMetadataResponse.TensorMetadata(name=s.name, datatype=_datatype(s), shape=[-1])
        for s in info.schema.features
    ]
    inputs.append(pb.ModelMetadataResponse.TensorMetadata(name=ENTITY_INPUT, datatype="BYTES", shape=[-1]))
    return pb.ModelMetadataResponse(
        name=info.model,
        versions=[str(info.version)],
        platform="xgboost_ubj",
        inputs=inputs,
        outputs=[
            pb.ModelMetadataResponse.TensorMetadata(name=name, datatype=datatype, shape=[-1])
            for name, datatype in OUTPUTS.items()
        ],
    )


def _rows_of(tensor: pb.ModelInferRequest.InferInputTensor, where: str) -> int:
    shape = list(tensor.shape)
    if len(shape) not in (1, 2) or shape[1:] not in ([], [1]):
        raise RequestError(f"{where}.shape: {shape} must be [N] or [N, 1]")
    if shape[0] < 0:
        raise RequestError(f"{where}.shape: {shape} has a negative size")
    return int(shape[0])


def _bytes_items(raw: bytes, n: int, where: str) -> list[bytes]:
    """Decodes the OIP raw BYTES layout: each element is a 4-byte little-endian length, then the bytes."""
    out: list[bytes] = []
    pos = 0
    for _ in range(n):
        if pos + 4 > len(raw):
            raise RequestError(f"{where}: raw BYTES content is truncated ({len(out)} of {n} elements)")
        (size,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + size > len(raw):
            raise RequestError(f"{where}: raw BYTES content is truncated ({len(out)} of {n} elements)")
        out.append(raw[pos : pos + size])
        pos += size
    if pos != len(raw):
        raise RequestError(f"{where}: raw BYTES content has {len(raw) - pos} bytes after its {n} elements")
    return out


def _raw_numbers(raw: bytes, datatype: str, n: int, where: str) -> list[Value]:
    dtype = np.dtype(NUMBER_TYPES[datatype][1])
    if len(raw) != n * dtype.itemsize:
        raise RequestError(
            f"{where}: raw content has {len(raw)} bytes, expected {n * dtype.itemsize} for {n} {datatype}"
        )
    values = np.frombuffer(raw, dtype=dtype)
    if datatype == "BOOL":
        if values.size and values.max() > 1:
            raise RequestError(f"{where}: raw BOOL content has a byte other than 0 or 1")
        return [bool(v) for v in values]
    return values.tolist()  # type: ignore[no-any-return]


def _values(
    tensor: pb.ModelInferRequest.InferInputTensor, raw: bytes | None, n: int, where: str
) -> Sequence[Value]:
    dt = tensor.datatype
    if dt != "BYTES" and dt not in NUMBER_TYPES:
        raise RequestError(
            f"{where}.datatype: {dt!r} is not supported ({', '.join([*NUMBER_TYPES, 'BYTES'])})"
        )
    if raw is not None:
        if tensor.contents.ByteSize():
            raise RequestError(f"{where}.contents: must be empty when the input comes in raw_input_contents")
        return _bytes_items(raw, n, where) if dt == "BYTES" else _raw_numbers(raw, dt, n, where)
    values: list[Value] = list(
        getattr(tensor.contents, "bytes_contents" if dt == "BYTES" else NUMBER_TYPES[dt][0])
    )
    if len(values) != n:
        raise RequestError(f"{where}: {len(values)} values for shape [{n}]")
    return values


def applications_from_infer(
    request: pb.ModelInferRequest, info: VersionInfo, max_rows: int
) -> list[Application]:
    """The request's inputs as applications (the field paths in errors are the OIP ones)."""
    if not request.inputs:
        raise RequestError("inputs: required (one tensor per feature)")
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise RequestError(f"raw_input_contents: {len(raw)} entries for {len(request.inputs)} inputs")
    kinds = {s.name: s.type for s in info.schema.features}
    n: int | None = None
    columns: dict[str, Sequence[Any]] = {}
    for i, tensor in enumerate(request.inputs):
        where = f'inputs[{i}] ("{tensor.name}")'
        if tensor.name in columns:
            raise RequestError(f"{where}.name: duplicate input")
        if tensor.name != ENTITY_INPUT and tensor.name not in kinds:
            raise RequestError(f"{where}.name: unknown input (not in the model's schema)")
        if tensor.name == ENTITY_INPUT and tensor.datatype != "BYTES":
            raise RequestError(f"{where}.datatype: {tensor.datatype!r}, the entity ids are BYTES")
        rows = _rows_of(tensor, where)
        if n is None:
            n = rows
            validate_batch_size(n, "inputs[0].shape", max_rows)
        elif rows != n:
            raise RequestError(f"{where}.shape: {rows} rows, but inputs[0] has {n}")
        columns[tensor.name] = _values(tensor, raw[i] if raw else None, rows, where)
    assert n is not None
    entity = columns.pop(ENTITY_INPUT, None)
    apps = []
    for row in range(n):
        features: dict[str, types_pb2.FeatureValue] = {}
        for name, values in columns.items():
            v = values[row]
            if isinstance(v, bytes):
                try:
                    features[name] = types_pb2.FeatureValue(category=v.decode())
                except UnicodeDecodeError:
                    raise RequestError(f'inputs ("{name}")[{row}]: not valid UTF-8') from None
            elif isinstance(v, float) and math.isnan(v):
                features[name] = types_pb2.FeatureValue()  # NaN: missing (validation decides if allowed)
            else:
                features[name] = types_pb2.FeatureValue(number=float(v))
        entity_id = entity[row].decode(errors="replace") if entity is not None else f"{request.id}:{row}"
        apps.append(Application(entity_id, features, f"{request.id}:{row}" if request.id else ""))
    return apps


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """Open Inference Protocol v2 endpoints."""

    def __init__(self, core: ScoringCore, max_request_rows: int = 1000) -> None:
        self._core = core
        self._max_rows = max_request_rows
        self.ready = True

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Context) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.ready)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Context
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=SERVER_VERSION, extensions=[])

    async def _info(self, name: str, version: str) -> VersionInfo:
        validate_model_name(name, "name")
        if version:
            if not (version.isascii() and version.isdigit()) or not 1 <= int(version) < 2**63:
                raise RequestError(f"version: {version!r} is not a version number")
            return await self._core.catalog.version(name, int(version))
        return await self._core.catalog.version(name, await self._core.catalog.production(name))

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Context) -> pb.ModelReadyResponse:
        async def call() -> pb.ModelReadyResponse:
            info = await self._info(request.name, request.version)
            return pb.ModelReadyResponse(ready=self._core.backend.is_available(info.model, info.version))

        return await guarded(context, call)

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Context
    ) -> pb.ModelMetadataResponse:
        async def call() -> pb.ModelMetadataResponse:
            return model_metadata(await self._info(request.name, request.version))

        return await guarded(context, call)

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Context) -> pb.ModelInferResponse:
        async def call() -> pb.ModelInferResponse:
            if request.model_version:
                raise RequestError(
                    "model_version: leave empty; the gateway routes to stable, canary or experiment arms"
                )
            info = await self._info(request.model_name, "")
            apps = applications_from_infer(request, info, self._max_rows)
            names = requested_outputs(request)
            paths = [f"inputs[row {i}]" for i in range(len(apps))]
            results = await self._core.score(request.model_name, apps, paths=paths)
            versions = sorted({r.version for r in results})
            columns: dict[str, list[Value]] = {
                "score": [r.prediction.score for r in results],
                "decision": [
                    b"decline" if r.prediction.score >= r.threshold else b"approve" for r in results
                ],
                "model_version": [r.version for r in results],
                "variant": [(r.route.arm or r.route.variant).encode() for r in results],
            }
            response = pb.ModelInferResponse(
                model_name=request.model_name,
                model_version=str(versions[0]) if len(versions) == 1 else "",
                id=request.id,
            )
            for name in names:
                add_output(response, name, columns[name], raw=bool(request.raw_input_contents))
            return response

        return await guarded(context, call)


def requested_outputs(request: pb.ModelInferRequest) -> list[str]:
    """The outputs the request asks for, in its order; all of them when it names none."""
    names = [o.name for o in request.outputs]
    for i, name in enumerate(names):
        if name not in OUTPUTS:
            raise RequestError(f'outputs[{i}] ("{name}").name: unknown output ({", ".join(OUTPUTS)})')
        if name in names[:i]:
            raise RequestError(f'outputs[{i}] ("{name}").name: duplicate output')
    return names or list(OUTPUTS)


def _raw_bytes(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def add_output(response: pb.ModelInferResponse, name: str, values: list[Value], raw: bool) -> None:
    """Appends output ``name`` as typed contents, or (``raw``) in ``raw_output_contents``."""
    datatype = OUTPUTS[name]
    tensor = response.outputs.add(name=name, datatype=datatype, shape=[len(values)])
    if raw:
        if datatype == "BYTES":
            response.raw_output_contents.append(_raw_bytes(values))  # type: ignore[arg-type]
        else:
            response.raw_output_contents.append(np.asarray(values, dtype=NUMBER_TYPES[datatype][1]).tobytes())
    else:
        field = "bytes_contents" if datatype == "BYTES" else NUMBER_TYPES[datatype][0]
        getattr(tensor.contents, field).extend(values)
