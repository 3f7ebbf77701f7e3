"""Data pipeline benchmark (not a test): cache build, cached vs uncached epochs, augmentation,
bytes per image, whether the loader keeps a training step fed, and (optionally) how learnable
the synthetic labels are from pooled features of a random-init ResNet50.

Keeping a step fed (`fed_step`): a step `--step-factor` (2) times as long as loading one batch
from the cache, once as a sleep (a GPU step: the CPU is free) and once as real CPU work (float32
matmuls on one BLAS thread, so the step and the loader share the cores). For every batch but
the run's first (a later epoch's first batch is read while the previous epoch ends): whether it was finished and queued when the step asked for it
(`ready_when_asked`; per batch R, r or W in `per_batch`, see `fed_epochs`) and the time spent
in next() (`next_ms`: the queue handoff when the batch was ready). The loader keeps the step fed
when every batch was ready and the handoff stays small. The load average is in the output.

    .venv/bin/python benchmarks/data_pipeline.py --images 200 --threads 4 --batch 32
    .venv/bin/python benchmarks/data_pipeline.py --learnability 600   # needs torch+transformers

Images are 1024 x 1024 8-bit grayscale PNGs like NIH's (synthetic chest renderings, a few
unique ones copied to the requested count). Results are printed as JSON; record them in
benchmarks/data_pipeline.md with the date, machine and versions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from qcxr.data.cache import ImageCache
from qcxr.data.loader import Loader
from qcxr.data.render import Renderer


class Files:
    """A dataset of files with dummy labels (what the loader needs)."""

    def __init__(self, paths: list[Path]):
        self.paths = paths
        self.ids = [p.name for p in paths]
        self.labels = np.zeros((len(paths), 8), np.float32)


def nih_like_pngs(directory: Path, count: int, unique: int = 24) -> list[Path]:
    renderer, rng = Renderer(1024, 1024, seed=0), np.random.default_rng(0)
    sources = []
    for k in range(min(unique, count)):
        path = directory / f"{k:08d}_000.png"
        findings = ["Effusion", "Mass"] if k % 3 == 0 else []
        Image.fromarray(renderer.render(findings, rng), "L").save(path)  # default zlib level
        sources.append(path)
    paths = list(sources)
    for k in range(len(sources), count):
        path = directory / f"{k:08d}_000.png"
        shutil.copy(sources[k % len(sources)], path)
        paths.append(path)
    return paths


def timed_epoch(loader: Loader, epoch: int = 0) -> dict:
    """Images/s of one epoch read as fast as the caller can take the batches."""
    count = 0
    start = time.perf_counter()
    for batch in loader.epoch(epoch):
        count += len(batch.ids)
    elapsed = time.perf_counter() - start
    return {"images_per_s": count / elapsed, "batches": len(loader), "seconds": elapsed}


class CpuStep:
    """A training step that is real CPU work: float32 128 x 128 matmuls on one BLAS thread
    (one core busy, the GIL taken between products as a Python step loop takes it), as many as
    take `seconds` on an idle core."""

    def __init__(self, seconds: float):
        from threadpoolctl import threadpool_limits

        self.limits = threadpool_limits(limits=1, user_api="blas")
        rng = np.random.default_rng(0)
        self.a = rng.standard_normal((128, 128), np.float32)
        # orthogonal, so repeated products neither overflow nor fall into slow denormals
        self.b = np.linalg.qr(rng.standard_normal((128, 128))).Q.astype(np.float32)
        self.products = 1
        alone = min(self._timed(200) for _ in range(3)) / 200
        self.products = max(1, round(seconds / alone))

    def _timed(self, products: int) -> float:
        start = time.perf_counter()
        x = self.a
        for _ in range(products):
            x = x @ self.b
        return time.perf_counter() - start

    def __call__(self) -> None:
        self._timed(self.products)

    def close(self) -> None:
        self.limits.restore_original_limits()


def fed_epochs(loader: Loader, step, epochs: int) -> dict:
    """Whether the loader keeps a step fed. For every batch: was it finished and queued when the
    step asked for it (`Batch.ready_at` <= the time of the request), how long next() took, and
    whether the loader was still reading a later batch at that moment (it starts batch j + p - 1
    when the step takes batch j - 1, p = prefetch; "busy" means that one was not finished yet,
    i.e. loading it took longer than the step). Per batch in `per_batch`: R ready and the loader
    idle, r ready and the loader busy, W not ready; then the ms in next(). The first batch of the
    first epoch is read when first asked for and is reported apart; later epochs' first batches
    are read ahead while the previous epoch's last step runs, and count like every other."""
    ready, busy, waits, firsts, steps = [], [], [], [], []
    ahead = max(loader.prefetch, 1) - 1
    start = time.perf_counter()
    for epoch in range(epochs):
        asked, finished = [], []
        batches = loader.epoch(epoch)
        for k in range(len(loader)):
            asked.append(time.perf_counter())
            batch = next(batches)
            got = time.perf_counter()
            finished.append(batch.ready_at)
            if k == 0 and epoch == 0:
                firsts.append(got - asked[k])
            else:
                waits.append(got - asked[k])
            step()
            steps.append(time.perf_counter() - got)
        assert next(batches, None) is None
        for k in range(1 if epoch == 0 else 0, len(asked)):
            ready.append(finished[k] <= asked[k])
            later = k + ahead
            busy.append(later < len(finished) and finished[later] > asked[k])
    elapsed = time.perf_counter() - start
    waits_ms = np.array(waits) * 1e3
    idle = waits_ms[~np.array(busy, bool)]

    def stats(values: np.ndarray) -> dict:
        if not len(values):
            return {"count": 0}
        return {
            "count": len(values),
            "median": float(np.median(values)),
            "p90": float(np.percentile(values, 90)),
            "max": float(values.max()),
            "over_1ms": int((values > 1).sum()),
        }

    return {
        "epochs": epochs,
        "batches_after_first": len(ready),  # every batch but the run's very first
        "ready_when_asked": int(sum(ready)),
        "all_ready_when_asked": bool(all(ready)),
        "loader_busy_when_asked": int(sum(busy)),
        "next_ms": stats(waits_ms),
        "next_ms_loader_idle": stats(idle),
        "first_batch_ms": [round(w * 1e3, 2) for w in firsts],
        "step_ms_mean": float(np.mean(steps) * 1e3),
        "step_ms_max": float(np.max(steps) * 1e3),
        "images_per_s": epochs * len(loader.dataset.ids) / elapsed,
        "per_batch": " ".join(
            f"{('r' if b else 'R') if r else 'W'}{w:.3f}"
            for r, b, w in zip(ready, busy, waits_ms, strict=True)
        ),
    }


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def joblib_epoch(dataset: Files, cache: ImageCache, batch: int, threads: int) -> float:
    """Images/s reading the same epoch with joblib threads, one Parallel call per batch."""
    from joblib import Parallel, delayed

    start = time.perf_counter()
    with Parallel(n_jobs=threads, prefer="threads") as parallel:
        for i in range(0, len(dataset.paths), batch):
            images = parallel(delayed(cache.get)(p) for p in dataset.paths[i : i + batch])
            np.stack(images)
    return len(dataset.paths) / (time.perf_counter() - start)


def augmentation(batch: int, repeats: int) -> dict:
    import jax

    from qcxr.data.augment import augment, augment_key

    images = np.random.default_rng(0).integers(0, 256, (batch, 224, 224, 1), dtype=np.uint8)
    augment(images, augment_key(0, 0, 0)).block_until_ready()  # compile
    start = time.perf_counter()
    for k in range(repeats):
        augment(images, augment_key(0, 0, k)).block_until_ready()
    per_batch = (time.perf_counter() - start) / repeats
    return {
        "device": str(jax.devices()[0]),
        "seconds_per_batch": per_batch,
        "images_per_s": batch / per_batch,
    }


def learnability(count: int, seed: int = 1) -> dict:
    """Mean test AUROC of per-label logistic regressions on random-init ResNet50 pooled features."""
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler
    from transformers import ResNetConfig, ResNetModel

    from qcxr.data.augment import normalize
    from qcxr.data.datasets import NIHCXRLT
    from qcxr.data.preprocess import preprocess
    from qcxr.data.synthetic import generate_study

    root = Path(tempfile.mkdtemp(prefix="qcxr-learn-"))
    try:
        study = generate_study(root, n_train=count, n_val=4, n_test=4, n_mimic=4, seed=seed)
        data = NIHCXRLT(study.nih_csv["train"], study.nih_images, "cxr19")
        torch.manual_seed(0)
        model = ResNetModel(ResNetConfig()).eval()  # random weights: no download possible here
        features = []
        with torch.no_grad():
            for i in range(0, len(data), 50):
                x = np.asarray(normalize(np.stack([preprocess(p) for p in data.paths[i : i + 50]])))
                x = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
                features.append(model(x).pooler_output.flatten(1).numpy())
    finally:
        shutil.rmtree(root, ignore_errors=True)
    features = np.concatenate(features)
    cut = len(features) * 2 // 3
    scaler = StandardScaler().fit(features[:cut])
    train, test = scaler.transform(features[:cut]), scaler.transform(features[cut:])
    per_label = {}
    for j, name in enumerate(data.label_names):
        y_train, y_test = data.labels[:cut, j], data.labels[cut:, j]
        if y_train.sum() < 2 or y_test.sum() < 1:
            per_label[name] = {
                "auroc": None,
                "train_pos": int(y_train.sum()),
                "test_pos": int(y_test.sum()),
            }
            continue
        clf = LogisticRegression(C=0.05, max_iter=2000).fit(train, y_train)
        auroc = roc_auc_score(y_test, clf.decision_function(test))
        per_label[name] = {
            "auroc": round(float(auroc), 3),
            "train_pos": int(y_train.sum()),
            "test_pos": int(y_test.sum()),
        }
    from qcxr.labels import TASKS

    def mean(names):
        values = [per_label[n]["auroc"] for n in names if per_label[n]["auroc"] is not None]
        return round(float(np.mean(values)), 3)

    return {
        "images": count,
        "cxr8_mean_auroc": mean(TASKS["cxr8"]),
        "cxr19_mean_auroc": mean(TASKS["cxr19"]),
        "per_label": per_label,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--augment-repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3, help="cached epochs timed (best kept)")
    parser.add_argument("--fed-epochs", type=int, default=3, help="epochs of each fed-step run")
    parser.add_argument(
        "--step-factor", type=float, default=2.0, help="step = this x a batch's load time"
    )
    parser.add_argument("--prefetch", type=int, default=None, help="default: the loader's")
    parser.add_argument("--learnability", type=int, default=0, help="images (0: skip)")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    results: dict = {
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs",
        "load_average_1_5_15_at_start": load_average(),
        "settings": vars(args) | {"workdir": str(args.workdir)},
    }
    if args.learnability:
        results["learnability"] = learnability(args.learnability)
        print(json.dumps(results, indent=2))
        return
    work = args.workdir or Path(tempfile.mkdtemp(prefix="qcxr-bench-"))
    try:
        (work / "images").mkdir(parents=True, exist_ok=True)
        paths = nih_like_pngs(work / "images", args.images)
        data = Files(paths)
        png_bytes = np.mean([p.stat().st_size for p in paths])
        with ImageCache(work / "cache") as cache:
            start = time.perf_counter()
            cache.build(paths, threads=args.threads, progress=False)
            build = len(paths) / (time.perf_counter() - start)
            stored = [len(cache.store.get(str(p))) for p in paths]
            from safetensors.numpy import save

            float32 = len(save({"image": np.zeros((224, 224, 3), np.float32)}))
            extra = {} if args.prefetch is None else {"prefetch": args.prefetch}
            cached = Loader(
                data, cache, batch_size=args.batch, seed=0, threads=args.threads, **extra
            )
            # Best of a few epochs: on a shared machine the slowest ones measure the neighbours.
            epochs = [timed_epoch(cached, e) for e in range(args.epochs)]
            cached_epoch = max(epochs, key=lambda r: r["images_per_s"])
            mean_rate = float(np.mean([r["images_per_s"] for r in epochs]))
            joblib_rate = max(
                joblib_epoch(data, cache, args.batch, args.threads) for _ in range(args.epochs)
            )
            uncached = Loader(data, None, batch_size=args.batch, seed=0, threads=args.threads)
            uncached_epoch = timed_epoch(uncached)
            uncached.close()  # its next epoch is being read ahead: not wanted here
            # A step longer than loading one batch from the cache (twice, by default, at the mean
            # rate of the epochs above): the loader must keep it fed. Once as a sleep (the CPU is
            # free, as during a GPU step), once as real CPU work on one core.
            load = args.batch / mean_rate
            step = args.step_factor * load
            fed: dict = {
                "batch_load_ms": load * 1e3,
                "step_ms": step * 1e3,
                "prefetch": cached.prefetch,
                "load_average_before": load_average(),
            }
            cached.close()
            fed["sleep_step"] = fed_epochs(cached, lambda: time.sleep(step), args.fed_epochs)
            cpu = CpuStep(step)
            try:
                fed["cpu_step"] = {"matmuls": cpu.products} | fed_epochs(
                    cached, cpu, args.fed_epochs
                )
            finally:
                cpu.close()
            fed["load_average_after"] = load_average()
        results |= {
            "png_bytes_per_image": float(png_bytes),
            "cache_build_images_per_s": build,
            "cached_bytes_per_image": float(np.mean(stored)),
            "float32_safetensors_bytes_per_image": float32,
            "cached_over_float32": float(np.mean(stored)) / float32,
            "epoch_from_cache": cached_epoch,
            "epoch_from_cache_joblib_images_per_s": joblib_rate,
            "epoch_from_png": uncached_epoch,
            "cache_speedup": cached_epoch["images_per_s"] / uncached_epoch["images_per_s"],
            "fed_step": fed,
            "augment": augmentation(args.batch, args.augment_repeats),
        }
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
