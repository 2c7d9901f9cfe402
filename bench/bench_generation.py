"""Time per 100 generated rows and rejections by reason, through a scripted or a real OpenAI-compatible server.

The server (http.server on 127.0.0.1, started here) answers every knowledge prompt with items made from the
passage it was sent: a sentence holding a number becomes the span, the number the answer, the words before it the
question; one item in four quotes a span the document does not hold and one in six gives an answer outside its
span, so the checks have something to reject. Abstention prompts get questions about a named entity's 'warranty
length'; behaviour prompts get inputs made from the seed examples with a counter. What is measured is ragft's own
cost (prompting, parsing, the checks, deduplication against every row) with a generator that answers at once.

With --url and --model the items come from a real endpoint instead (`ragft serve`'s base arm, a vLLM server; see
docs/generated-rows.md): then the figures are the model's, its rejections and its time per 100 rows.

Usage: python bench/bench_generation.py [--corpus corpora/quillmark] [--count 100]
       python bench/bench_generation.py --corpus C --count 3 --url http://127.0.0.1:8000/v1 --model base \
           [--structured-output auto|on|off] [--retries 2] [--max-reply-tokens 512]
Prints figures only; asserts nothing. Works on a copy of the corpus.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from ragft.eval.corpus.generation_rows import Budget, OpenAIGenerator, generate_rows


def knowledge_items(passage: str, n: int, turn: int) -> list[dict]:
    items = []
    for i, sentence in enumerate(re.split(r"(?<=[.!?])\s+", " ".join(passage.split()))):
        m = re.search(r"\b\d[\d,.]*\d\b|\b\d\b", sentence)
        before = sentence[: m.start()].split()[-8:] if m else []
        if not m or len(before) < 3:
            continue
        lead = " ".join(before).strip(",;:")
        span = sentence if (turn + i) % 4 else sentence.replace(before[-1], "zzz")  # one in four misquoted
        answer = m.group().rstrip(".,") if (turn + i) % 6 else "a figure nowhere in it"
        items.append({"question": f"Which figure completes this: '{lead} ...'?", "answer": answer, "span": span,
                      "paraphrase": f"What number follows the words '{lead}'?"})  # fmt: skip
        if len(items) == n:
            break
    return items


class Scripted(BaseHTTPRequestHandler):
    turn = 0
    disable_nagle_algorithm = True  # headers and body leave at once (else 40 ms of delayed ACK per call)

    def log_message(self, *args):
        pass

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][-1]["content"]
        n = int(re.search(r"Write (\d+)", prompt).group(1))
        type(self).turn += 1
        passage = prompt.split("<<<", 1)[-1].split(">>>", 1)[0]
        if "questions a reader could answer" in prompt:
            items = knowledge_items(passage, n, self.turn)
        elif "does NOT state" in prompt:
            names = re.findall(r"\b[A-Z][a-z]+ [A-Z0-9][\w-]*\b", passage)[:n]
            items = [{"question": f"How long is the warranty of the {e}?", "entity": e, "detail": "warranty length"}
                     for e in names]  # fmt: skip
        else:
            seeds = [json.loads(line) for line in re.findall(r"^\{.*\}$", prompt, re.M)]
            items = [{**s, "input": f"{s['input']} (case {self.turn}-{i}, {['urgent', 'minor', 'odd'][i % 3]})"}
                     for i, s in enumerate(seeds[:n])]  # fmt: skip
        text = json.dumps({"items": items})
        out = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                          "choices": [{"index": 0, "finish_reason": "stop",
                                       "message": {"role": "assistant", "content": text}}],
                          "usage": {"total_tokens": len(prompt) // 4 + len(text) // 4}}).encode()  # fmt: skip
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path("corpora/quillmark"))
    parser.add_argument("--count", type=int, default=100, help="Items per family.")
    parser.add_argument("--families", default="knowledge,abstention,behaviour")
    parser.add_argument("--url", help="A real OpenAI-compatible endpoint (default: the scripted server here).")
    parser.add_argument("--model", default="base", help="The model the endpoint serves (with --url).")
    parser.add_argument("--structured-output", default="auto", choices=["auto", "on", "off"])
    parser.add_argument("--retries", type=int, default=2)
    parser.add_argument("--max-reply-tokens", type=int, default=512)
    parser.add_argument("--max-seconds", type=float, default=600)
    args = parser.parse_args()
    server = None
    if not args.url:
        server = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
        threading.Thread(target=server.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / args.corpus.name
        shutil.copytree(args.corpus / "documents", corpus / "documents")
        shutil.copytree(args.corpus / "tasks", corpus / "tasks")
        url, model = (args.url, args.model) if args.url else (f"http://127.0.0.1:{server.server_port}/v1", "scripted")
        generator = OpenAIGenerator(url, model, retries=args.retries, max_tokens=args.max_reply_tokens,
                                    structured=args.structured_output)  # fmt: skip
        counts = dict.fromkeys(args.families.split(","), args.count)
        start = time.perf_counter()
        report = generate_rows(corpus, counts, generator, Budget(seconds=args.max_seconds))
        seconds = time.perf_counter() - start
    if server:
        server.shutdown()
    print(
        f"corpus {args.corpus} ({sum(1 for _ in (args.corpus / 'documents').rglob('*'))} files), {counts}, "
        f"endpoint {url} model {model}"
    )
    for line in report.summary():
        print(line)
    print(
        f"wall {seconds:.1f} s including loading the corpus; {seconds / max(1, len(report.rows)) * 100:.1f} s per 100 rows"
    )


if __name__ == "__main__":
    main()
