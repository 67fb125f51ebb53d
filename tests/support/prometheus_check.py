"""Sends gRPC Predicts with the official client, then reads the metrics page with Prometheus'
own Python text parser (prometheus_client, pinned in scripts/python-env).

Usage: python prometheus_check.py REST_PORT GRPC_PORT IMAGE

Two Predicts of IMAGE that succeed, one for a version that does not exist (NOT_FOUND); then
prints every sample of /monitoring/prometheus/metrics as JSON lines [name, labels, value].
The caller (tests/serve_ops.rs) checks the counts against the requests it sent.
"""

import json
import sys
import urllib.request

import grpc
import tensorflow as tf
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

rest_port, grpc_port, image = sys.argv[1], sys.argv[2], sys.argv[3]
channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
for version in [None, None, 99]:
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "alexnet"
    if version:
        req.model_spec.version.value = version
    req.inputs["images"].CopyFrom(tf.make_tensor_proto([open(image, "rb").read()]))
    try:
        stub.Predict(req, timeout=60)
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.NOT_FOUND, e

page = urllib.request.urlopen(f"http://127.0.0.1:{rest_port}/monitoring/prometheus/metrics").read().decode()
for family in text_string_to_metric_families(page):
    for s in family.samples:
        print(json.dumps([s.name, s.labels, s.value]))
