"""Classify image files with an exported AlexNet SavedModel from Python TensorFlow 2.

Usage: python scripts/saved_model_predict.py MODEL_DIR IMAGE...

MODEL_DIR is what `alexnet export --out MODEL_DIR` wrote. Every file's raw bytes (JPEG, PNG, GIF
or BMP) go to the model's `serving_default` signature in one batch; the graph decodes, resizes
and normalises them exactly as training did. Prints one JSON object per image, with the fields of
`alexnet predict --json`: path, class, class_id, probability, probabilities (by class id).
The export test runs this to compare Python TensorFlow with the Rust side.
"""
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf  # noqa: E402


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    model_dir, paths = sys.argv[1], sys.argv[2:]
    serve = tf.saved_model.load(model_dir).signatures["serving_default"]
    images = tf.constant([open(p, "rb").read() for p in paths])
    out = serve(images=images)
    rows = zip(paths, out["probabilities"].numpy(), out["class_ids"].numpy(), out["classes"].numpy())
    for path, probs, class_id, name in rows:
        print(json.dumps({
            "path": path,
            "class": name.decode(),
            "class_id": int(class_id),
            "probability": float(probs[class_id]),
            "probabilities": [float(p) for p in probs],
        }))


if __name__ == "__main__":
    main()
