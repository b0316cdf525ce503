"""faiss against usearch for the retrieval index: build time, size, query time and recall on the same vectors.

Vectors are either synthetic (genre clusters, norms growing with popularity, as trained MF item vectors are)
or the retrieval vectors of a stored model version (``--version-dir``). Queries are user-like vectors;
recall@k is measured against exact inner-product search over the same vectors.

    python bench/ann.py --items 1000000 --dim 65 --queries 2000
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np


def synthetic(items: int, dim: int, queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """[I, D] item vectors in 18 genre clusters with norms that grow with popularity, and [Q, D] queries."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (18, dim)).astype(np.float32)
    genre = rng.integers(0, 18, items)
    popularity = 1.0 / (rng.permutation(items) + 1.0) ** 1.1
    norm = (1.0 + 0.15 * np.log(popularity / popularity.min())).astype(np.float32)
    x = centres[genre] + rng.normal(0, 1.2, (items, dim)).astype(np.float32)
    x *= (norm / np.linalg.norm(x, axis=1))[:, None]
    home = rng.integers(0, 18, queries)
    q = centres[home] + rng.normal(0, 1.5, (queries, dim)).astype(np.float32)
    return np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(q, dtype=np.float32)


def exact_top(x: np.ndarray, q: np.ndarray, k: int, chunk: int = 256) -> np.ndarray:
    out = np.empty((len(q), k), dtype=np.int64)
    for s in range(0, len(q), chunk):
        scores = q[s : s + chunk] @ x.T
        part = np.argpartition(-scores, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, part, 1), axis=1)
        out[s : s + chunk] = np.take_along_axis(part, order, 1)
    return out


def recall(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    hits = [len(set(f[f >= 0][: max(k, f.shape[0])]) & set(t[:k])) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits)) / k


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_faiss(x: np.ndarray, q: np.ndarray, truth: np.ndarray, args: argparse.Namespace) -> list[dict]:
    import faiss

    faiss.omp_set_num_threads(args.build_threads)
    before = rss_mb()
    t0 = time.perf_counter()
    index = faiss.IndexHNSWFlat(x.shape[1], args.m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = args.ef_construction
    index.add(x)
    build = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "index.faiss"
        faiss.write_index(index, str(path))
        size = path.stat().st_size
    mem = rss_mb() - before
    faiss.omp_set_num_threads(1)
    rows = []
    for ef in args.ef:
        index.hnsw.efSearch = max(ef, args.depth)
        t0 = time.perf_counter()
        found = np.vstack([index.search(q[i : i + 1], args.depth)[1] for i in range(len(q))])
        per = (time.perf_counter() - t0) / len(q)
        rows.append(_row("faiss HNSWFlat", ef, build, size, mem, per, found, truth, args))
    return rows


def run_usearch(x: np.ndarray, q: np.ndarray, truth: np.ndarray, args: argparse.Namespace, dtype: str) -> list[dict]:
    from usearch.index import Index

    before = rss_mb()
    t0 = time.perf_counter()
    index = Index(ndim=x.shape[1], metric="ip", dtype=dtype, connectivity=args.m // 2 or 16,
                  expansion_add=args.ef_construction)  # fmt: skip
    index.add(np.arange(len(x), dtype=np.uint64), x, threads=args.build_threads)
    build = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "index.usearch"
        index.save(str(path))
        size = path.stat().st_size
    mem = rss_mb() - before
    rows = []
    for ef in args.ef:
        index.expansion_search = max(ef, args.depth)
        t0 = time.perf_counter()
        found = np.vstack([index.search(q[i], args.depth, threads=1).keys.astype(np.int64) for i in range(len(q))])
        per = (time.perf_counter() - t0) / len(q)
        rows.append(_row(f"usearch {dtype}", ef, build, size, mem, per, found, truth, args))
    return rows


def _row(name, ef, build, size, mem, per, found, truth, args) -> dict:
    return {
        "index": name, "ef": ef, "build_s": build, "file_mb": size / 2**20, "rss_mb": mem,
        "query_ms": per * 1000, f"recall@{args.k}": recall(found[:, : args.k], truth, args.k),
        f"recall@{args.k} in top {args.depth}": recall(found, truth, args.k),
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=65)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--depth", type=int, default=200, help="candidates retrieved per query")
    p.add_argument("--m", type=int, default=32, help="HNSW links per node (usearch connectivity is half)")
    p.add_argument("--ef-construction", type=int, default=100)
    p.add_argument("--ef", type=int, nargs="+", default=[200, 400])
    p.add_argument("--build-threads", type=int, default=2)
    p.add_argument("--libs", default="faiss,usearch-f32,usearch-f16")
    p.add_argument("--version-dir", type=Path, help="use this model version's retrieval vectors instead")
    args = p.parse_args()
    if args.version_dir:
        from app.recsys.index import load_vectors

        x = load_vectors(args.version_dir)
        rng = np.random.default_rng(0)
        q = x[rng.integers(0, len(x), args.queries)] + rng.normal(0, x.std(), (args.queries, x.shape[1]))
        q = q.astype(np.float32)
    else:
        x, q = synthetic(args.items, args.dim, args.queries)
    truth = exact_top(x, q, args.k)
    t0 = time.perf_counter()
    exact_top(x, q[:50], args.k, chunk=1)
    exact_ms = (time.perf_counter() - t0) / 50 * 1000
    print(f"{len(x):,} vectors of {x.shape[1]}; exact scan {exact_ms:.1f} ms a query (numpy, one at a time)")
    rows: list[dict] = []
    for lib in args.libs.split(","):
        gc.collect()
        if lib == "faiss":
            rows += run_faiss(x, q, truth, args)
        else:
            rows += run_usearch(x, q, truth, args, lib.split("-")[1])
    keys = list(rows[0])
    print(" | ".join(keys))
    for r in rows:
        print(" | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r.values()))
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
