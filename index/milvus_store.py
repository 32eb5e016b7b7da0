"""The Milvus vector store: one collection per index version, inner-product search over unit vectors.

This module owns talking to Milvus (a server at `http://host:19530`, or Milvus Lite: a local `.db`
path served in-process by the `milvus-lite` package) for `index.vector_store`: `MilvusStore` is the
Milvus implementation of `VectorStore`. A build creates a fresh collection (`retro_<32 hex>`) and
fills it; the version folder then holds a small pointer file (`milvus-<N>.json`: URI, collection,
vector count, index type) that `save` writes and `open_vector_store` reads, so the version's
manifest and `CURRENT` switch what serves exactly as they do for faiss.

Ids are the chunk ids 0..n-1 (the primary key). A collection is shared by every process that opens
the version, and may hold rows past the count the opener's manifest names (another process's
addition, or a crash's leftovers): every search filters `id < n`, so each opener sees its own
snapshot, and an addition first deletes `id >= n` (what a crashed addition left), then inserts, the
way `index.layout.append_rows` truncates a file. The version folder that made a collection marks it
with a hidden owner file (`index.layout.MILVUS_OWNER`); a folder without it (a copy made by
`index.store.copy_serving_version`, which skips hidden files) reads the original's collection and
copies it into a collection of its own at its first addition, so a scratch copy never writes into
the collection of the index it came from.

`drop_owned_collection` drops the collection a folder made (its owner file names it), for
`index.prune` when it deletes a version or a crashed build's staging folder; a copy's pointer to a
dropped collection then finds nothing (`load` says so). Not handled: a build killed after creating
its collection but before writing its pointer file leaves that collection on the server, named by
no file. It knows nothing of documents.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from index.layout import MILVUS_OWNER

log = logging.getLogger(__name__)

MAX_TOPK = 16384  # a Milvus search returns at most this many results per query (limit + offset)
MAX_QUERIES_PER_CALL = 1024
MAX_RESULTS_PER_CALL = 1 << 18  # queries x limit per request: keeps replies well under gRPC's limits
INSERT_BYTES = 8 << 20  # vectors per insert request: ~8 MB (a server refuses messages over 64 MB)
INDEX_TYPES = ("FLAT", "IVF_FLAT", "HNSW", "AUTOINDEX")
DEFAULT_INDEX_TYPE = "FLAT"  # exact, like faiss Flat; "IVF_FLAT" or "HNSW" for large collections
DEFAULT_NPROBE = 32
HNSW_EF = 64
CONNECT_TIMEOUT = 10.0  # seconds; a wrong server address fails within this

_clients: dict[str, object] = {}
_clients_lock = threading.Lock()


def is_lite(uri: str) -> bool:
    return uri.endswith(".db")


def check_uri(uri: str) -> str:
    """The URI normalised (a Milvus Lite path made absolute), or ValueError saying what is wrong.

    Accepted: `http://host:port`, `https://host:port`, `tcp://host:port`, or a path ending in .db
    (Milvus Lite; its folder must exist)."""
    if not uri:
        raise ValueError("no Milvus URI given: use milvus:http://HOST:19530 or milvus:PATH.db (Milvus Lite)")
    if is_lite(uri):
        path = Path(uri).expanduser().resolve()
        if not path.parent.is_dir():
            raise ValueError(f"Milvus Lite file {uri}: its folder {path.parent} does not exist")
        return str(path)
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https", "tcp") or not parsed.hostname:
        raise ValueError(
            f"invalid Milvus URI {uri!r}: expected http://HOST:PORT (a Milvus server) or a path "
            "ending in .db (Milvus Lite)"
        )
    try:
        parsed.port  # noqa: B018 -- raises ValueError for a port that is not a number
    except ValueError as e:
        raise ValueError(f"invalid Milvus URI {uri!r}: {e}") from e
    return uri


def connect(uri: str):
    """A MilvusClient for uri, one per process and URI (gRPC clients may be shared by threads).
    ValueError when the URI is bad or nothing answers there."""
    uri = check_uri(uri)
    with _clients_lock:
        if uri in _clients:
            return _clients[uri]
        from pymilvus import MilvusClient
        from pymilvus.exceptions import MilvusException

        try:
            client = MilvusClient(uri=uri, timeout=CONNECT_TIMEOUT)
        except MilvusException as e:
            raise ValueError(f"cannot connect to Milvus at {uri}: {e.message}") from e
        _clients[uri] = client
        return client


def release(uri: str) -> None:
    """Closes this process's client for uri; for Milvus Lite also stops its in-process server, so
    that another process may open the file (Milvus Lite serves a file to one process at a time)."""
    uri = check_uri(uri)
    with _clients_lock:
        client = _clients.pop(uri, None)
    if client is not None:
        client.close()
    if is_lite(uri):
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(uri)


def _index_params(client, index_type: str, n_vectors: int):
    params = client.prepare_index_params()
    extra: dict = {}
    if index_type == "IVF_FLAT":  # faiss's rule (index.faiss_index.choose_factory): 4 sqrt(n), a power of 2
        extra = {"nlist": int(min(65536, 2 ** round(math.log2(max(1, 4 * math.sqrt(max(n_vectors, 1)))))))}
    elif index_type == "HNSW":
        extra = {"M": 16, "efConstruction": 200}
    params.add_index(field_name="vector", index_type=index_type, metric_type="IP", params=extra)
    return params


class MilvusStore:
    """A Milvus collection of unit vectors with ids 0..n-1, searched by inner product.

    `n` is the number of vectors this opener serves (ids past it are invisible); `owned` says
    whether this version folder made the collection (else the first `add` copies it, see the
    module docstring); `rows(n)` gives the version's first n embeddings for that copy."""

    def __init__(
        self,
        uri: str,
        collection: str,
        dim: int,
        n: int,
        index_type: str = DEFAULT_INDEX_TYPE,
        owned: bool = True,
        rows: Callable[[int], np.ndarray] | None = None,
    ):
        self.uri, self.collection, self.dim, self.index_type = uri, collection, dim, index_type
        self.factory = index_type  # the manifest's `faiss_factory` (its historical name) records it
        self.owned = owned
        self._n = n
        self._rows = rows
        self._client = connect(uri)

    @property
    def ntotal(self) -> int:
        return self._n

    @property
    def concurrent_search(self) -> bool:
        """True: a Milvus client may be used by several threads at once."""
        return True

    # --- making and opening -------------------------------------------------------------------------
    @classmethod
    def build(cls, vectors: np.ndarray, uri: str, index_type: str | None = None) -> MilvusStore:
        """A new collection on the Milvus at uri holding `vectors` as ids 0..n-1."""
        vectors = _as_float32(vectors)
        index_type = _check_index_type(index_type)
        store = cls(check_uri(uri), _new_collection_name(), vectors.shape[1], 0, index_type)
        store._create(len(vectors))
        store._insert(vectors, 0)
        store._seal()
        store._n = len(vectors)
        return store

    @classmethod
    def load(
        cls, pointer_file: Path, n_vectors: int, rows: Callable[[int], np.ndarray] | None = None
    ) -> MilvusStore:
        """The collection a version's pointer file names, checked to hold its n_vectors vectors."""
        pointer_file = Path(pointer_file)
        with open(pointer_file, encoding="utf-8") as f:
            pointer = json.load(f)
        owner = pointer_file.parent / MILVUS_OWNER
        owned = owner.is_file() and owner.read_text(encoding="utf-8").strip() == pointer["collection"]
        uri, collection, dim = pointer["uri"], pointer["collection"], pointer["dim"]
        store = cls(uri, collection, dim, n_vectors, pointer["index_type"], owned, rows)
        store._check_holds(n_vectors)
        return store

    def _create(self, n_vectors: int) -> None:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        # Strong consistency: a search right after an insert or a delete sees it (live additions).
        self._client.create_collection(
            self.collection,
            schema=schema,
            index_params=_index_params(self._client, self.index_type, n_vectors),
            consistency_level="Strong",
        )
        log.info("created Milvus collection %s at %s (%s)", self.collection, self.uri, self.index_type)

    def _check_holds(self, n_vectors: int) -> None:
        from pymilvus.client.types import LoadState

        if not self._client.has_collection(self.collection):
            raise ValueError(
                f"Milvus at {self.uri} has no collection {self.collection}, which this version's "
                "vectors are in (dropped?): rebuild the index"
            )
        # A restarted Milvus (or a Milvus Lite file another process wrote) may hold it released.
        if self._client.get_load_state(self.collection)["state"] != LoadState.Loaded:
            self._client.load_collection(self.collection)
        held = self._count(f"id < {n_vectors}")
        if held != n_vectors:
            raise ValueError(
                f"Milvus collection {self.collection} at {self.uri} holds {held} of the {n_vectors} "
                "vectors this version names: the version is damaged, rebuild it"
            )

    def _count(self, where: str) -> int:
        (row,) = self._client.query(self.collection, filter=where, output_fields=["count(*)"])
        return int(row["count(*)"])

    # --- growing ------------------------------------------------------------------------------------
    def add(self, vectors: np.ndarray) -> None:
        """Appends vectors as the next ids, after deleting ids >= n (a crashed addition's rows)."""
        vectors = _as_float32(vectors)
        if not self.owned:
            self._copy_into_own_collection()
        self._client.delete(self.collection, filter=f"id >= {self._n}")
        self._insert(vectors, self._n)
        self._n += len(vectors)

    def _copy_into_own_collection(self) -> None:
        if self._rows is None:
            raise ValueError(f"cannot copy Milvus collection {self.collection}: no embeddings were given")
        source = self.collection
        self.collection = _new_collection_name()
        self._create(self._n)
        self._insert(self._rows(self._n), 0)
        self._seal()
        self.owned = True
        log.info("copied %d vectors of %s into %s (a copied version's own)", self._n, source, self.collection)

    def _insert(self, vectors: np.ndarray, first_id: int) -> None:
        batch = max(1, INSERT_BYTES // (4 * max(1, self.dim)))
        for start in range(0, len(vectors), batch):
            part = np.ascontiguousarray(vectors[start : start + batch], dtype=np.float32)
            rows = [{"id": first_id + start + i, "vector": v} for i, v in enumerate(part)]
            self._client.insert(self.collection, rows)

    def _seal(self) -> None:
        """Flushes a bulk insert into sealed segments, which get the collection's index. Unsealed
        (growing) rows are searched through an interim index: measured with Milvus Lite on 5,000
        vectors, 140 ms a one-query search before the flush, 5 ms after (benchmarks/vector_stores.py
        at 100k: 400 ms). Live additions are small and stay growing until Milvus seals them."""
        self._client.flush(self.collection)

    # --- searching ----------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores [n, k] float32, ids [n, k] int64), best first; missing results score -inf, id -1.

        At most MAX_TOPK results exist per query (Milvus' limit); the rest are padding, as for a
        GPU faiss index (the store's deeper searches stop there)."""
        queries = _as_float32(queries)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        n = self._n
        if len(queries) == 0 or n == 0:
            return scores, ids
        limit = min(k, n, MAX_TOPK)
        per_call = max(1, min(MAX_QUERIES_PER_CALL, MAX_RESULTS_PER_CALL // limit))
        for start in range(0, len(queries), per_call):
            found = self._client.search(
                self.collection,
                data=queries[start : start + per_call],
                limit=limit,
                filter=f"id < {n}",  # this opener's snapshot: rows past n are not its own yet
                output_fields=["id"],
                search_params=self._search_params(limit),
            )
            for row, hits in enumerate(found, start):
                for col, hit in enumerate(hits):
                    ids[row, col], scores[row, col] = hit["id"], hit["distance"]
        return scores, ids

    def _search_params(self, limit: int) -> dict:
        if self.index_type == "IVF_FLAT":
            return {"metric_type": "IP", "params": {"nprobe": DEFAULT_NPROBE}}
        if self.index_type == "HNSW":
            return {"metric_type": "IP", "params": {"ef": max(HNSW_EF, limit)}}
        return {"metric_type": "IP"}

    # --- saving -------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Writes the pointer file (the vectors themselves are in Milvus already) and, beside it,
        the owner mark of the folder that made the collection."""
        path = Path(path)
        pointer = {
            "store": "milvus",
            "uri": self.uri,
            "collection": self.collection,
            "dim": self.dim,
            "n_vectors": self._n,
            "index_type": self.index_type,
            "metric_type": "IP",
        }
        path.write_text(json.dumps(pointer, indent=1) + "\n", encoding="utf-8")
        if self.owned:
            (path.parent / MILVUS_OWNER).write_text(self.collection + "\n", encoding="utf-8")


def drop_owned_collection(folder: str | Path) -> str | None:
    """Drops the collection that `folder` (a version folder, or one renamed for deletion) made, as
    its owner file and pointer file name it; returns its name, or None when the folder made none.
    Raises ValueError when Milvus cannot be reached (the folder is then best kept, to try again)."""
    folder = Path(folder)
    owner = folder / MILVUS_OWNER
    if not owner.is_file():
        return None
    collection = owner.read_text(encoding="utf-8").strip()
    for pointer_file in sorted(folder.glob("milvus-*.json")):
        with open(pointer_file, encoding="utf-8") as f:
            pointer = json.load(f)
        if pointer.get("collection") != collection:
            continue
        client = connect(pointer["uri"])
        if client.has_collection(collection):
            client.drop_collection(collection)
            log.info("dropped Milvus collection %s at %s", collection, pointer["uri"])
        return collection
    return None


def _new_collection_name() -> str:
    return f"retro_{uuid.uuid4().hex}"


def _check_index_type(index_type: str | None) -> str:
    index_type = (index_type or DEFAULT_INDEX_TYPE).upper()
    if index_type not in INDEX_TYPES:
        raise ValueError(f"unknown Milvus index type {index_type!r}; one of {', '.join(INDEX_TYPES)}")
    return index_type


def _as_float32(vectors: np.ndarray) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"expected a [n, dim] array of vectors, got shape {vectors.shape}")
    return vectors
