"""Fault injection: the service is killed, runs out of file size, races itself or loses its client, and
nothing stored is lost; the next start recovers.

Kills and resource limits hit a child process (they would take pytest down with them); the parent then
plays the next start (`create_app` on the same folders) and checks what is stored.
"""

import contextlib
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from fastapi.testclient import TestClient
from ragft.service.app.api.main import create_app
from ragft.service.documents import load_documents
from ragft.service.retrieval import build_index
from ragft.service.runtime import Runtime

from tests.live import serving

ROOT = Path(__file__).resolve().parents[3]


def child(code: str, settings, corpus: Path) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter with `settings` and `corpus` bound; it may kill itself."""
    prelude = textwrap.dedent("""
        import os, signal, sys
        from pathlib import Path
        from ragft.service.settings import Settings
        settings = Settings.model_validate_json(sys.argv[1])
        corpus = Path(sys.argv[2])
    """)
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code), settings.model_dump_json(), str(corpus)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def stored_state(settings, corpus: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(document hashes on disk, document hashes in the index manifest)."""
    on_disk = {d.doc_id: d.content_hash for d in load_documents(corpus)}
    manifest = settings.index_dir(corpus) / "manifest.json"
    return on_disk, (json.loads(manifest.read_text())["documents"] if manifest.is_file() else {})


def staged_files(corpus: Path) -> list[str]:
    return sorted(p.name for p in (corpus / "documents").iterdir() if p.name.startswith("."))


def test_kill_between_the_two_renames_of_an_index_swap_is_recovered_at_the_next_start(settings, corpus):
    Runtime(settings, corpus).index()
    (corpus / "documents" / "dock.md").write_text("The dock costs $89 and charges two laptops.\n")
    killed = child(
        """
        from ragft.service.runtime import Runtime
        real_rename = os.rename
        def rename(src, dst):  # die right after the old index is moved aside, before the new one moves in
            real_rename(src, dst)
            if ".old-" in str(dst):
                os.kill(os.getpid(), signal.SIGKILL)
        os.rename = rename
        Runtime(settings, corpus).index()
        """,
        settings, corpus,
    )  # fmt: skip
    assert killed.returncode == -9, killed.stderr
    assert not settings.index_dir(corpus).exists()  # the kill did land between the renames

    client = TestClient(create_app(settings, corpus))  # the next start
    assert (settings.index_dir(corpus) / "index.faiss").is_file()
    on_disk, indexed = stored_state(settings, corpus)
    assert indexed == on_disk  # the build that was being swapped in, dock included
    r = client.post("/v1/query", json={"question": "how much is the dock ?", "arms": ["rag"], "top_k": 4})
    assert r.status_code == 200 and "dock" in {p["doc_id"] for p in r.json()["answers"][0]["passages"]}
    leftovers = [p.name for p in settings.index_dir(corpus).parent.iterdir() if "-" in p.suffix]
    assert leftovers == []


def test_a_file_size_limit_during_a_document_put_loses_nothing(settings, corpus):
    Runtime(settings, corpus).index()
    before = (corpus / "documents" / "kestrel-k4.txt").read_bytes()
    put = child(
        """
        import resource
        from fastapi.testclient import TestClient
        from ragft.service.app.api.main import create_app
        client = TestClient(create_app(settings, corpus), raise_server_exceptions=False)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        r = client.put(f"/v1/corpora/{corpus.name}/documents/kestrel-k4", json={"text": "The K4 is new. " * 400})
        print(r.status_code, r.text)
        """,
        settings, corpus,
    )  # fmt: skip
    assert put.returncode == 0, put.stderr
    assert put.stdout.startswith("507") and "nothing changed" in put.stdout, put.stdout
    assert (corpus / "documents" / "kestrel-k4.txt").read_bytes() == before
    assert staged_files(corpus) == []
    on_disk, indexed = stored_state(settings, corpus)
    assert indexed == on_disk and "kestrel-k4" in on_disk


def test_a_kill_during_a_document_put_is_undone_at_the_next_start(settings, corpus):
    Runtime(settings, corpus).index()
    before = (corpus / "documents" / "kestrel-k4.txt").read_bytes()
    killed = child(
        """
        from fastapi.testclient import TestClient
        from ragft.service.app.api.main import create_app
        from ragft.service.runtime import Runtime
        Runtime.index = lambda self: os.kill(os.getpid(), signal.SIGKILL)  # die after the file change, before its index
        client = TestClient(create_app(settings, corpus))
        client.put(f"/v1/corpora/{corpus.name}/documents/kestrel-k4", json={"text": "The K4 now costs $179."})
        """,
        settings, corpus,
    )  # fmt: skip
    assert killed.returncode == -9, killed.stderr

    TestClient(create_app(settings, corpus))  # the next start
    on_disk, indexed = stored_state(settings, corpus)
    assert on_disk == indexed  # documents and index agree again
    assert (corpus / "documents" / "kestrel-k4.txt").read_bytes() == before  # the unfinished change was undone
    assert staged_files(corpus) == []


def test_two_concurrent_index_builds_take_turns_and_leave_one_whole_index(settings, corpus, tiny_models, monkeypatch):
    from ragft.service import models

    embedder = models.load_embedder(settings.models)
    folder = settings.index_dir(corpus)
    docs = load_documents(corpus)
    sets = [docs, docs[:2]]
    # Both builds reach their file writes together when nothing keeps them apart (the barrier gives up
    # after a second when a lock does, as it should).
    barrier = threading.Barrier(2, timeout=1)
    real_save = np.save

    def save(*args, **kwargs):
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait()
        return real_save(*args, **kwargs)

    monkeypatch.setattr(np, "save", save)
    errors = []

    def build(documents):
        try:
            build_index(documents, embedder, settings.models.embedder, settings.retrieval, folder)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=build, args=(s,)) for s in sets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["documents"] in [{d.doc_id: d.content_hash for d in s} for s in sets]
    chunks = (folder / "chunks.jsonl").read_text().splitlines()
    assert len(chunks) == manifest["chunks"] == len(np.load(folder / "embeddings.npy"))
    assert {json.loads(c)["doc_id"] for c in chunks} == set(manifest["documents"])
    assert sorted(p.name for p in folder.parent.iterdir() if p.is_dir()) == [folder.name]


def test_a_dropped_stream_stops_generating_at_the_next_token(settings, corpus):
    app = create_app(settings, corpus)
    runtime = app.state.runtime
    generator = runtime.generator()
    generator.model.generation_config.min_new_tokens = 400  # no early end of turn: only a stop ends it
    steps = []

    def slow_step(module, args, output):
        steps.append(1)
        time.sleep(0.02)  # 400 tokens take 8 s or more: a generation left running is plain to see

    generator.model.register_forward_hook(slow_step)
    body = {"model": "base", "messages": [{"role": "user", "content": "tell me about the k2"}], "stream": True,
            "max_tokens": 400}  # fmt: skip
    with serving(app) as url:
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as r:
            events = 0
            for line in r.iter_lines():
                events += line.startswith("data: ")
                if events == 3:
                    break  # the client goes away mid-answer
        at_drop = len(steps)
        assert runtime.lock.acquire(timeout=60)  # generation ended and gave the model back
        runtime.lock.release()
        assert len(steps) - at_drop < 50, f"{len(steps) - at_drop} more tokens after the client left"
        assert app.state.coalescer.reserve(app.state.settings.api.max_queued_answers)  # its queue place came back
