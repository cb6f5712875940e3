"""Run by tests/test_distributed.py under mpiexec: trains the tests' tiny model for a few steps,
each rank on its B rows of every 2B-row batch, and rank 0 saves the losses, gradient norms and final weights."""
import sys

import numpy as np

from llmpy import cpu, distributed
from llmpy.gpt2 import GPT2
from llmpy.optim import AdamW
from tests.test_distributed import STEPS, B, T, batch
from tests.test_gpt2 import TINY, random_params


def main(out_path, zero):
    comm = distributed.init(cpu)
    params = random_params(TINY, seed=21)
    model = GPT2(TINY, cpu, B, T, params=params, comm=comm, zero=zero)
    optimizer = AdamW(model, params, weight_decay=0.1, grad_clip=0.5)
    losses, norms = [], []
    for step in range(STEPS):
        inputs, targets = batch(step, comm.world * B)
        rows = slice(comm.rank * B, (comm.rank + 1) * B)
        model.zero_grad()
        model.forward(inputs[rows], targets[rows])
        model.backward()
        model.reduce_gradients()
        norms.append(optimizer.update(1e-3))
        losses.append(comm.sum(model.mean_loss()) / comm.world)
    params = optimizer.params_fp32()
    if comm.rank == 0:
        np.savez(out_path, losses=np.array(losses), norms=np.array(norms), params=params)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
