"""The Python route for scripts/load-test: tf.saved_model.load behind a minimal threading HTTP
server that answers TensorFlow Serving's row-format :predict JSON for the serving_default
signature ({"instances": [{"b64": ...}]} -> {"predictions": [{probabilities, class_ids, classes}]}).

    python scripts/python_serve.py MODEL_DIR PORT [MODEL_NAME]
"""

import base64
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import tensorflow as tf

model_dir, port = sys.argv[1], int(sys.argv[2])
name = sys.argv[3] if len(sys.argv) > 3 else "alexnet"
serve = tf.saved_model.load(model_dir).signatures["serving_default"]


class Predict(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        if self.path != f"/v1/models/{name}:predict":
            return self.answer(404, {"error": f"no such resource: {self.path}"})
        try:
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            images = [base64.b64decode(i["b64"]) for i in request["instances"]]
            out = serve(images=tf.constant(images))
        except Exception as e:  # any bad request: 400 with its message, as TF Serving does
            return self.answer(400, {"error": str(e).splitlines()[0]})
        rows = [
            {"probabilities": p.tolist(), "class_ids": int(c), "classes": n.decode()}
            for p, c, n in zip(out["probabilities"].numpy(), out["class_ids"].numpy(), out["classes"].numpy())
        ]
        self.answer(200, {"predictions": rows})

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", port), Predict)
print(f"python serve: model '{name}' on http://127.0.0.1:{port}/", flush=True)
server.serve_forever()
