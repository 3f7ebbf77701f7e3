"""Feature-extraction throughput of the frozen backbone: images per second at a batch size.

Times the jitted step that `qcxr features` runs per batch (uint8 -> ImageNet normalisation ->
ResNet-50 eval -> pooled float32, copied back to the host) on random 224x224 grayscale images,
after one warm-up batch that compiles. Weights are random: throughput does not depend on them.

    .venv/bin/python benchmarks/features_throughput.py --batch-size 32 --batches 3 [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import jax
import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=3, help="timed batches after warm-up")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    args = parser.parse_args()

    import jax.numpy as jnp

    from qcxr.features import _forward_fn
    from qcxr.models.resnet import init_resnet50_variables, resnet50

    model = resnet50(dtype=jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32)
    forward = _forward_fn(model, views=0, augment_fn=None)
    variables = jax.device_put(init_resnet50_variables(0))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.batch_size, 224, 224, 1), dtype=np.uint8)

    start = time.perf_counter()
    np.asarray(forward(variables, jnp.asarray(images), None))
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(args.batches):
        start = time.perf_counter()
        np.asarray(forward(variables, jnp.asarray(images), None))  # includes transfer both ways
        times.append(time.perf_counter() - start)
    best, median = min(times), float(np.median(times))
    print(
        json.dumps(
            {
                "batch_size": args.batch_size,
                "dtype": args.dtype,
                "device": str(jax.devices()[0]),
                "warmup_compile_s": round(compile_s, 2),
                "batch_s": [round(t, 3) for t in times],
                "images_per_s_median": round(args.batch_size / median, 2),
                "images_per_s_best": round(args.batch_size / best, 2),
                "jax": jax.__version__,
                "python": platform.python_version(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
