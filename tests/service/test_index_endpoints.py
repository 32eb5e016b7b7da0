"""Retrieval, live document additions, background rebuilds with a hot swap, and auth on writes."""

from __future__ import annotations

import os
import threading
import time

import pytest

from service.jobs import resolve_corpus_source
from tests.service.conftest import API_KEY, make_settings


def test_retrieve_returns_scored_neighbours(client):
    body = client.post("/v1/retrieve", json={"query": "What is the capital of Zorbland?", "k": 3}).json()
    assert body["object"] == "list" and len(body["data"]) == 3
    top = body["data"][0]
    assert top["doc_id"] == "geo/zorbland" and "Quibbletown" in top["text"]
    scores = [n["score"] for n in body["data"]]
    assert scores == sorted(scores, reverse=True)


def test_more_neighbours_than_chunks_are_left_out_not_padded(make_client, settings):
    test_client = make_client(settings)
    body = test_client.post("/v1/retrieve", json={"query": "bread", "k": 16}).json()
    n_chunks = test_client.get("/info").json()["index"]["chunks"]
    assert len(body["data"]) == min(16, n_chunks)
    assert all(n["chunk_id"] >= 0 and n["doc_id"] for n in body["data"])


def test_added_document_is_searchable_and_used_at_once(make_client, settings, fresh_index):
    test_client = make_client(make_settings(**{**settings.model_dump(), "index": fresh_index}))
    before = test_client.get("/info").json()["index"]
    text = "The Krendle lighthouse on Yorrow Island is painted in purple and orange stripes."
    response = test_client.post(
        "/v1/documents", json={"documents": [{"text": text, "id": "test/krendle", "title": "Krendle"}]}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["added"] == 1 and body["documents"][0] == {
        "id": "test/krendle",
        "added": True,
        "replaced": False,
        "reason": None,
    }
    assert body["index"]["documents"] == before["documents"] + 1
    found = test_client.post("/v1/retrieve", json={"query": "Krendle lighthouse stripes", "k": 1}).json()
    assert found["data"][0]["doc_id"] == "test/krendle"
    completion = test_client.post(
        "/v1/completions", json={"prompt": "The Krendle lighthouse on Yorrow", "max_tokens": 2}
    ).json()
    # the neighbours the answer attends to: those of the prompt's last chunk
    last = max(n["for_chunk"] for n in completion["retrieval"])
    assert [n for n in completion["retrieval"] if n["for_chunk"] == last][0]["doc_id"] == "test/krendle"
    # The same id again is reported, not duplicated; an id-less document gets one.
    again = test_client.post(
        "/v1/documents", json={"documents": [{"text": text, "id": "test/krendle"}, {"text": "A new fact."}]}
    )
    documents = again.json()["documents"]
    assert documents[0]["added"] is False and "already" in documents[0]["reason"]
    assert documents[1]["added"] is True and documents[1]["id"].startswith("api-")
    metrics = test_client.get("/metrics").text
    assert "retro_documents_added_total 2.0" in metrics


def test_writes_need_the_api_key_when_one_is_set(make_client, settings, fresh_index):
    test_client = make_client(
        make_settings(**{**settings.model_dump(), "index": fresh_index, "api_key": API_KEY})
    )
    document = {"documents": [{"text": "Secret fact about Plovia."}]}
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": API_KEY},
        {"Authorization": "Basic x"},
    ):
        response = test_client.post("/v1/documents", json=document, headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["error"]["type"] == "authentication_error"
        assert (
            test_client.post("/v1/index/rebuild", json={"source": "new"}, headers=headers).status_code == 401
        )
    ok = test_client.post("/v1/documents", json=document, headers={"Authorization": f"Bearer {API_KEY}"})
    assert ok.status_code == 200
    # Reads stay open.
    assert test_client.post("/v1/retrieve", json={"query": "Plovia"}).status_code == 200
    assert test_client.post("/v1/completions", json={"prompt": "x", "max_tokens": 1}).status_code == 200


def test_corpus_paths_must_stay_under_the_root(tmp_path, corpus_root):
    from service.errors import APIError

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not yours")
    link = corpus_root / "sneaky-link"
    if not link.exists():
        os.symlink(outside, link)
    assert resolve_corpus_source("new", corpus_root, []) == str((corpus_root / "new").resolve())
    assert resolve_corpus_source(str(corpus_root / "new"), corpus_root, []) == str(
        (corpus_root / "new").resolve()
    )
    for source, status in [
        ("sneaky-link", 403),
        ("sneaky-link/secret.txt", 403),
        ("new/../../outside", 400),
        (str(outside), 403),
        ("does-not-exist", 400),
        ("facts", 403),
    ]:
        with pytest.raises(APIError) as raised:
            resolve_corpus_source(source, corpus_root, [])
        assert raised.value.status == status, source
    assert resolve_corpus_source("facts", corpus_root, ["facts"]) == "facts"
    with pytest.raises(APIError) as raised:
        resolve_corpus_source("new", None, [])
    assert raised.value.status == 403


def wait_for_job(test_client, job: dict, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while job["status"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
        job = test_client.get(f"/v1/index/jobs/{job['id']}").json()
    return job


def hold_rebuilds(monkeypatch) -> threading.Event:
    """Rebuilds wait to build until the returned event is set (or 30 s), so a test can check what
    happens while one runs."""
    import service.jobs

    may_build = threading.Event()
    real_build = service.jobs.build_index

    def held_build(*args, **kwargs):
        assert may_build.wait(30)
        return real_build(*args, **kwargs)

    monkeypatch.setattr(service.jobs, "build_index", held_build)
    return may_build


def test_rebuild_swaps_versions_without_failing_a_request(make_client, settings, fresh_index, monkeypatch):
    # Hold the build until the test has checked what happens meanwhile.
    may_build = hold_rebuilds(monkeypatch)
    test_client = make_client(make_settings(**{**settings.model_dump(), "index": fresh_index}))
    before = test_client.get("/info").json()["index"]
    failures, answered = [], [0]
    stop = threading.Event()

    def hammer():
        while not stop.is_set():
            r = test_client.post("/v1/completions", json={"prompt": "Glimmerfen bell tower", "max_tokens": 3})
            q = test_client.post("/v1/retrieve", json={"query": "Glimmerfen bell tower", "k": 2})
            for response in (r, q):
                answered[0] += 1
                if response.status_code != 200:
                    failures.append(response.text)

    worker = threading.Thread(target=hammer)
    worker.start()
    try:
        started = test_client.post("/v1/index/rebuild", json={"source": "new"})
        assert started.status_code == 202, started.text
        job = started.json()
        assert job["id"].startswith("rebuild-")
        assert test_client.get(f"/v1/index/jobs/{job['id']}").json()["status"] == "running"
        # One rebuild at a time.
        assert test_client.post("/v1/index/rebuild", json={"source": "new"}).status_code == 409
        # A live addition during the rebuild is served at once and survives the swap.
        added = test_client.post(
            "/v1/documents", json={"documents": [{"text": "Orlic tea is brewed cold.", "id": "live/orlic"}]}
        )
        assert added.status_code == 200
        time.sleep(0.3)  # the old version keeps answering while the build waits
        assert test_client.get("/info").json()["index"]["version"] == before["version"]
        may_build.set()
        job = wait_for_job(test_client, job)
        time.sleep(0.3)  # and the new one answers after the swap
    finally:
        may_build.set()
        stop.set()
        worker.join()
    assert job["status"] == "succeeded", job
    assert job["progress"]["stage"] == "done" and job["report"]["readded_live_documents"] == 1
    assert job["report"]["pruned_versions"] == []  # the default keeps 3 versions
    assert failures == [] and answered[0] > 4
    after = test_client.get("/info").json()["index"]
    assert after["version"] == job["version"] != before["version"]
    assert after["documents"] == 3 + 1  # the corpus and the live addition; the old corpus is gone
    top = test_client.post("/v1/retrieve", json={"query": "Glimmerfen bell tower green glass", "k": 1}).json()
    assert top["data"][0]["doc_id"].endswith("doc0.txt")
    orlic = test_client.post("/v1/retrieve", json={"query": "Orlic tea brewed cold", "k": 1}).json()
    assert orlic["data"][0]["doc_id"] == "live/orlic"
    assert "retro_index_documents 4.0" in test_client.get("/metrics").text


def test_rebuild_deletes_versions_beyond_keep_index_versions(make_client, settings, fresh_index):
    from index.prune import version_names

    assert version_names(fresh_index) == ["v0001"]
    test_client = make_client(
        make_settings(**{**settings.model_dump(), "index": fresh_index, "keep_index_versions": 1})
    )
    job = wait_for_job(test_client, test_client.post("/v1/index/rebuild", json={"source": "new"}).json())
    assert job["status"] == "succeeded", job
    assert job["report"]["pruned_versions"] == ["v0001"] and job["version"] == "v0002"
    assert version_names(fresh_index) == ["v0002"]
    top = test_client.post("/v1/retrieve", json={"query": "Pelnic cheese aged in caves", "k": 1})
    assert top.status_code == 200 and top.json()["data"][0]["doc_id"].endswith("doc2.txt")
    added = test_client.post("/v1/documents", json={"documents": [{"text": "Orlic tea is brewed cold."}]})
    assert added.status_code == 200, added.text


def test_failed_rebuild_keeps_the_old_index(make_client, settings, fresh_index, corpus_root):
    empty = corpus_root / "empty"
    empty.mkdir(exist_ok=True)
    test_client = make_client(make_settings(**{**settings.model_dump(), "index": fresh_index}))
    before = test_client.get("/info").json()["index"]
    job = wait_for_job(test_client, test_client.post("/v1/index/rebuild", json={"source": "empty"}).json())
    assert job["status"] == "failed" and "no readable documents" in job["error"]
    assert test_client.get("/info").json()["index"] == before
    assert test_client.post("/v1/retrieve", json={"query": "Mars"}).status_code == 200


@pytest.mark.parametrize("mode", ["dense", "hybrid", "hybrid-titled", "lexical-titled"])
def test_retrieval_mode_is_served_and_reported(make_client, settings, mode):
    test_client = make_client(make_settings(**{**settings.model_dump(), "retrieval": mode}))
    assert test_client.get("/info").json()["index"]["retrieval"] == mode
    found = test_client.post("/v1/retrieve", json={"query": "yeast makes bread dough rise", "k": 1}).json()
    assert found["data"][0]["doc_id"] == "food/bread"


def test_unknown_retrieval_mode_is_refused():
    with pytest.raises(ValueError, match="retrieval"):
        make_settings(retrieval="sparse")


def test_the_same_new_id_twice_in_one_request_adds_the_first(make_client, settings, fresh_index):
    test_client = make_client(make_settings(**{**settings.model_dump(), "index": fresh_index}))
    before = test_client.get("/info").json()["index"]["documents"]
    documents = [
        {"text": "Twice told tale, first.", "id": "test/twice"},
        {"text": "Second.", "id": "test/twice"},
    ]
    body = test_client.post("/v1/documents", json={"documents": documents}).json()
    assert body["added"] == 1
    assert [d["added"] for d in body["documents"]] == [True, False]
    assert "given twice" in body["documents"][1]["reason"]
    assert test_client.get("/info").json()["index"]["documents"] == before + 1
