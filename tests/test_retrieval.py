import json

import pytest
from ragft.service import models
from ragft.service.documents import load_documents
from ragft.service.retrieval import IndexMissing, Retriever, build_index
from ragft.service.settings import RetrievalSettings


@pytest.fixture
def embedder(settings):
    return models.load_embedder(settings.models)


def _build(corpus, embedder, settings, **overrides):
    retrieval = settings.retrieval.model_copy(update=overrides)
    return build_index(load_documents(corpus), embedder, "tiny", retrieval, settings.index_dir(corpus))


def test_build_then_search_finds_the_document(corpus, embedder, settings):
    report = _build(corpus, embedder, settings)
    assert sorted(report.added) == ["camera", "kestrel-k2", "kestrel-k4"] and report.full_rebuild_reason == "new index"
    retriever = Retriever(settings.index_dir(corpus), embedder, "tiny", settings.retrieval)
    text = (corpus / "documents" / "kestrel-k2.md").read_text().strip()  # random weights: only identity is certain
    [passages] = retriever.search([text], top_k=2)
    assert len(passages) == 2 and passages[0].doc_id == "kestrel-k2" and passages[0].score == pytest.approx(1.0)
    assert passages[0].score >= passages[1].score


def test_unchanged_corpus_embeds_nothing(corpus, embedder, settings):
    _build(corpus, embedder, settings)
    again = _build(corpus, embedder, settings)
    assert not again.changed and again.chunks_embedded == 0 and again.unchanged == 3
    assert "0 chunks re-embedded" in again.summary()


def test_incremental_update_embeds_only_changed_documents(corpus, embedder, settings):
    _build(corpus, embedder, settings)
    (corpus / "documents" / "kestrel-k4.txt").write_text("The Kestrel K4 router now costs $249.\n")
    (corpus / "documents" / "camera.html").unlink()
    (corpus / "documents" / "new.md").write_text("a new document")
    report = _build(corpus, embedder, settings)
    assert (report.added, report.updated, report.deleted) == (["new"], ["kestrel-k4"], ["camera"])
    assert report.chunks_embedded == 2 and report.unchanged == 1
    stored = [
        json.loads(line)["doc_id"] for line in (settings.index_dir(corpus) / "chunks.jsonl").read_text().splitlines()
    ]
    assert "camera" not in stored and "new" in stored


def test_changed_chunking_rebuilds_everything(corpus, embedder, settings):
    _build(corpus, embedder, settings)
    report = _build(corpus, embedder, settings, chunk_tokens=30)
    assert report.full_rebuild_reason == "changed chunk_tokens" and report.chunks_embedded == report.chunks_total


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
@pytest.mark.parametrize("hybrid", [False, True])
def test_every_index_kind_and_hybrid_search(corpus, embedder, settings, kind, hybrid):
    retrieval = settings.retrieval.model_copy(update={"index_kind": kind, "hybrid": hybrid})
    build_index(load_documents(corpus), embedder, "tiny", retrieval, settings.index_dir(corpus))
    retriever = Retriever(settings.index_dir(corpus), embedder, "tiny", retrieval)
    results = retriever.search(["camera battery hours", "kestrel k4 firmware"], top_k=5)
    assert [len(r) for r in results] == [3, 3]  # capped at the number of chunks
    if hybrid:
        assert results[0][0].doc_id == "camera"  # BM25 wins on exact words


def test_failed_build_keeps_the_stored_index(corpus, embedder, settings):
    _build(corpus, embedder, settings)
    before = (settings.index_dir(corpus) / "manifest.json").read_text()
    for f in (corpus / "documents").iterdir():
        f.write_text("   ")
    with pytest.raises(ValueError, match="no text to index"):
        _build(corpus, embedder, settings)
    assert (settings.index_dir(corpus) / "manifest.json").read_text() == before


def test_missing_or_foreign_index_says_how_to_build(corpus, embedder, settings, tmp_path):
    with pytest.raises(IndexMissing, match="ragft index"):
        Retriever(tmp_path / "nothing", embedder, "tiny", settings.retrieval)
    _build(corpus, embedder, settings)
    with pytest.raises(IndexMissing, match="built with embedder 'tiny'"):
        Retriever(settings.index_dir(corpus), embedder, "other", settings.retrieval)


def test_chunks_longer_than_the_embedder_reads_are_refused(corpus, embedder, settings):
    with pytest.raises(ValueError, match="exceeds what the embedder reads"):
        build_index(
            load_documents(corpus), embedder, "tiny", RetrievalSettings(chunk_tokens=500), settings.index_dir(corpus)
        )
