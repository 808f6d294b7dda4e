"""The standard Open Inference Protocol client (``tritonclient[grpc]``), run in a process of its own.

tritonclient registers Triton's ``grpc_service.proto`` in protobuf's default descriptor pool; it
defines the same ``inference.*`` symbols as the KServe proto our stubs are generated from
(``finpredict.api.inference``), so the two cannot be imported into one process. A test calls
:func:`triton_infer`, which runs this module (``python -m finpredict.testkit.triton``) with the
request as JSON on stdin and reads back what the client's ``InferResult.as_numpy`` gave.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# numpy dtype of each input datatype the caller may use
_DTYPES = {"FP32": "float32", "FP64": "float64", "INT32": "int32", "INT64": "int64", "BOOL": "bool"}


@dataclass(frozen=True)
class TritonInput:
    """One input tensor: values of a ``[len(values)]`` tensor (str for BYTES, NaN allowed)."""

    name: str
    datatype: str
    values: Sequence[Any]


@dataclass(frozen=True)
class TritonArray:
    """An output as ``InferResult.as_numpy`` returned it (BYTES elements decoded as UTF-8)."""

    dtype: str
    shape: list[int]
    values: list[Any]


@dataclass(frozen=True)
class TritonResult:
    """What the client got: live/metadata answers, outputs, and the response's envelope; or an error."""

    live: bool = False
    metadata_outputs: list[str] = field(default_factory=list)
    outputs: dict[str, TritonArray] = field(default_factory=dict)
    response_id: str = ""
    model_version: str = ""
    raw_output_contents: int = 0
    typed_outputs: int = 0
    error_status: str = ""
    error_message: str = ""


def triton_infer(
    target: str,
    token: str,
    model: str,
    inputs: Sequence[TritonInput],
    request_id: str = "",
    timeout: float = 60.0,
) -> TritonResult:
    """Runs ``InferenceServerClient(target).infer(model, inputs)`` in a fresh interpreter."""
    request = {
        "target": target,
        "token": token,
        "model": model,
        "request_id": request_id,
        "inputs": [{"name": i.name, "datatype": i.datatype, "values": list(i.values)} for i in inputs],
    }
    done = subprocess.run(
        [sys.executable, "-m", __name__],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"tritonclient runner exited {done.returncode}:\n{done.stderr[-4000:]}")
    answer = json.loads(done.stdout)
    outputs = {name: TritonArray(**array) for name, array in answer.pop("outputs", {}).items()}
    return TritonResult(outputs=outputs, **answer)


def _run(request: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import tritonclient.grpc as triton  # type: ignore[import-untyped]
    from tritonclient.utils import InferenceServerException  # type: ignore[import-untyped]

    headers = {"authorization": f"Bearer {request['token']}"}
    client = triton.InferenceServerClient(request["target"])
    try:
        live = bool(client.is_server_live())
        meta = client.get_model_metadata(request["model"], headers=headers)
        tensors = []
        for spec in request["inputs"]:
            if spec["datatype"] == "BYTES":
                data = np.array([v.encode() for v in spec["values"]], dtype=np.object_)
            else:
                data = np.array(spec["values"], dtype=_DTYPES[spec["datatype"]])
            tensor = triton.InferInput(spec["name"], list(data.shape), spec["datatype"])
            tensor.set_data_from_numpy(data)
            tensors.append(tensor)
        try:
            result = client.infer(
                request["model"], tensors, request_id=request["request_id"], headers=headers
            )
        except InferenceServerException as exc:
            return {"live": live, "error_status": str(exc.status()), "error_message": str(exc.message())}
    finally:
        client.close()
    response = result.get_response()
    outputs = {}
    for tensor in response.outputs:
        array = result.as_numpy(tensor.name)
        values = [v.decode() if isinstance(v, bytes) else v for v in array.tolist()]
        outputs[tensor.name] = {"dtype": str(array.dtype), "shape": list(array.shape), "values": values}
    return {
        "live": live,
        "metadata_outputs": [o.name for o in meta.outputs],
        "outputs": outputs,
        "response_id": response.id,
        "model_version": response.model_version,
        "raw_output_contents": len(response.raw_output_contents),
        "typed_outputs": sum(1 for o in response.outputs if o.contents.ByteSize()),
    }


if __name__ == "__main__":
    print(json.dumps(_run(json.load(sys.stdin))))
