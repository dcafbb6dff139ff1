"""Files: spectra as .npz, schedules as JSON (SPEC §9); every write is atomic."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from specdiff.core.schedule import Schedule, _validate_levels
from specdiff.core.spectrum import Spectrum

SCHEDULE_FORMAT = "specdiff.schedule/1"


@contextlib.contextmanager
def atomic_write(path, mode: str = "w"):
    """Open a temporary file beside ``path`` and move it into place only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path, obj) -> None:
    with atomic_write(path) as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")


def save_spectrum(path, spectrum: Spectrum) -> None:
    """Write ``eigenvalues``, ``mean`` (and ``name``) to an .npz file, atomically."""
    arrays = {"eigenvalues": np.asarray(spectrum.eigenvalues), "mean": np.asarray(spectrum.mean)}
    if spectrum.name is not None:
        arrays["name"] = np.asarray(spectrum.name)
    with atomic_write(path, "wb") as f:
        np.savez(f, **arrays)


def read_npz(path, what: str, required=()) -> dict:
    """All arrays of an .npz file; ``ValueError`` naming the file if it is missing, not a
    readable .npz, or lacks one of the ``required`` arrays."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what} {str(path)!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as e:  # zipfile/pickle/format errors
        raise ValueError(f"{what} {str(path)!r} is not a readable .npz: {e}") from None
    missing = [k for k in required if k not in data]
    if missing:
        raise ValueError(
            f"{what} {str(path)!r} has no {' or '.join(repr(k) for k in missing)} array: it "
            f"needs {' and '.join(repr(k) for k in required)} "
            f"(found: {', '.join(sorted(data)) or 'nothing'})"
        )
    return data


def load_spectrum(path) -> Spectrum:
    """Read a spectrum .npz (key ``eigenvalues``, optional ``mean`` and ``name``)."""
    path = Path(path)
    data = read_npz(path, "spectrum file", required=("eigenvalues",))
    name = str(data["name"]) if "name" in data else path.stem
    return Spectrum(data["eigenvalues"], data.get("mean"), name=name)


def _levels_float64(schedule: Schedule) -> np.ndarray:
    """The levels as float64: as stored when they are a valid grid, else from log-SNR.

    A float32 schedule built from log-SNR can hold ᾱ = sigmoid(ρ) rounded to exactly 1.0
    (ρ ≳ 17); its float64 levels are recomputed from ρ so the file loads again.
    """
    lv = np.asarray(schedule.levels, dtype=np.float64)
    try:
        _validate_levels(lv, schedule.process)
        return lv
    except ValueError:
        rho = np.asarray(schedule.log_snr, dtype=np.float64)
        if schedule.process == "vp":  # ᾱ = sigmoid(ρ)
            return 1 / (1 + np.exp(-rho))
        if schedule.process == "flow":  # t = sigmoid(−ρ/2)
            return 1 / (1 + np.exp(0.5 * rho))
        return np.exp(-0.5 * rho)  # σ


def schedule_record(
    schedule: Schedule,
    *,
    sampler=None,
    objective=None,
    value=None,
    spectrum: Spectrum | None = None,
    extra: dict | None = None,
) -> dict:
    """The JSON-ready record of SPEC §9 for a schedule."""
    from specdiff import __version__

    rec = {
        "format": SCHEDULE_FORMAT,
        "process": schedule.process,
        "steps": schedule.num_steps,
        "levels": [float(x) for x in _levels_float64(schedule)],
        "log_snr": [float(x) for x in np.asarray(schedule.log_snr, dtype=np.float64)],
        "sampler": None if sampler is None else sampler.to_dict(),
        "objective": objective,
        "value": None if value is None else float(value),
        "spectrum": None,
        "specdiff_version": __version__,
    }
    if spectrum is not None:
        rec["spectrum"] = {"name": spectrum.name, "d": spectrum.dim, "sha256": spectrum.digest()}
    if extra:
        rec.update(extra)
    return rec


def save_schedule(path, schedule: Schedule, **metadata) -> dict:
    """Write a schedule JSON atomically; ``metadata`` as for ``schedule_record``."""
    rec = schedule_record(schedule, **metadata)
    write_json(path, rec)
    return rec


def load_schedule(path, with_metadata: bool = False):
    """Read a schedule JSON; returns the ``Schedule`` (and the whole record if asked)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"schedule file {str(path)!r} does not exist")
    try:
        rec = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"schedule file {str(path)!r} is not valid JSON: {e}") from None
    if not isinstance(rec, dict) or "levels" not in rec or "process" not in rec:
        raise ValueError(f"schedule file {str(path)!r} needs 'levels' and 'process' fields")
    try:
        sch = Schedule(np.asarray(rec["levels"], dtype=np.float64), rec["process"])
    except ValueError as e:
        raise ValueError(f"schedule file {str(path)!r}: {e}") from None
    if rec.get("log_snr") is not None:
        rho = np.asarray(rec["log_snr"], dtype=np.float64)
        if rho.shape == np.shape(sch.log_snr):
            sch.log_snr = jnp.asarray(rho, dtype=sch.levels.dtype)
    return (sch, rec) if with_metadata else sch
