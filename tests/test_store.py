"""The run folder's state: RNG state as JSON, checkpoints that count only once complete."""

import random

import numpy as np
import pytest
import torch

import fedmkt.federation.store as store_module
from fedmkt.federation.store import RunStore, rng_state, set_rng_state


def test_rng_state_survives_json_exactly(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    random.random(), np.random.normal(), torch.randn(1)  # a cached Gaussian in NumPy's state too
    state = rng_state()
    draws = (random.random(), np.random.normal(size=3).tolist(), torch.rand(3).tolist())
    set_rng_state(state)
    assert (random.random(), np.random.normal(size=3).tolist(), torch.rand(3).tolist()) == draws


def test_a_checkpoint_counts_only_once_its_manifest_is_written(tmp_path, monkeypatch):
    store = RunStore(tmp_path)
    adapter = {"w": torch.ones(2)}
    store.save_checkpoint(1, adapter, server_train_calls=4)
    # A crash after round 2's files but before its manifest: the resume must still see round 1.
    real = store_module.atomic_write_json

    def die_on_manifest(path, data):
        if path.name == "state.json":
            raise KeyboardInterrupt
        return real(path, data)

    monkeypatch.setattr(store_module, "atomic_write_json", die_on_manifest)
    with pytest.raises(KeyboardInterrupt):
        store.save_checkpoint(2, {"w": torch.zeros(2)}, server_train_calls=9)
    monkeypatch.undo()
    checkpoint = store.load_checkpoint()
    assert (checkpoint.completed_round, checkpoint.server_train_calls) == (1, 4)
    assert torch.equal(checkpoint.server_adapter["w"], torch.ones(2))
