"""TensorFlow Serving's official gRPC client against a server, as its users call it.

Usage: python grpc_client.py PORT MODEL_NAME FLOATS_JSON IMAGE...

Prints one JSON object with what the server answered: Predict on serving_default (a
tf.make_tensor_proto of the images' JPEG bytes) and on predict_tensor (a float batch, written
to FLOATS_JSON so the caller can send the same numbers over REST), GetModelMetadata (the
SignatureDefMap as a dict), GetModelStatus, the grpc.health.v1 answer, and the status codes of
requests that must fail. The caller (tests/serve_grpc.rs) judges the numbers.
"""

import json
import sys

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

port, name, floats_path, images = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 64 << 20)])
grpc.channel_ready_future(channel).result(timeout=30)
stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
models = model_service_pb2_grpc.ModelServiceStub(channel)
out = {}


def predict(signature, tensor, version=None):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = name
    req.model_spec.signature_name = signature
    if version is not None:
        req.model_spec.version.value = version
    req.inputs["images" if signature == "serving_default" else "input"].CopyFrom(tensor)
    return stub.Predict(req, timeout=120)


def code(call):
    try:
        call()
        return "OK"
    except grpc.RpcError as e:
        return f"{e.code().name}: {e.details()}"


jpegs = [open(p, "rb").read() for p in images]
r = predict("serving_default", tf.make_tensor_proto(jpegs))
out["default"] = {k: tf.make_ndarray(v).tolist() for k, v in r.outputs.items() if k != "classes"}
out["default"]["classes"] = [c.decode() for c in tf.make_ndarray(r.outputs["classes"]).tolist()]
out["default_spec"] = json_format.MessageToDict(r.model_spec)

floats = np.random.default_rng(7).uniform(-120, 130, size=(2, 227, 227, 3)).astype(np.float32)
with open(floats_path, "w") as f:
    json.dump(floats.tolist(), f)
r = predict("predict_tensor", tf.make_tensor_proto(floats))
out["tensor"] = {k: tf.make_ndarray(v).tolist() for k, v in r.outputs.items()}

req = get_model_metadata_pb2.GetModelMetadataRequest()
req.model_spec.name = name
req.metadata_field.append("signature_def")
r = stub.GetModelMetadata(req, timeout=30)
sigs = get_model_metadata_pb2.SignatureDefMap()
r.metadata["signature_def"].Unpack(sigs)
out["metadata"] = json_format.MessageToDict(sigs)
out["metadata_spec"] = json_format.MessageToDict(r.model_spec)

req = get_model_status_pb2.GetModelStatusRequest()
req.model_spec.name = name
r = models.GetModelStatus(req, timeout=30)
out["status"] = [json_format.MessageToDict(s) for s in r.model_version_status]

# The standard health service, called raw: an empty HealthCheckRequest (service ""), and the
# answer's field 1 is the status (1: SERVING).
check = channel.unary_unary("/grpc.health.v1.Health/Check", request_serializer=lambda b: b, response_deserializer=lambda b: b)
out["health"] = list(check(b"", timeout=30))

not_image = tf.make_tensor_proto([b"not an image"])
out["errors"] = {
    "classify": code(lambda: stub.Classify(classification_pb2.ClassificationRequest(model_spec={"name": name}), timeout=30)),
    "unknown_model": code(lambda: stub.Predict(predict_pb2.PredictRequest(model_spec={"name": "resnet"}, inputs={"images": tf.make_tensor_proto(jpegs[:1])}), timeout=30)),
    "unknown_version": code(lambda: predict("serving_default", tf.make_tensor_proto(jpegs[:1]), version=99)),
    "not_an_image": code(lambda: predict("serving_default", not_image)),
    "float_for_images": code(lambda: predict("serving_default", tf.make_tensor_proto(floats[:1]))),
}
print(json.dumps(out))
