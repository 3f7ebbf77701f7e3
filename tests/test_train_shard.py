"""qcxr.train.shard: the I-th of N disjoint slices of a grid's runs (`qcxr run --shard I/N`)."""

from __future__ import annotations

import pytest

from qcxr.train.grid import cells, read_grid
from qcxr.train.shard import parse_shard, shard_bounds, shard_of

GRID = {
    "experiment": "paper",
    "train": {"mode": "frozen"},
    "grid": {
        "task": ["cxr8", "cxr14", "cxr19"],
        "model.head": ["cdl", "dqc"],
        "train.seed": [0, 1, 2, 3, 4],
    },
}


def _runs(shard):
    return [
        (d, c.train.seed)
        for cell in shard
        for c, d in zip(cell.configs, cell.run_dirs, strict=True)
    ]


@pytest.fixture(scope="module")
def grid_cells(tmp_path_factory):
    return cells(read_grid(GRID), tmp_path_factory.mktemp("runs") / "paper")


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5])
def test_shards_are_disjoint_cover_every_run_and_balance(grid_cells, count):
    every = _runs(grid_cells)
    assert len(every) == 30 and len(set(every)) == 30
    shards = [_runs(shard_of(grid_cells, i, count)) for i in range(count)]
    seen = [run for shard in shards for run in shard]
    assert len(seen) == len(set(seen)) == 30  # disjoint
    assert set(seen) == set(every)  # covering
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1, sizes
    # the same on every call, and in the grid's order (cell by cell, seeds in order)
    assert shards == [_runs(shard_of(grid_cells, i, count)) for i in range(count)]
    assert seen == every
    # each run keeps its own config and directory; a cell holds only its shard's seeds
    for i in range(count):
        for cell in shard_of(grid_cells, i, count):
            assert cell.configs and len(cell.configs) == len(cell.run_dirs)
            for config, run_dir in zip(cell.configs, cell.run_dirs, strict=True):
                assert run_dir.name == f"seed-{config.train.seed}"
                assert run_dir.parent.name == config.model.head
                assert run_dir.parent.parent == cell.experiment_dir / config.task


def test_seeds_of_a_cell_stay_together_when_blocks_allow(grid_cells):
    # 30 runs in 6 shards: each shard is exactly one cell of 5 seeds (vmapped together)
    for i in range(6):
        shard = shard_of(grid_cells, i, 6)
        assert len(shard) == 1 and len(shard[0].configs) == 5
    # more shards than runs: the extra shards are empty
    assert sum(len(_runs(shard_of(grid_cells, i, 40))) for i in range(40)) == 30
    assert shard_of(grid_cells, 39, 40) == []


def test_shard_bounds():
    assert [shard_bounds(7, i, 3) for i in range(3)] == [(0, 3), (3, 5), (5, 7)]
    assert shard_bounds(0, 0, 2) == (0, 0)


@pytest.mark.parametrize(
    ("spec", "expected"), [("0/1", (0, 1)), ("2/5", (2, 5)), (" 3 / 4 ", (3, 4))]
)
def test_parse_shard(spec, expected):
    assert parse_shard(spec) == expected


@pytest.mark.parametrize("spec", ["3/3", "-1/2", "a/b", "2", "1/0", "1/2/3", "", "1.0/2"])
def test_bad_shard_specs_name_the_value_and_the_form(spec):
    with pytest.raises(ValueError) as err:
        parse_shard(spec)
    message = str(err.value)
    assert repr(spec) in message and "I/N" in message and "0 <= I < N" in message
