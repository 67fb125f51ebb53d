#!/usr/bin/env python3
"""Writes a .caffemodel with the BVLC AlexNet's layer list, shapes and groups, for tests.

    .venv/bin/python scripts/make_caffemodel.py OUT.caffemodel [--format layer|v1]
        [--fc-width 4096] [--classes 1000] [--rename] [--caffenet-order]
        [--batchnorm-after LAYER] [--drop LAYER]

An independent writer for tests/caffe_import.rs: the message types are declared here with
protobuf's descriptor API (the field numbers of BVLC caffe.proto, src/caffe/proto/caffe.proto)
and serialised by the protobuf package, not by the importer's prost structs.

--format layer: the current NetParameter.layer (LayerParameter, type strings, BlobShape).
--format v1:    the legacy NetParameter.layers (V1LayerParameter, type enums) with blob shapes in
                num/channels/height/width, fc weights as 1 x 1 x out x in, as the 2014 BVLC files.

Values are a deterministic hash of (seed, index), uniform in [-scale, scale), so a reader can
recompute every element: see value() in tests/caffe_import.rs. OUT.manifest.json lists each blob
(layer, index, shape [out, in / groups, kh, kw] / [out, in] / [out], seed, scale = sqrt(num/den)).
"""
import argparse
import json
import math
import sys

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

F = descriptor_pb2.FieldDescriptorProto
OPTIONAL, REPEATED = F.LABEL_OPTIONAL, F.LABEL_REPEATED

# (message, [(field, number, type, label, message/enum type, packed)]), as in caffe.proto.
MESSAGES = [
    ("BlobShape", [("dim", 1, F.TYPE_INT64, REPEATED, None, True)]),
    ("BlobProto", [
        ("shape", 7, F.TYPE_MESSAGE, OPTIONAL, ".caffe.BlobShape", False),
        ("data", 5, F.TYPE_FLOAT, REPEATED, None, True),
        ("num", 1, F.TYPE_INT32, OPTIONAL, None, False),
        ("channels", 2, F.TYPE_INT32, OPTIONAL, None, False),
        ("height", 3, F.TYPE_INT32, OPTIONAL, None, False),
        ("width", 4, F.TYPE_INT32, OPTIONAL, None, False),
    ]),
    ("ConvolutionParameter", [
        ("num_output", 1, F.TYPE_UINT32, OPTIONAL, None, False),
        ("bias_term", 2, F.TYPE_BOOL, OPTIONAL, None, False),
        ("pad", 3, F.TYPE_UINT32, REPEATED, None, False),
        ("kernel_size", 4, F.TYPE_UINT32, REPEATED, None, False),
        ("group", 5, F.TYPE_UINT32, OPTIONAL, None, False),
        ("stride", 6, F.TYPE_UINT32, REPEATED, None, False),
    ]),
    ("InnerProductParameter", [("num_output", 1, F.TYPE_UINT32, OPTIONAL, None, False)]),
    ("LRNParameter", [
        ("local_size", 1, F.TYPE_UINT32, OPTIONAL, None, False),
        ("alpha", 2, F.TYPE_FLOAT, OPTIONAL, None, False),
        ("beta", 3, F.TYPE_FLOAT, OPTIONAL, None, False),
    ]),
    ("PoolingParameter", [
        ("pool", 1, F.TYPE_ENUM, OPTIONAL, ".caffe.PoolMethod", False),
        ("kernel_size", 2, F.TYPE_UINT32, OPTIONAL, None, False),
        ("stride", 3, F.TYPE_UINT32, OPTIONAL, None, False),
    ]),
    ("LayerParameter", [
        ("name", 1, F.TYPE_STRING, OPTIONAL, None, False),
        ("type", 2, F.TYPE_STRING, OPTIONAL, None, False),
        ("bottom", 3, F.TYPE_STRING, REPEATED, None, False),
        ("top", 4, F.TYPE_STRING, REPEATED, None, False),
        ("blobs", 7, F.TYPE_MESSAGE, REPEATED, ".caffe.BlobProto", False),
        ("convolution_param", 106, F.TYPE_MESSAGE, OPTIONAL, ".caffe.ConvolutionParameter", False),
        ("inner_product_param", 117, F.TYPE_MESSAGE, OPTIONAL, ".caffe.InnerProductParameter", False),
        ("lrn_param", 118, F.TYPE_MESSAGE, OPTIONAL, ".caffe.LRNParameter", False),
        ("pooling_param", 121, F.TYPE_MESSAGE, OPTIONAL, ".caffe.PoolingParameter", False),
    ]),
    ("V1LayerParameter", [
        ("bottom", 2, F.TYPE_STRING, REPEATED, None, False),
        ("top", 3, F.TYPE_STRING, REPEATED, None, False),
        ("name", 4, F.TYPE_STRING, OPTIONAL, None, False),
        ("type", 5, F.TYPE_ENUM, OPTIONAL, ".caffe.V1LayerType", False),
        ("blobs", 6, F.TYPE_MESSAGE, REPEATED, ".caffe.BlobProto", False),
        ("convolution_param", 10, F.TYPE_MESSAGE, OPTIONAL, ".caffe.ConvolutionParameter", False),
        ("inner_product_param", 17, F.TYPE_MESSAGE, OPTIONAL, ".caffe.InnerProductParameter", False),
        ("lrn_param", 18, F.TYPE_MESSAGE, OPTIONAL, ".caffe.LRNParameter", False),
        ("pooling_param", 19, F.TYPE_MESSAGE, OPTIONAL, ".caffe.PoolingParameter", False),
    ]),
    ("NetParameter", [
        ("name", 1, F.TYPE_STRING, OPTIONAL, None, False),
        ("layers", 2, F.TYPE_MESSAGE, REPEATED, ".caffe.V1LayerParameter", False),
        ("layer", 100, F.TYPE_MESSAGE, REPEATED, ".caffe.LayerParameter", False),
    ]),
]
# V1LayerParameter.LayerType (nested in caffe.proto; top-level here, which changes no byte).
V1_TYPES = {"Data": 5, "Convolution": 4, "ReLU": 18, "LRN": 15, "Pooling": 17, "InnerProduct": 14,
            "Dropout": 6, "Softmax": 20}
POOL_METHODS = {"MAX": 0, "AVE": 1}


def message_classes():
    fd = descriptor_pb2.FileDescriptorProto(name="caffe_subset.proto", package="caffe", syntax="proto2")
    for name, values in (("V1LayerType", V1_TYPES), ("PoolMethod", POOL_METHODS)):
        enum = fd.enum_type.add(name=name)
        for value_name, number in values.items():
            enum.value.add(name=f"{name.upper()}_{value_name.upper()}", number=number)
    for name, fields in MESSAGES:
        m = fd.message_type.add(name=name)
        for fname, number, ftype, label, type_name, packed in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = type_name
            if packed:
                f.options.packed = True
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"caffe.{name}")) for name, _ in MESSAGES}


def values(seed, n, scale, chunk=1 << 22):
    """splitmix64 of (index + seed * golden), top 24 bits -> uniform [-scale, scale), as float32."""
    out = np.empty(n, dtype="<f4")
    base = np.uint64((seed * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF)
    for start in range(0, n, chunk):
        z = np.arange(start, min(n, start + chunk), dtype=np.uint64) + base
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
        u = (z >> np.uint64(40)).astype(np.float64) / float(1 << 24)
        out[start:start + len(u)] = ((2.0 * u - 1.0) * scale).astype(np.float32)
    return out


def varint(n):
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def fill(blob, data):
    if len(data) < 1 << 20:
        blob.data.extend(data.tolist())
    else:
        # Tens of millions of floats through .extend() take minutes: hand protobuf the packed field
        # (tag 5, length-delimited) to parse instead; it serialises the message itself below.
        raw = data.astype("<f4").tobytes()
        blob.MergeFromString(bytes([5 << 3 | 2]) + varint(len(raw)) + raw)


def alexnet(fc_width, classes):
    """The BVLC AlexNet (models/bvlc_alexnet/deploy.prototxt) with an input layer in front."""
    conv = lambda name, out, k, stride=1, pad=0, group=1: (name, "Convolution", dict(out=out, k=k, stride=stride, pad=pad, group=group))
    fc = lambda name, out: (name, "InnerProduct", dict(out=out))
    lrn = lambda name: (name, "LRN", dict(local_size=5, alpha=1e-4, beta=0.75))
    pool = lambda name: (name, "Pooling", dict(k=3, stride=2))
    plain = lambda name, kind: (name, kind, {})
    return [
        plain("data", "Data"),
        conv("conv1", 96, 11, stride=4), plain("relu1", "ReLU"), lrn("norm1"), pool("pool1"),
        conv("conv2", 256, 5, pad=2, group=2), plain("relu2", "ReLU"), lrn("norm2"), pool("pool2"),
        conv("conv3", 384, 3, pad=1), plain("relu3", "ReLU"),
        conv("conv4", 384, 3, pad=1, group=2), plain("relu4", "ReLU"),
        conv("conv5", 256, 3, pad=1, group=2), plain("relu5", "ReLU"), pool("pool5"),
        fc("fc6", fc_width), plain("relu6", "ReLU"), plain("drop6", "Dropout"),
        fc("fc7", fc_width), plain("relu7", "ReLU"), plain("drop7", "Dropout"),
        fc("fc8", classes), plain("prob", "Softmax"),
    ]


RENAMES = {"conv1": "cv1/11x11_s4", "conv2": "cv2/5x5", "conv3": "cv3/3x3", "conv4": "cv4/3x3",
           "conv5": "cv5/3x3", "fc6": "ip1", "fc7": "ip2", "fc8": "ip3/classifier"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--format", choices=["layer", "v1"], default="layer")
    ap.add_argument("--fc-width", type=int, default=4096)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--rename", action="store_true", help="name the weighted layers cv1.. / ip1.. instead of conv1.. / fc6..")
    ap.add_argument("--batchnorm-after", metavar="LAYER", help="insert a BatchNorm layer (3 blobs) after LAYER (layer format only)")
    ap.add_argument("--drop", metavar="LAYER", action="append", default=[], help="leave LAYER out")
    ap.add_argument("--caffenet-order", action="store_true", help="pool before norm, as bvlc_reference_caffenet")
    args = ap.parse_args()
    v1 = args.format == "v1"
    if v1 and args.batchnorm_after:
        ap.error("--batchnorm-after needs --format layer (V1 has no BatchNorm type)")
    M = message_classes()

    net = M["NetParameter"](name="AlexNet")
    manifest = {"format": args.format, "blobs": []}
    channels, side, seed = 3, 227, 0
    layers = [l for l in alexnet(args.fc_width, args.classes) if l[0] not in args.drop]
    if args.caffenet_order:
        names = [l[0] for l in layers]
        for norm, pool in (("norm1", "pool1"), ("norm2", "pool2")):
            i, j = names.index(norm), names.index(pool)
            layers[i], layers[j] = layers[j], layers[i]
    if args.batchnorm_after:
        at = [l[0] for l in layers].index(args.batchnorm_after) + 1
        layers.insert(at, (args.batchnorm_after + "/bn", "BatchNorm", {}))
    bottom = "data"
    for name, kind, p in layers:
        layer = net.layers.add() if v1 else net.layer.add()
        layer.name = RENAMES.get(name, name) if args.rename else name
        layer.type = V1_TYPES[kind] if v1 else kind
        if kind != "Data":
            layer.bottom.append(bottom)
        layer.top.append(layer.name)
        bottom = layer.name
        blobs = []  # (shape as Caffe holds it, fan-in for the scale)
        if kind == "Convolution":
            c = layer.convolution_param
            c.num_output, c.group = p["out"], p["group"]
            c.kernel_size.append(p["k"])
            c.stride.append(p["stride"])
            c.pad.append(p["pad"])
            in_g = channels // p["group"]
            blobs = [([p["out"], in_g, p["k"], p["k"]], (6, in_g * p["k"] * p["k"])), ([p["out"]], (1, 100))]
            side = (side + 2 * p["pad"] - p["k"]) // p["stride"] + 1
            channels = p["out"]
        elif kind == "InnerProduct":
            layer.inner_product_param.num_output = p["out"]
            inputs = channels * side * side
            blobs = [([p["out"], inputs], (6, inputs)), ([p["out"]], (1, 100))]
            channels, side = p["out"], 1
        elif kind == "LRN":
            layer.lrn_param.local_size, layer.lrn_param.alpha, layer.lrn_param.beta = p["local_size"], p["alpha"], p["beta"]
        elif kind == "Pooling":
            layer.pooling_param.pool, layer.pooling_param.kernel_size, layer.pooling_param.stride = 0, p["k"], p["stride"]
            side = (side - p["k"]) // p["stride"] + 1
        elif kind == "BatchNorm":
            blobs = [([channels], (1, 1)), ([channels], (1, 1)), ([1], (1, 1))]
        for index, (shape, (num, den)) in enumerate(blobs):
            seed += 1
            n = math.prod(shape)
            blob = layer.blobs.add()
            if v1:
                legacy = [1] * (4 - len(shape)) + shape  # fc weights 1 x 1 x out x in, biases 1 x 1 x 1 x out
                blob.num, blob.channels, blob.height, blob.width = legacy
            else:
                blob.shape.dim.extend(shape)
            fill(blob, values(seed, n, math.sqrt(num / den)))
            manifest["blobs"].append({"layer": layer.name, "blob": index, "shape": shape, "seed": seed, "scale": [num, den]})

    with open(args.out, "wb") as f:
        f.write(net.SerializeToString())
    with open(args.out + ".manifest.json", "w") as f:
        json.dump(manifest, f, indent=1)
    print(f"wrote {args.out} ({args.format} format, {len(manifest['blobs'])} blobs)", file=sys.stderr)


if __name__ == "__main__":
    main()
