"""More than one machine: two processes on this machine join one job with `jax.distributed.initialize` (CPU gloo
collectives), each with two CPU devices, and a training step sharded over the four devices of both processes equals
the one-process, one-device step."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

import tasks
from icl_meta.parallel import replicate
from icl_meta.train import TRAIN_STREAM, TrainConfig, init_state, stream_key, train_steps
from icl_meta.transformer import ICLTransformer, preset

FAMILY = tasks.get("prototype")
LEARNER = ICLTransformer(preset("paper", depth=2, protocol="causal"))
CFG = TrainConfig(batch=16, n=12, loss_start=2)

WORKER = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    import tasks
    from icl_meta.parallel import data_mesh, init_distributed, replicate
    from icl_meta.train import TRAIN_STREAM, TrainConfig, init_state, stream_key, train_steps
    from icl_meta.transformer import ICLTransformer, preset

    coordinator, process_id, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    init_distributed(coordinator, 2, process_id)
    assert jax.process_count() == 2 and jax.device_count() == 4 and jax.local_device_count() == 2
    family, learner = tasks.get("prototype"), ICLTransformer(preset("paper", depth=2, protocol="causal"))
    cfg = TrainConfig(batch=16, n=12, loss_start=2)
    mesh = data_mesh()  # every device of both processes
    state = replicate(init_state(learner, family, cfg), mesh)
    state, losses = train_steps(state, stream_key(cfg.seed, TRAIN_STREAM), learner=learner, family=family,
                                cfg=cfg.step_settings(), num_steps=2, mesh=mesh)
    leaves = [np.asarray(a).tolist() for a in jax.tree_util.tree_leaves(state.params)]  # replicated: whole here
    json.dump({"losses": np.asarray(losses).tolist(), "params": leaves}, open(out, "w"))
    jax.distributed.shutdown()
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two more Python processes, each compiling the step
def test_two_processes_train_like_one(tmp_path):
    coordinator = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    outs = [tmp_path / f"process{i}.json" for i in range(2)]
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, coordinator, str(i), str(outs[i])], env=env) for i in range(2)
    ]
    for worker in workers:
        assert worker.wait(timeout=240) == 0
    results = [json.loads(out.read_text()) for out in outs]

    state = replicate(init_state(LEARNER, FAMILY, CFG), None)
    state, losses = train_steps(
        state, stream_key(CFG.seed, TRAIN_STREAM), learner=LEARNER, family=FAMILY, cfg=CFG.step_settings(), num_steps=2
    )
    expected = [np.asarray(a) for a in jax.tree_util.tree_leaves(state.params)]
    for result in results:  # both processes hold the same replicated result, equal to one process's
        np.testing.assert_allclose(result["losses"], np.asarray(losses), rtol=1e-5)
        for got, want in zip(result["params"], expected, strict=True):
            np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)
