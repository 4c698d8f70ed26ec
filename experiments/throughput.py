"""Training throughput of the context protocols, side by side in one process.

    python experiments/throughput.py            # paper preset, prototype tasks, d=2, C=2, N=50, batch 64
    python experiments/throughput.py --quick    # fewer timed steps

Expected runtime: ~5 min on a 2-core CPU (the literal loop's 2.5-minute compilation dominates).
Expected result (2-core CPU): `causal` ~5x the literal per-prefix loop's task-positions/s; the padded `prefix`
pass ~0.5x (it pads every prefix to N tokens: about twice the loop's token work) but compiles 10x faster;
`prefix` with 8 sampled positions per step ~3x the loop's steps/s.

Rows: `loop`, the reference's algorithm (one bidirectional pass over x[:, :i+1] per prefix length i, summed into
one loss, here all inside one jitted step); `prefix` (the padded all-prefixes pass, all positions or a random
subset); `causal` (one pass). Every row samples its tasks inside the compiled step and fuses K steps with
lax.scan. Task-positions/s counts the positions trained per second (batch x positions in the loss).
"""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import optax

import tasks
from icl_meta.runs import provenance, write_json
from icl_meta.train import TrainConfig, init_state, step_positions, stream_key, train_steps
from icl_meta.transformer import ICLTransformer, make_tokens, preset


def literal_loop_steps(learner, family, cfg: TrainConfig, num_steps: int):
    """The reference's per-prefix algorithm as one compiled call of `num_steps` steps."""
    spec, opt = family.spec, optax.adam(cfg.lr)

    def loss(params, x, y):
        net = learner.network(params)
        ctx, qry = make_tokens(x, y, spec)
        total = 0.0
        for i in range(cfg.loss_start, cfg.stop):  # the literal loop: one bidirectional pass per prefix length
            tokens = jnp.concatenate([ctx[:, :i], qry[:, i : i + 1]], 1)
            logp = jax.nn.log_softmax(net(tokens, jnp.ones((1, i + 1), bool))[:, -1])
            total -= jnp.mean(jnp.take_along_axis(logp, y[:, i, None], axis=-1))
        return total / (cfg.stop - cfg.loss_start)

    def one_step(state, _):
        key = jax.random.fold_in(stream_key(cfg.seed, 0), state.step)
        ep = family.sample(jax.random.fold_in(key, 0), cfg.batch, cfg.n)
        value, grads = jax.value_and_grad(loss)(state.params, ep.x, ep.y)
        updates, opt_state = opt.update(grads, state.opt_state, state.params)
        new = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates), opt_state=opt_state)
        return new, value

    return jax.jit(lambda state: jax.lax.scan(one_step, state, None, length=num_steps))


def measure(row: dict, compiled_call, state, repeats: int) -> dict:
    t = time.perf_counter()
    state, losses = compiled_call(state)
    jax.block_until_ready(losses)
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(repeats):
        state, losses = compiled_call(state)
    jax.block_until_ready(losses)
    seconds = (time.perf_counter() - t) / (repeats * row["scan_steps"])
    return {**row, "compile_s": round(compile_s, 2), "steps_per_s": 1.0 / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer timed steps")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("figures/throughput_protocols.json"))
    args = parser.parse_args()
    family = tasks.get("prototype")
    k, repeats = (10, 2) if args.quick else (20, 5)
    rows = []
    for protocol, per_step in (("loop", None), ("prefix", None), ("prefix", 8), ("causal", None)):
        learner = ICLTransformer(preset("paper", protocol="prefix" if protocol == "loop" else protocol))
        cfg = TrainConfig(batch=args.batch, n=50, loss_start=2, positions_per_step=per_step, scan_steps=k, eval_every=k)
        state = init_state(learner, family, cfg)
        if protocol == "loop":
            call = literal_loop_steps(learner, family, cfg, k)
        else:
            call = functools.partial(train_steps, learner=learner, family=family, cfg=cfg, num_steps=k)
        positions = len(step_positions(cfg, jax.random.key(0)))
        row = {"preset": "paper", "protocol": protocol, "positions_per_step": per_step, "scan_steps": k}
        row = measure(row, call, state, repeats)
        row["task_positions_per_s"] = row["steps_per_s"] * args.batch * positions
        rows.append(row)
        print(
            f"{protocol:<7} positions/step {positions:>3}: {row['steps_per_s']:7.2f} steps/s, "
            f"{row['task_positions_per_s']:9.0f} task-positions/s (compile {row['compile_s']:.1f} s)",
            flush=True,
        )
    base = rows[0]["task_positions_per_s"]
    for row in rows:
        row["speedup_vs_loop"] = row["task_positions_per_s"] / base
    print("\nprotocol  positions/step  steps/s  task-positions/s  x loop")
    for row in rows:
        per = row["positions_per_step"] or 48
        print(
            f"{row['protocol']:<9} {per:>14} {row['steps_per_s']:8.2f} {row['task_positions_per_s']:17.0f} "
            f"{row['speedup_vs_loop']:7.1f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(
        args.out,
        {"experiment": "throughput_protocols", "batch": args.batch, "n": 50, "rows": rows, "provenance": provenance()},
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
