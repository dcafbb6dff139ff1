"""The device selection behind every sharded entry point (issue 14)."""

import jax
import jax.numpy as jnp
import pytest

from specdiff.core import mesh


def test_default_is_all_devices(monkeypatch):
    monkeypatch.delenv(mesh.ENV, raising=False)
    m = mesh.current_mesh()
    assert m.axis_names == (mesh.AXIS,)
    assert m.devices.size == len(jax.devices())
    assert mesh.current_mesh() is m  # one object per selection


def test_env_and_context(monkeypatch):
    monkeypatch.setenv(mesh.ENV, "1")
    assert mesh.current_mesh().devices.size == 1
    with mesh.use_devices("all") as m:
        assert m.devices.size == len(jax.devices())
    ids = [d.id for d in jax.devices()]
    assert [d.id for d in mesh.select_devices([ids[-1]])] == ids[-1:]
    assert [d.id for d in mesh.select_devices(f"{ids[0]},")] == ids[:1]


@pytest.mark.parametrize("bad", ["0", "x", "-1", "0,0", 0, True, 1.5])
def test_bad_specs(bad):
    with pytest.raises(ValueError, match="allowed|cannot read|must be"):
        mesh.select_devices(bad)


def test_too_many_devices():
    with pytest.raises(ValueError, match="only"):
        mesh.select_devices(len(jax.devices()) + 1)
    with pytest.raises(ValueError, match="no device with id"):
        mesh.select_devices("12345,")


def test_pad_to_multiple():
    x, pad = mesh.pad_to_multiple(jnp.arange(5.0), 4, 1.0)
    assert pad == 3 and x.shape == (8,) and float(x[-1]) == 1.0
    y, pad = mesh.pad_to_multiple(jnp.arange(8.0), 4, 1.0)
    assert pad == 0 and y.shape == (8,)
