"""The libraries bench_vocab.py compares, behind one interface: build, set_ef, query.

Each is built as its own docs advise for inner-product search over unit vectors;
``vocab-index`` is the project's own (:mod:`devise_utils.apps.vocab`), ``nmslib`` the
project's EmbeddingIndex.
"""

from __future__ import annotations

import os
import sys

import numpy as np


class Runner:
    """build(); set_ef(ef); query(q, k, threads) -> ids (Q, k)."""

    def __init__(self, lib: str, base: np.ndarray, params: dict):
        self.lib, self.base, self.p = lib, base, params
        self.threads = os.cpu_count() or 1

    def build(self) -> None:
        lib, x, p = self.lib, self.base, self.p
        if lib == "vocab-index":  # devise_utils.apps.vocab's own build: IVF-Flat + tuning
            self.index = vocab_index(x)
            return
        if lib.startswith("faiss"):
            import faiss

            faiss.omp_set_num_threads(self.threads)
            if lib == "faiss-exact":
                self.index = faiss.IndexFlatIP(x.shape[1])
            elif lib.startswith("faiss-ivf"):
                self.index = ivf_index(faiss, x, lib, p)
                return
            else:
                self.index = faiss.IndexHNSWFlat(x.shape[1], p["M"], faiss.METRIC_INNER_PRODUCT)
                self.index.hnsw.efConstruction = p["efConstruction"]
            self.index.add(x)
        elif lib == "hnswlib":
            import hnswlib

            self.index = hnswlib.Index(space="ip", dim=x.shape[1])
            self.index.init_index(len(x), ef_construction=p["efConstruction"], M=p["M"])
            self.index.add_items(x, num_threads=self.threads)
        else:  # nmslib, exactly as the project uses it
            from devise_utils.apps.index import EmbeddingIndex

            self.index = EmbeddingIndex(x, [""] * len(x), method="hnsw", params=p)

    def set_ef(self, ef: int) -> None:
        if self.lib == "vocab-index":
            self.index.set_nprobe(ef)
        elif self.lib.startswith("faiss-ivf"):
            self.index.nprobe = ef
        elif self.lib == "faiss-hnsw":
            self.index.hnsw.efSearch = ef
        elif self.lib == "hnswlib":
            self.index.set_ef(ef)
        elif self.lib.startswith("nmslib"):
            self.index.set_ef_search(ef)

    def query(self, q: np.ndarray, k: int, threads: int) -> np.ndarray:
        if self.lib.startswith(("faiss", "vocab")):
            import faiss

            faiss.omp_set_num_threads(threads)
            if self.lib == "vocab-index":
                return self.index.knn(q, k)[0]
            return self.index.search(q, k)[1]
        if self.lib == "hnswlib":
            return self.index.knn_query(q, k=k, num_threads=threads)[0]
        self.index.threads = threads
        return self.index.knn(q, k)[0]


def vocab_index(x: np.ndarray):
    """A VocabIndex built as ``tag`` builds one (less parsing the file): nprobe tuned."""
    import faiss

    from devise_utils.apps import vocab

    index, params = vocab.ivf_flat(faiss, x, vocab.default_nlist(len(x)))
    v = vocab.VocabIndex([str(i) for i in range(len(x))], index, {"params": params})
    v.meta["tuning"] = vocab.tune(v, x, vocab.TARGET_RECALL)
    v.set_nprobe(v.meta["tuning"]["nprobe"])
    print(f"  vocab-index: nlist {params['nlist']}, tuned nprobe {v.nprobe} (recall "
          f"{v.meta['tuning']['recall']:.3f} on vocabulary queries)", file=sys.stderr, flush=True)
    return v


def ivf_index(faiss, x: np.ndarray, lib: str, p: dict):
    """IVF-Flat or IVF-SQ8 (inner product), k-means on a sample of ``p["train"]`` per list."""
    d, nlist = x.shape[1], p["nlist"]
    quantizer = faiss.IndexFlatIP(d)
    if lib == "faiss-ivf-flat":
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    else:
        index = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit,
                                              faiss.METRIC_INNER_PRODUCT)
    index.cp.niter = p.get("niter", 10)
    sample = x[np.random.default_rng(0).choice(len(x), min(len(x), p["train"] * nlist),
                                               replace=False)]
    index.train(sample)
    index.add(x)
    index.referenced_objects = [quantizer]  # kept alive with the index
    return index
