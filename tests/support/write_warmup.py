"""Writes a TensorFlow Serving warmup file with Python TensorFlow and the official protos.

Usage: python write_warmup.py OUT JPEG...

One PredictionLog per JPEG (serving_default on its bytes), then one for predict_tensor on a
zero image, as TFRecords: the file TF Serving replays from assets.extra/tf_serving_warmup_requests.
"""

import sys

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

out, jpegs = sys.argv[1], sys.argv[2:]


def log(signature, key, tensor):
    r = predict_pb2.PredictRequest()
    r.model_spec.name = "alexnet"
    r.model_spec.signature_name = signature
    r.inputs[key].CopyFrom(tensor)
    return prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=r))


with tf.io.TFRecordWriter(out) as w:
    for p in jpegs:
        w.write(log("serving_default", "images", tf.make_tensor_proto([open(p, "rb").read()])).SerializeToString())
    w.write(log("predict_tensor", "input", tf.make_tensor_proto(np.zeros((1, 227, 227, 3), np.float32))).SerializeToString())
