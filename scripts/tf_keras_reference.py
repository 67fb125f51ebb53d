"""Independent reference for the fine-tuning recipes: the same AlexNet built from tf.nn ops,
trained for a few full-batch steps by Keras's own optimizers, schedule and loss.

Usage: python scripts/tf_keras_reference.py DIR

Inputs in DIR (written by tests/recipes.rs):
  config.json  {"steps": 10, "optimizer": "nesterov|adam|adamw", "learning_rate": 0.01,
                "momentum": 0.9, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-7,
                "weight_decay": 0.0, "warmup_steps": 2, "decay_steps": 8, "lr_min": 0.0,
                "label_smoothing": 0.1, "lr_mults": {"fc8": 10.0, "conv1": 0.0},
                "class_weights": [1.0, 2.0, 0.5] or null,
                "lrn": {"depth_radius": 5, "bias": 1.0, "alpha": 1e-4, "beta": 0.75}}
  input.npy    float32 [N, H, W, 3], already preprocessed (NHWC)
  labels.npy   int32 [N]
  <layer>.weights.npy / <layer>.biases.npy for conv1..conv5 (HWIO), fc6..fc8 ([in, out])

What Keras does, and the trainer must match:
  - the rate: keras.optimizers.schedules.CosineDecay(0, decay_steps, alpha=lr_min/lr,
    warmup_target=lr, warmup_steps), one step per update; a layer at multiplier M gets its own
    optimizer with the schedule times M; a layer at 0 is not trainable;
  - the optimizers: keras.optimizers.SGD(momentum, nesterov=True), Adam, AdamW (weight decay
    on the weights only: exclude_from_weight_decay(var_names=["biases"]));
  - the loss: keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing) with the
    class weights as sample weights.
Writes the loss of each step (before its update) to DIR/reference.json and the final variables
to DIR/final/<layer>.{weights,biases}.npy. Dropout is off.
"""
import json
import os
import sys

import numpy as np
import tensorflow as tf
import keras

# The same network as the momentum reference (this script's folder is on sys.path).
from tf_reference_steps import LAYERS, forward


class Scaled(keras.optimizers.schedules.LearningRateSchedule):
    """A schedule times a layer's multiplier."""

    def __init__(self, schedule, mult):
        self.schedule, self.mult = schedule, mult

    def __call__(self, step):
        return self.schedule(step) * self.mult


def optimizer(cfg, rate):
    kind = cfg["optimizer"]
    if kind == "nesterov":
        return keras.optimizers.SGD(learning_rate=rate, momentum=cfg["momentum"], nesterov=True)
    common = dict(learning_rate=rate, beta_1=cfg["beta1"], beta_2=cfg["beta2"], epsilon=cfg["epsilon"])
    if kind == "adam":
        return keras.optimizers.Adam(**common)
    if kind == "adamw":
        opt = keras.optimizers.AdamW(weight_decay=cfg["weight_decay"], **common)
        opt.exclude_from_weight_decay(var_names=["biases"])
        return opt
    sys.exit(f"unknown optimizer {kind}")


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/tf_keras_reference.py DIR")
    d = sys.argv[1]
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    x = tf.constant(np.load(os.path.join(d, "input.npy")))
    labels = np.load(os.path.join(d, "labels.npy"))
    params = {(n, k): tf.Variable(np.load(os.path.join(d, f"{n}.{k}.npy")), name=f"{n}_{k}")
              for n in LAYERS for k in ("weights", "biases")}
    classes = params["fc8", "biases"].shape[0]
    onehot = tf.one_hot(labels, classes)
    weights = None if cfg["class_weights"] is None else tf.gather(tf.constant(cfg["class_weights"], tf.float32), labels)
    loss_fn = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=cfg["label_smoothing"])
    lr = cfg["learning_rate"]
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, cfg["decay_steps"], alpha=cfg["lr_min"] / lr, warmup_target=lr, warmup_steps=cfg["warmup_steps"])

    # One optimizer per rate multiplier; multiplier 0: not trained.
    groups = {}
    for name in LAYERS:
        mult = cfg["lr_mults"].get(name, 1.0)
        if mult != 0.0:
            groups.setdefault(mult, []).extend([params[name, "weights"], params[name, "biases"]])
    optimizers = {m: optimizer(cfg, schedule if m == 1.0 else Scaled(schedule, m)) for m in groups}

    losses = []
    for _ in range(cfg["steps"]):
        with tf.GradientTape() as tape:
            loss = loss_fn(onehot, forward(params, x, cfg["lrn"]), sample_weight=weights)
        trained = [v for vs in groups.values() for v in vs]
        grads = dict(zip([id(v) for v in trained], tape.gradient(loss, trained)))
        for m, vs in groups.items():
            optimizers[m].apply_gradients([(grads[id(v)], v) for v in vs])
        losses.append(float(loss))

    os.makedirs(os.path.join(d, "final"), exist_ok=True)
    for (name, kind), v in params.items():
        np.save(os.path.join(d, "final", f"{name}.{kind}.npy"), v.numpy())
    with open(os.path.join(d, "reference.json"), "w") as f:
        json.dump({"losses": losses, "keras": keras.__version__, "tensorflow": tf.__version__}, f)


if __name__ == "__main__":
    main()
