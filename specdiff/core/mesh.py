"""The devices specdiff runs on: one 1-D mesh over them (issue 14).

Every sharded entry point (sharded spectra, sharded per-eigenvalue sweeps, the grid runner)
takes its devices from ``current_mesh()``: a 1-D ``jax.sharding.Mesh`` with the axis name
``AXIS`` over the selected devices. The selection is, in order of precedence:

- ``use_devices(spec)`` (a context manager; the CLI's and experiments' ``--devices``);
- the environment variable ``SPECDIFF_DEVICES``;
- all devices (``jax.devices()``: in a multi-host run, every process's devices).

A spec is ``"all"``, a count ``n`` (the first n devices, ``"2"`` or 2) or device ids: a
comma-separated list (``"0,2"``; one id as ``"3,"``) or a list of ints.
With one device every entry point runs today's unsharded code, at today's speed.
"""

from __future__ import annotations

import contextlib
import os
import threading

import jax
import numpy as np

__all__ = [
    "AXIS",
    "ENV",
    "select_devices",
    "selection_key",
    "current_mesh",
    "use_devices",
    "pad_to_multiple",
]

AXIS = "devices"
ENV = "SPECDIFF_DEVICES"
_local = threading.local()  # per thread: the stack of specs set by use_devices


def _stack() -> list:
    if not hasattr(_local, "stack"):
        _local.stack = []
    return _local.stack


_MESHES: dict = {}


def _parse(spec) -> str | int | tuple[int, ...]:
    """Normalise a device spec; raises ValueError naming what is allowed."""
    allowed = "allowed: 'all', a device count n >= 1, or comma-separated device ids like '0,2'"
    if spec is None:
        return "all"
    if isinstance(spec, bool):
        raise ValueError(f"devices must be a spec, got {spec!r}; {allowed}")
    if isinstance(spec, int):
        if spec < 1:
            raise ValueError(f"devices must be >= 1, got {spec}; {allowed}")
        return spec
    if isinstance(spec, (list, tuple)):
        spec = ",".join(str(v) for v in spec) + ","
    if isinstance(spec, str):
        s = spec.strip().lower()
        if s in ("", "all"):
            return "all"
        try:
            if "," in s:
                ids = tuple(int(v) for v in s.split(",") if v.strip())
                if not ids or len(set(ids)) != len(ids) or min(ids) < 0:
                    raise ValueError
                return ids
            n = int(s)
        except ValueError:
            raise ValueError(f"devices: cannot read {spec!r}; {allowed}") from None
        return _parse(n)
    raise ValueError(f"devices: cannot read {spec!r}; {allowed}")


def selection_key(spec=None) -> tuple:
    """A hashable key of what selects the devices now (spec, innermost ``use_devices``, env)."""
    stack = _stack()
    top = stack[-1] if stack else None
    return (repr(spec), repr(top), os.environ.get(ENV))


def select_devices(spec=None) -> list:
    """The devices a spec selects (None: the active selection, see the module docstring)."""
    if spec is None:
        stack = _stack()
        spec = stack[-1] if stack else os.environ.get(ENV)
    parsed = _parse(spec)
    devices = jax.devices()
    if parsed == "all":
        return list(devices)
    if isinstance(parsed, int):
        if parsed > len(devices):
            raise ValueError(f"devices: asked for {parsed}, but only {len(devices)} are visible")
        return list(devices[:parsed])
    by_id = {d.id: d for d in devices}
    missing = [i for i in parsed if i not in by_id]
    if missing:
        raise ValueError(f"devices: no device with id {missing}; visible ids {sorted(by_id)}")
    return [by_id[i] for i in parsed]


def current_mesh(spec=None) -> jax.sharding.Mesh:
    """The 1-D mesh (axis ``AXIS``) over the selected devices; one object per selection."""
    devices = tuple(select_devices(spec))
    key = tuple(d.id for d in devices)
    if key not in _MESHES:
        _MESHES[key] = jax.sharding.Mesh(np.array(devices), (AXIS,))
    return _MESHES[key]


@contextlib.contextmanager
def use_devices(spec):
    """Run the enclosed code on the devices ``spec`` selects (validated on entry).

    The selection belongs to the calling thread (as ``jax.default_device``): threads that
    run problems on devices of their own each select theirs.
    """
    select_devices(spec)
    _stack().append(spec)
    try:
        yield current_mesh()
    finally:
        _stack().pop()


def pad_to_multiple(x, multiple: int, fill) -> tuple:
    """Pad axis 0 of ``x`` with ``fill`` to a multiple of ``multiple``; returns (x, pad)."""
    n = x.shape[0]
    pad = (-n) % multiple
    if pad == 0:
        return x, 0
    import jax.numpy as jnp

    filler = jnp.full((pad,) + tuple(x.shape[1:]), fill, dtype=x.dtype)
    return jnp.concatenate([jnp.asarray(x), filler], 0), pad
