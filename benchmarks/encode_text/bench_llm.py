"""Classes per second of ``--generate`` against a local fake chat server, by ``--llm-concurrency``.

The server (127.0.0.1, an ephemeral port) answers every request after ``--latency`` seconds with
five sentences, serving requests in parallel as vLLM or llama.cpp with ``--parallel`` do. With
``--latency 0`` the figure is the client's own cost per class (HTTP, JSON, checks, cache writes).

    .venv/bin/python benchmarks/encode_text/bench_llm.py --classes 400 --latency 0.05 --concurrency 1 4 8
    .venv/bin/python benchmarks/encode_text/bench_llm.py --classes 8142 --latency 0 --concurrency 1 4
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from sage_cli.encode_text.llm import LLMConfig, generate_descriptions


def serve(latency: float) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            name = re.search(r"what a (.+?) looks like", body["messages"][-1]["content"]).group(1)
            time.sleep(latency)
            content = "\n".join(f"{i}. A {name} with visual feature number {i}." for i in range(1, 6))
            data = json.dumps({"choices": [{"message": {"content": content}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            return

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=400)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds the server takes per answer")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    args = parser.parse_args()
    httpd = serve(args.latency)
    url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    names = [f"species {i:05d}" for i in range(args.classes)]
    try:
        for concurrency in args.concurrency:
            with tempfile.TemporaryDirectory() as tmp:
                config = LLMConfig(url=url, model="fake", n=5, cache=Path(tmp) / "answers.jsonl",
                                   concurrency=concurrency)
                start = time.perf_counter()
                result = generate_descriptions(config, names)
                seconds = time.perf_counter() - start
            assert result.requests == args.classes and len(result.sentences) == args.classes
            print(json.dumps({"classes": args.classes, "latency_s": args.latency, "concurrency": concurrency,
                              "seconds": round(seconds, 2), "classes_per_s": round(args.classes / seconds, 1),
                              "cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 1)}))
    finally:
        httpd.shutdown()
        httpd.server_close()


if __name__ == "__main__":
    main()
