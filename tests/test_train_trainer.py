"""What the two trainers share: compiled functions reused across runs, and run ends."""

from __future__ import annotations

import numpy as np

from qcxr import config as config_lib
from qcxr import rundir
from qcxr.train import parallel
from qcxr.train.frozen import FrozenTrainer
from qcxr.train.trainer import compiled, resolved_settings
from test_train_support import config, frozen_data


def test_compiled_functions_are_shared_by_runs_that_compute_the_same():
    built = []
    freq = np.zeros(8, np.float32)

    def build():
        built.append(1)
        return object()

    a = config_lib.from_dict({"train": {"seed": 1, "patience": 2}, "data": {"study": "/a"}})
    b = config_lib.from_dict({"train": {"seed": 7, "patience": 9}, "data": {"study": "/b"}})
    c = config_lib.from_dict({"train": {"learning_rate": 0.5}})
    first = compiled("test-kind", a, 10, freq, build)
    assert compiled("test-kind", b, 10, freq, build) is first  # seed, patience, paths differ
    assert compiled("test-kind", c, 10, freq, build) is not first  # the learning rate differs
    assert compiled("test-kind", a, 11, freq, build) is not first  # the schedule's length differs
    assert len(built) == 3


def test_resolved_settings_name_what_auto_became():
    dqc = config_lib.from_dict({"task": "cxr19", "model": {"head": "dqc"}})
    assert resolved_settings(dqc, "nih") == {"model.backend": "mps", "data.source": "nih"}
    cdl = config_lib.from_dict({"task": "cxr8"})
    assert resolved_settings(cdl, "mimic") == {"model.backend": None, "data.source": "mimic"}


def test_conclude_keeps_a_failed_runs_status(tmp_path):
    data = frozen_data(n_train=64)
    trainer = FrozenTrainer(config(), data, parallel.data_mesh(), progress=False)
    book = trainer.open_book(config(), tmp_path, resume=False)
    failed = {"status": "failed", "reason": "non-finite loss", "message": "loss is nan"}
    rundir.write_status(tmp_path, failed)
    result = trainer.conclude(book)
    assert (result.status, result.reason) == ("failed", "loss is nan")
    assert not rundir.prediction_files(tmp_path)  # no predictions for a failed run
    book.checkpoints.close()
