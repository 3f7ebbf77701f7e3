"""Shards of a grid: the I-th of N disjoint slices of its runs (`qcxr run GRID --shard I/N`).

The rule: list the grid's runs in file order (cell by cell, each cell's seeds in order, as
`train.grid.cells` gives them), then cut that list into N contiguous blocks whose sizes differ by
at most one; shard I trains block I. So

- the shards are disjoint and together hold every run, whatever N;
- the assignment depends only on the grid file (and the command line's overrides), never on
  what is already on disk, so N workers started at different times agree on it (changing the
  grid or N moves runs between shards; finished runs are still skipped, and a lock keeps two
  workers off one run);
- the seeds of one cell stay together wherever a block boundary allows: frozen mode trains a
  shard's seeds of a cell together (vmap), and a finetune shard loads few tasks' data.

I is 0-based, 0 <= I < N: `--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT` for an array
`--array=0-(N-1)`; for `--array=1-N` pass `$((SLURM_ARRAY_TASK_ID - 1))/$SLURM_ARRAY_TASK_COUNT`.
"""

from __future__ import annotations

from qcxr.train.grid import Cell

FORM = "I/N with whole numbers 0 <= I < N (I is 0-based: 0/4, 1/4, 2/4, 3/4)"


def parse_shard(spec: str) -> tuple[int, int]:
    """(I, N) from "I/N"; a ValueError names the value and the form expected."""
    parts = str(spec).strip().split("/")
    try:
        if len(parts) != 2:
            raise ValueError
        index, count = (int(p.strip()) for p in parts)
    except ValueError:
        raise ValueError(f"--shard {spec!r}: expected {FORM}") from None
    if count < 1:
        raise ValueError(f"--shard {spec!r}: N must be at least 1; expected {FORM}")
    if not 0 <= index < count:
        raise ValueError(f"--shard {spec!r}: I must be in 0..{count - 1}; expected {FORM}")
    return index, count


def shard_bounds(total: int, index: int, count: int) -> tuple[int, int]:
    """[start, stop) of block `index` of `count` over `total` runs; the first total % count
    blocks have one run more."""
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard {index}/{count}: expected {FORM}")
    size, extra = divmod(total, count)
    start = index * size + min(index, extra)
    return start, start + size + (index < extra)


def shard_of(cells: list[Cell], index: int, count: int) -> list[Cell]:
    """The cells of shard `index` of `count`, each with only its runs in that shard (cells
    without any are left out), in the grid's order."""
    runs = [(c, k) for c in cells for k in range(len(c.run_dirs))]
    start, stop = shard_bounds(len(runs), index, count)
    chosen: dict[int, list[int]] = {}
    for cell, k in runs[start:stop]:
        chosen.setdefault(id(cell), []).append(k)
    result = []
    for cell in cells:
        ks = chosen.get(id(cell))
        if ks:
            result.append(
                Cell(
                    cell.experiment_dir,
                    [cell.configs[k] for k in ks],
                    [cell.run_dirs[k] for k in ks],
                )
            )
    return result
