"""Independent TensorFlow (Python) reference for the Rust trainer's 10-step equivalence test.

Usage: python scripts/tf_reference_steps.py DIR

Builds AlexNet directly from tf.nn ops (no code shared with the Rust trainer), loads the weights
and batch from DIR, runs `steps` full-batch momentum steps and writes the losses to
DIR/reference.json and the final variables to DIR/final/<layer>.{weights,biases}.npy.
The equivalence test compares the Rust trainer's losses and weights against these.

Inputs in DIR:
  config.json  {"steps": 10, "learning_rate": 0.002, "momentum": 0.9,
                "lrn": {"depth_radius": 5, "bias": 1.0, "alpha": 1e-4, "beta": 0.75}}
  input.npy    float32 [N, H, W, 3], already preprocessed (NHWC)
  labels.npy   int32 [N], class indices (class count = fc8's width)
  <layer>.weights.npy / <layer>.biases.npy for conv1..conv5 (HWIO), fc6..fc8 ([in, out])

Network (float32, no dropout): conv1 11x11/4 VALID, LRN, maxpool 3/2; conv2 5x5/1 SAME, LRN,
maxpool 3/2; conv3..conv5 3x3/1 SAME; maxpool 3/2; flatten (NHWC order); fc6, fc7 relu; fc8 logits.
Loss: mean softmax cross-entropy. Optimiser: TF's ApplyMomentum (no Nesterov), accum starts at 0.
"""
import json
import os
import sys
import time

import numpy as np
import tensorflow as tf

LAYERS = ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]
CONV = {"conv1": (4, "VALID"), "conv2": (1, "SAME"), "conv3": (1, "SAME"),
        "conv4": (1, "SAME"), "conv5": (1, "SAME")}


def forward(params, x, lrn):
    """The network's logits (no dropout): params maps (layer, "weights"|"biases") to tensors."""
    h = x
    for name in LAYERS:
        w, b = params[name, "weights"], params[name, "biases"]
        if name in CONV:
            stride, padding = CONV[name]
            h = tf.nn.relu(tf.nn.conv2d(h, w, strides=stride, padding=padding) + b)
            if name in ("conv1", "conv2"):
                h = tf.nn.local_response_normalization(
                    h, depth_radius=lrn["depth_radius"], bias=lrn["bias"],
                    alpha=lrn["alpha"], beta=lrn["beta"])
            if name in ("conv1", "conv2", "conv5"):
                h = tf.nn.max_pool2d(h, ksize=3, strides=2, padding="VALID")
            if name == "conv5":
                h = tf.reshape(h, [tf.shape(h)[0], -1])
        else:
            h = tf.matmul(h, w) + b
            if name != "fc8":
                h = tf.nn.relu(h)
    return h


def load(path, dtype):
    a = np.load(path)
    if a.dtype != dtype:
        sys.exit(f"{path}: dtype {a.dtype}, expected {np.dtype(dtype).name}")
    return a


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/tf_reference_steps.py DIR")
    d = sys.argv[1]
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    steps, lr, momentum, lrn = cfg["steps"], cfg["learning_rate"], cfg["momentum"], cfg["lrn"]

    x = tf.constant(load(os.path.join(d, "input.npy"), np.float32))
    labels = load(os.path.join(d, "labels.npy"), np.int32)
    params = {}
    for name in LAYERS:
        for kind in ("weights", "biases"):
            value = load(os.path.join(d, f"{name}.{kind}.npy"), np.float32)
            params[name, kind] = tf.Variable(value, name=f"{name}_{kind}")
    variables = list(params.values())
    accums = [tf.Variable(tf.zeros_like(v), name=v.name.split(":")[0] + "_accum") for v in variables]
    classes = params["fc8", "biases"].shape[0]
    onehot = tf.one_hot(labels, classes, dtype=tf.float32)

    def loss_fn(x, onehot):
        logits = forward(params, x, lrn)
        return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=onehot, logits=logits))

    @tf.function
    def step(x, onehot):
        with tf.GradientTape() as tape:
            loss = loss_fn(x, onehot)
        grads = tape.gradient(loss, variables)
        for v, a, g in zip(variables, accums, grads):
            # accum = momentum * accum + grad; var -= lr * accum (the ApplyMomentum kernel itself)
            tf.raw_ops.ResourceApplyMomentum(var=v.handle, accum=a.handle, lr=tf.constant(lr, tf.float32),
                                             grad=g, momentum=tf.constant(momentum, tf.float32),
                                             use_nesterov=False)
        return loss

    step.get_concrete_function(x, onehot)  # trace before timing
    losses, times = [], []
    for i in range(steps):
        t0 = time.perf_counter()
        loss = float(step(x, onehot).numpy())
        times.append(time.perf_counter() - t0)
        losses.append(loss)
        print(f"step {i + 1}/{steps}: loss {loss:.7g} ({times[-1]:.3f} s)", file=sys.stderr)
    final_loss = float(tf.function(loss_fn)(x, onehot).numpy())
    print(f"final loss {final_loss:.7g}", file=sys.stderr)

    os.makedirs(os.path.join(d, "final"), exist_ok=True)
    for (name, kind), v in params.items():
        np.save(os.path.join(d, "final", f"{name}.{kind}.npy"), v.numpy())
    with open(os.path.join(d, "reference.json"), "w") as f:
        json.dump({"losses": losses, "final_loss": final_loss, "tensorflow_version": tf.__version__,
                   "seconds_per_step": float(np.median(times)) if times else None}, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
