"""The step loop every sampler shares, for exact analysis and real sampling alike (SPEC §11).

Step i of an S-step run is called with a static ``order = min(i, warmup)`` (the number of
valid history entries of a multistep sampler) and a static ``last = (i == S − 1)``. The
warm-up steps (i < warmup) are unrolled, the steady steps warmup ≤ i < S − 1 run in one
``lax.scan`` with a traced ``i``, and the last step is unrolled: one compiled body per
distinct (order, last), whatever S is. ``step_plan`` names that split; the engine's
vectorised composition (``core.compose``) follows it too.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["step_loop", "step_plan"]


def step_plan(num_steps: int, warmup: int):
    """How S steps split: (head, middle, tail).

    head: [(i, order, last)] for the warm-up steps i < min(warmup, S) (order = i);
    middle: (start, stop, warmup) for the steady steps start ≤ i < stop = S − 1, or None;
    tail: (S − 1, warmup, True) for the last step when it is not a warm-up step, or None.
    """
    head = [(i, i, i == num_steps - 1) for i in range(min(warmup, num_steps))]
    start = len(head)
    middle = (start, num_steps - 1, warmup) if num_steps - 1 > start else None
    tail = (num_steps - 1, warmup, True) if num_steps - 1 >= start else None
    return head, middle, tail


def step_loop(num_steps: int, warmup: int, body, carry, *, collect: bool = False):
    """Run ``carry = body(carry, i, order=…, last=…)`` for i = 0 … num_steps − 1.

    Args:
      num_steps: S (static).
      warmup: steps whose ``order`` is below its steady value (a sampler's ``history``).
      body: ``body(carry, i, *, order, last) -> carry``; ``i`` is an int or a traced int32.
      carry: any pytree.
      collect: also return the carry after every step, stacked along a new leading axis.

    Returns:
      The final carry, or (final carry, stacked carries) when ``collect``.
    """
    outs = []

    def run(c, i, order, last):
        c = body(c, i, order=order, last=last)
        if collect:
            outs.append(jax.tree.map(lambda a: a[None], c))
        return c

    head, middle, tail = step_plan(num_steps, warmup)
    for i, order, last in head:
        carry = run(carry, i, order, last)
    if middle is not None:  # steady middle steps, one scan
        start, stop, order = middle

        def scan_body(c, i):
            c = body(c, i, order=order, last=False)
            return c, (c if collect else None)

        carry, ys = jax.lax.scan(scan_body, carry, jnp.arange(start, stop, dtype=jnp.int32))
        if collect:
            outs.append(ys)
    if tail is not None:
        carry = run(carry, *tail)
    if not collect:
        return carry
    return carry, jax.tree.map(lambda *a: jnp.concatenate(a, 0), *outs)
