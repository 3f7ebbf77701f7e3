"""Benchmarks: the quantum head step (`bench quantum`) and the Table III harness (`bench table3`).

- `cli.py`: the `qcxr bench` subcommands and the `--config` option they share.
- `quantum.py`: `bench quantum`, the head step on each simulator backend, one process per case.
- `table3.py`: `bench table3`, options -> `cells.Plan` + `harness.RunOptions`, then run, render.
- `cells.py`: `Plan` (what was asked) and `Cell` (one cell's result file), reuse of finished cells.
- `harness.py`: running: worker processes, their interpreters, time and memory limits.
- `tables.py`: rendering: summary rows, markdown tables, speed-ups, the paper's Table III.
- `machine.py`: the machine's facts and processes' memory (psutil; peak RSS in one place).
- `frameworks/`: one module per framework, and the worker that measures cells in its process.
"""
