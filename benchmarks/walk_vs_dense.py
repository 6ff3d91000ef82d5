"""Per-image time of the two random walks (AffinityNet's and IRN's) beside the dense-matrix walk the
references run, on the same transition matrix (issue 10: ours must be >= 10x faster at stride 4).

    python benchmarks/walk_vs_dense.py [--height 375 --width 500 --threads 2 --summary FILE]

For a 500x375 image at grid stride 4 (125x94 = 11,750 nodes) and 8 (63x47):
- ours: the sparse CSR transition (radius 5, D^-1 A^beta with self-loops), 2^t sparse products with the
  (N, C) scores (C = 3: background + 2 classes), as the `walk` stage runs it;
- dense mat-vec: the same T as a dense (N, N) float32 matrix, 2^t dense products with the scores;
- dense squaring: PSA's and IRN's code, `T = T @ T` t times (O(N^3) each), then one product. At stride 4
  one squaring is timed and multiplied by t (every squaring costs the same).
AffinityNet's walk: t = 5 (the project's `rw.logt`); IRN's: t = 8 (256 steps, IRN's `exp_times`).
Affinities are random in (0, 1) (the cost does not depend on them); features and boundary maps are not
included (the same network runs before either walk).
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


_SQUARING: dict[int, float] = {}


def measure(h: int, w: int, logt: int, radius: int = 5, channels: int = 3) -> dict:
    from pipeline.propagation.pairs import pair_indices
    from pipeline.propagation.sparse_walk import random_walk, transition_matrix

    torch.manual_seed(0)
    src, _ = pair_indices(h, w, radius)
    transition = transition_matrix(torch.rand(src.numel()), h, w, radius, beta=8.0)
    scores = torch.rand(channels, h, w)
    n = h * w
    sparse = best_of(lambda: random_walk(scores, transition, logt))
    dense_t = transition.to_dense()
    v = scores.reshape(channels, n).t().contiguous()

    def matvec():
        out = v
        for _ in range(2 ** logt):
            out = dense_t @ out
        return out

    dense_matvec = best_of(matvec, repeats=1 if n > 5000 else 3)
    if n not in _SQUARING:  # the same for both walks on one grid
        start = time.perf_counter()
        torch.mm(dense_t, dense_t)
        _SQUARING[n] = time.perf_counter() - start
    one_squaring = _SQUARING[n]
    dense_squaring = one_squaring * logt + dense_matvec / 2 ** logt
    return {"grid": f"{w}x{h}", "nodes": n, "logt": logt, "nnz": int(transition.values().numel()),
            "sparse_s": round(sparse, 4), "dense_matvec_s": round(dense_matvec, 3),
            "dense_squaring_s": round(dense_squaring, 2), "dense_mib": round(n * n * 4 / 2**20, 1),
            "speedup_vs_matvec": round(dense_matvec / sparse, 1),
            "speedup_vs_squaring": round(dense_squaring / sparse, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=375)
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--summary")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for stride in (8, 4):
        h, w = -(-args.height // stride), -(-args.width // stride)
        for walk, logt in (("affinitynet", 5), ("irn", 8)):
            row = {"walk": walk, "stride": stride} | measure(h, w, logt)
            print(json.dumps(row), flush=True)
            rows.append(row)
    if args.summary:
        with open(args.summary, "a") as fh:
            fh.write(json.dumps({"date": time.strftime("%Y-%m-%d"), "threads": args.threads,
                                 "machine": platform.machine(), "rows": rows}) + "\n")


if __name__ == "__main__":
    main()
