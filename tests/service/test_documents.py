"""DELETE /v1/documents/{doc_id}: removed from the very next retrieval and completion, counted out
of /info and /metrics, 404 for an unknown id, the API key when one is set, kept out by a rebuild."""

from __future__ import annotations

from tests.service.conftest import API_KEY, make_settings
from tests.service.test_index_endpoints import hold_rebuilds, wait_for_job

ZORBLAND = "What is the capital of Zorbland?"


def _ids(test_client, query: str, k: int = 4) -> list[str]:
    response = test_client.post("/v1/retrieve", json={"query": query, "k": k})
    assert response.status_code == 200, response.text
    return [n["doc_id"] for n in response.json()["data"]]


def test_removed_document_is_gone_from_the_next_retrieval_and_completion(make_client, settings, fresh_index):
    test_client = make_client(make_settings(**{**settings.model_dump(), "index": fresh_index}))
    before = test_client.get("/info").json()["index"]
    assert "geo/zorbland" in _ids(test_client, ZORBLAND)

    response = test_client.delete("/v1/documents/geo/zorbland")  # a doc id with a slash
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "index.removal" and body["id"] == "geo/zorbland" and body["removed"] is True
    assert body["chunks"] >= 1
    assert body["index"]["documents"] == before["documents"] - 1
    assert body["index"]["chunks"] == before["chunks"] - body["chunks"]
    assert test_client.get("/info").json()["index"]["documents"] == before["documents"] - 1

    assert "geo/zorbland" not in _ids(test_client, ZORBLAND, k=16)
    completion = test_client.post(
        "/v1/completions", json={"prompt": "Zorbland is a small island country. Its capital", "max_tokens": 2}
    ).json()
    assert completion["retrieval"] and all(n["doc_id"] != "geo/zorbland" for n in completion["retrieval"])
    metrics = test_client.get("/metrics").text
    assert f"retro_index_documents {float(before['documents'] - 1)}" in metrics
    assert f"retro_index_chunks {float(body['index']['chunks'])}" in metrics

    # Gone now, and ids it never held: 404 in OpenAI's shape.
    for doc_id in ("geo/zorbland", "no/such-document"):
        missing = test_client.delete(f"/v1/documents/{doc_id}")
        assert missing.status_code == 404, doc_id
        error = missing.json()["error"]
        assert error["type"] == "not_found_error" and doc_id in error["message"]

    # The id can be used again: a new document, found with its new text only.
    text = "Zorbland moved its capital to Nettlehaven, a mountain city, in 2024."
    added = test_client.post("/v1/documents", json={"documents": [{"text": text, "id": "geo/zorbland"}]})
    assert added.status_code == 200 and added.json()["added"] == 1
    found = test_client.post("/v1/retrieve", json={"query": ZORBLAND, "k": 16}).json()["data"]
    zorbland = [n["text"] for n in found if n["doc_id"] == "geo/zorbland"]
    assert zorbland and all("Quibbletown" not in t for t in zorbland)


def test_removal_needs_the_api_key_when_one_is_set(make_client, settings, fresh_index):
    test_client = make_client(
        make_settings(**{**settings.model_dump(), "index": fresh_index, "api_key": API_KEY})
    )
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        response = test_client.delete("/v1/documents/geo/nile", headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["error"]["type"] == "authentication_error"
    assert "geo/nile" in _ids(test_client, "The Nile flows north into the Mediterranean", k=3)
    ok = test_client.delete("/v1/documents/geo/nile", headers={"Authorization": f"Bearer {API_KEY}"})
    assert ok.status_code == 200 and ok.json()["removed"] is True
    assert "geo/nile" not in _ids(test_client, "The Nile flows north into the Mediterranean", k=8)


def test_a_removal_during_a_rebuild_does_not_come_back_after_the_swap(
    make_client, settings, fresh_index, monkeypatch
):
    may_build = hold_rebuilds(monkeypatch)
    test_client = make_client(make_settings(**{**settings.model_dump(), "index": fresh_index}))
    try:
        job = test_client.post("/v1/index/rebuild", json={"source": "new"}).json()
        # Added while the rebuild runs, then removed: the carry-over must not bring it back.
        added = test_client.post(
            "/v1/documents", json={"documents": [{"text": "Orlic tea is brewed cold.", "id": "live/orlic"}]}
        )
        assert added.status_code == 200
        assert test_client.delete("/v1/documents/live/orlic").status_code == 200
        assert "live/orlic" not in _ids(test_client, "Orlic tea brewed cold", k=8)
    finally:
        may_build.set()
    job = wait_for_job(test_client, job)
    assert job["status"] == "succeeded", job
    assert job["report"]["readded_live_documents"] == 1 and job["report"]["removed_live_documents"] == 1
    assert test_client.get("/info").json()["index"]["version"] == job["version"]
    assert "live/orlic" not in _ids(test_client, "Orlic tea brewed cold", k=8)
    assert test_client.get("/info").json()["index"]["documents"] == 3  # the new corpus only


def test_a_document_sent_again_with_replace_takes_the_old_ones_place(make_client, settings, fresh_index):
    """`POST /v1/documents` with `replace`: a document whose id the index holds replaces it in one
    commit (without it, skipped as before); the document count stays, the old text is never found."""
    test_client = make_client(make_settings(**{**settings.model_dump(), "index": fresh_index}))
    before = test_client.get("/info").json()["index"]["documents"]
    new = {
        "text": "Zorbland moved its capital to Nettlehaven, a mountain city, in 2024.",
        "id": "geo/zorbland",
    }
    skipped = test_client.post("/v1/documents", json={"documents": [new]})
    assert skipped.status_code == 200 and skipped.json()["added"] == 0
    assert skipped.json()["documents"] == [
        {"id": "geo/zorbland", "added": False, "replaced": False, "reason": "doc_id already in the index"}
    ]
    other = {"text": "Plinth cheese is aged in sea caves.", "id": "food/plinth"}
    replaced = test_client.post("/v1/documents", json={"documents": [new, other], "replace": True})
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["added"] == 2
    assert [(d["id"], d["replaced"]) for d in replaced.json()["documents"]] == [
        ("geo/zorbland", True),
        ("food/plinth", False),
    ]
    assert test_client.get("/info").json()["index"]["documents"] == before + 1
    found = test_client.post("/v1/retrieve", json={"query": ZORBLAND, "k": 16}).json()["data"]
    zorbland = [n["text"] for n in found if n["doc_id"] == "geo/zorbland"]
    assert zorbland and all("Quibbletown" not in t for t in zorbland)
    assert any("moved its capital" in t for t in zorbland)  # the new text (a chunk may cut a word)
    bad = test_client.post("/v1/documents", json={"documents": [new], "replace": "sometimes"})
    assert bad.status_code == 422 and "replace" in bad.text


def test_a_replacement_during_a_rebuild_is_replayed_on_the_new_version(
    make_client, settings, fresh_index, monkeypatch
):
    may_build = hold_rebuilds(monkeypatch)
    test_client = make_client(make_settings(**{**settings.model_dump(), "index": fresh_index}))
    first = {"text": "Orlic tea is brewed cold.", "id": "live/orlic"}
    second = {"text": "Orlic tea is now brewed with boiling water.", "id": "live/orlic"}
    try:
        job = test_client.post("/v1/index/rebuild", json={"source": "new"}).json()
        assert test_client.post("/v1/documents", json={"documents": [first]}).json()["added"] == 1
        body = test_client.post("/v1/documents", json={"documents": [second], "replace": True}).json()
        assert body["documents"][0]["replaced"] is True
    finally:
        may_build.set()
    job = wait_for_job(test_client, job)
    assert job["status"] == "succeeded", job
    assert test_client.get("/info").json()["index"]["version"] == job["version"]
    found = test_client.post("/v1/retrieve", json={"query": "Orlic tea brewed", "k": 8}).json()["data"]
    orlic = [n["text"] for n in found if n["doc_id"] == "live/orlic"]
    assert orlic and all("boiling" in t or "cold" not in t for t in orlic)
    assert any("boiling" in t for t in orlic)
    assert test_client.get("/info").json()["index"]["documents"] == 4  # the new corpus and live/orlic once
