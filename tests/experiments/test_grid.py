"""The grid runner (``experiments.grid``) on 1, 2 and 4 forced CPU devices, in 2 processes
joined by ``jax.distributed`` (gloo), killed and restarted (issue 14).

Every run is compared with the same grid run in this process on one device: the merged
``results.json`` problems and ``table.md`` must be equal. The subprocesses share one
persistent compilation cache so each compiles little.
"""

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from experiments import grid
from experiments._common import forced_cpu_devices

ROOT = Path(__file__).resolve().parents[2]
GRID = ["--datasets", "synthetic_ata", "--samplers", "ddim", "--steps", "3", "--metrics", "w2",
        "--max-iter", "5"]  # fmt: skip
SEEDS2 = ["--seeds", "0", "1"]
SEEDS3 = ["--seeds", "0", "1", "2"]
SEEDS6 = ["--seeds", "0", "1", "2", "3", "4", "5"]
TIMEOUT = 300  # generous: the CI machine may be loaded


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("jax_cache")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The grid on one device in this process: seeds → (results problems, table text)."""
    out = {}

    def get(seeds):
        if tuple(seeds) not in out:
            d = tmp_path_factory.mktemp("ref")
            grid.main([*GRID, *seeds, "--out", str(d)])
            out[tuple(seeds)] = _merged(d)
        return out[tuple(seeds)]

    return get


def _merged(d: Path):
    res = json.loads((d / "results.json").read_text())
    assert res["missing"] == []
    return res["problems"], (d / "table.md").read_text()


def _assert_same(got, want):
    (p1, t1), (p2, t2) = got, want
    assert t1 == t2
    assert [p["key"] for p in p1] == [p["key"] for p in p2]
    for a, b in zip(p1, p2):
        np.testing.assert_allclose(
            a["result"]["designed"]["log_snr"], b["result"]["designed"]["log_snr"], rtol=1e-12
        )
        assert a["result"]["gain"] == pytest.approx(b["result"]["gain"], rel=1e-12)


def _env(cache, devices=1, **extra):
    env = forced_cpu_devices(devices)
    env.update(SPECDIFF_CACHE_DIR=str(cache), PYTHONPATH=str(ROOT))
    for k in (
        "SPECDIFF_COORDINATOR",
        "SPECDIFF_NUM_PROCESSES",
        "SPECDIFF_PROCESS_ID",
        "JAX_COORDINATOR_ADDRESS",
    ):
        env.pop(k, None)
    env.update(extra)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


GRID_MODULE = ("-m", "experiments.grid")


def _start(args, env, log: Path, command=GRID_MODULE):
    f = open(log, "w")  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen(
        [sys.executable, *command, *args],
        cwd=ROOT,
        env=env,
        stdout=f,
        stderr=subprocess.STDOUT,
    )
    proc.log = f
    return proc


def _wait(procs, logs):
    for p, log in zip(procs, logs):
        try:
            rc = p.wait(TIMEOUT)
        finally:
            p.log.close()
        assert rc == 0, log.read_text()[-3000:]


def _two_processes(args, cache, tmp_path, tag, command=GRID_MODULE):
    port = _free_port()
    procs, logs = [], []
    for pid in range(2):
        env = _env(
            cache,
            SPECDIFF_COORDINATOR=f"localhost:{port}",
            SPECDIFF_NUM_PROCESSES="2",
            SPECDIFF_PROCESS_ID=str(pid),
        )
        logs.append(tmp_path / f"{tag}_p{pid}.log")
        procs.append(_start(args, env, logs[-1], command))
    return procs, logs


FOUR_DEVICES = (
    "import sys; from experiments import grid\n"
    "grid.main([*sys.argv[2:], '--devices', sys.argv[1]])\n"
)


@pytest.mark.parametrize(
    "seeds, devices, placed",
    [
        (SEEDS2, "all", ["cpu:0", "cpu:1"]),  # fewer problems than devices
        pytest.param(SEEDS3, "2", ["cpu:0", "cpu:0", "cpu:1"], marks=pytest.mark.slow),
    ],
)
def test_four_devices_equal_one(tmp_path, cache, reference, seeds, devices, placed):
    """Problem k runs on device k mod D; the table is the one-device table."""
    args = [devices, *GRID, *seeds, "--out", str(tmp_path)]
    r = subprocess.run([sys.executable, "-c", FOUR_DEVICES, *args], cwd=ROOT, env=_env(cache, 4),
                       capture_output=True, text=True, timeout=TIMEOUT)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    runs = json.loads((tmp_path / "results.json").read_text())["runs"]
    assert sorted(v["device"] for v in runs.values()) == placed
    _assert_same(_merged(tmp_path), reference(seeds))


def test_restart_skips_finished_problems(tmp_path, capsys, reference):
    """A record on disk with the run's settings is reused as it is (a planted value shows
    up in the merged table); a missing one is computed; a stale one is recomputed."""
    grid.main([*GRID, *SEEDS3, "--out", str(tmp_path)])
    recs = sorted((tmp_path / "records").iterdir())
    assert len(recs) == 3
    planted = json.loads(recs[0].read_text())
    planted["result"]["gain"] = 1234.5
    recs[0].write_text(json.dumps(planted))
    before = recs[0].read_bytes()
    recs[1].unlink()
    stale = json.loads(recs[2].read_text())
    stale["settings"]["max_iter"] = 99
    recs[2].write_text(json.dumps(stale))
    capsys.readouterr()
    res = grid.main([*GRID, *SEEDS3, "--out", str(tmp_path)])
    log = capsys.readouterr().out
    assert f"skipped (finished): {recs[0].stem}" in log
    assert log.count("skipped (finished)") == 1
    assert recs[0].read_bytes() == before and "1234" in (tmp_path / "table.md").read_text()
    assert json.loads(recs[2].read_text())["settings"]["max_iter"] == 5
    want = dict(zip([p["key"] for p in reference(SEEDS3)[0]], reference(SEEDS3)[0]))
    for p in res["problems"]:
        if p["key"] != recs[0].stem:
            assert p["result"]["gain"] == pytest.approx(want[p["key"]]["result"]["gain"], 1e-12)
    # --merge-only reads the grid from grid.json and writes the same table.
    table = (tmp_path / "table.md").read_text()
    (tmp_path / "table.md").unlink()
    grid.main(["--merge-only", "--out", str(tmp_path)])
    assert (tmp_path / "table.md").read_text() == table


def test_two_processes_equal_one(tmp_path, cache, reference):
    out = tmp_path / "out"
    procs, logs = _two_processes([*GRID, *SEEDS3, "--out", str(out)], cache, tmp_path, "run")
    _wait(procs, logs)
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert sorted(v["process"] for v in runs.values()) == [0, 0, 1]
    _assert_same(_merged(out), reference(SEEDS3))


@pytest.mark.slow  # two rounds of two processes: ~40 s on a loaded 2-core machine
def test_killed_process_loses_nothing_finished(tmp_path, cache, reference):
    """SIGKILL one of two processes after its first record; restart both: every record
    written before the kill is reused unchanged, and the table is the one-process one."""
    out = tmp_path / "out"
    args = [*GRID, *SEEDS6, "--out", str(out)]
    procs, logs = _two_processes(args, cache, tmp_path, "first")
    odd = [out / "records" / f"synthetic_ata__ddim__S3__w2__seed{k}.json" for k in (1, 3, 5)]
    deadline = time.time() + TIMEOUT
    while not any(p.is_file() for p in odd) and time.time() < deadline:
        assert procs[1].poll() is None, logs[1].read_text()[-3000:]
        time.sleep(0.05)
    for p in (procs[1], procs[0]):
        p.send_signal(signal.SIGKILL)
        p.wait(TIMEOUT)
        p.log.close()
    kept = {p.name: p.read_bytes() for p in (out / "records").glob("*.json")}
    assert 0 < len(kept) < 6, "the kill came after the run had finished"
    assert any(k.startswith(odd[0].stem[:-1]) for k in kept)
    procs, logs = _two_processes(args, cache, tmp_path, "again")
    _wait(procs, logs)
    for name, data in kept.items():
        assert (out / "records" / name).read_bytes() == data
    log = logs[0].read_text() + logs[1].read_text()
    assert all(f"skipped (finished): {name[:-5]}" in log for name in kept)
    _assert_same(_merged(out), reference(SEEDS6))


SHARDED = """
import json, sys
from specdiff.core import multihost, mesh
multihost.initialize()
import jax
jax.config.update("jax_enable_x64", True)
from experiments import grid, sampler_comparison
args = grid.parse([*sys.argv[2:], "--seeds", "0"])[0]
problem = grid.Problem("synthetic_ata", "ddim", 3, "w2", 0)
spec = sampler_comparison.load_spectrum("synthetic_ata", args.floor)
with mesh.use_devices("all") as m:
    res = grid.to_jsonable(grid.solve(problem, spec, args))  # calls sd.design_schedule
out = {"devices": int(m.devices.size), "processes": jax.process_count(), "result": res}
with open(sys.argv[1] + f".{jax.process_index()}", "w") as f:
    json.dump(out, f)
"""


def test_two_process_design_schedule_equals_one(tmp_path, cache):
    """``design_schedule`` (the grid's problem) under the global mesh of 2 processes, called
    by both (sharded where the engine shards the eigenvalue axis), gives the one-process
    result. The program is the grid's, so the shared compilation cache serves it."""
    two = [str(tmp_path / "two"), *GRID]
    procs, logs = _two_processes(two, cache, tmp_path, "design", command=("-c", SHARDED))
    one = subprocess.run(
        [sys.executable, "-c", SHARDED, str(tmp_path / "one"), *GRID],
        cwd=ROOT,
        env=_env(cache),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    _wait(procs, logs)
    want = json.loads((tmp_path / "one.0").read_text())
    for pid in range(2):
        got = json.loads((tmp_path / f"two.{pid}").read_text())
        assert (got["devices"], got["processes"], want["devices"]) == (2, 2, 1)
        a, b = got["result"], want["result"]
        np.testing.assert_allclose(a["designed"]["log_snr"], b["designed"]["log_snr"], rtol=1e-10)
        assert a["designed"]["w2"] == pytest.approx(b["designed"]["w2"], rel=1e-10)
        for name, v in b["heuristics"].items():
            assert a["heuristics"][name]["w2"] == pytest.approx(v["w2"], rel=1e-10)


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--datasets", "nope"], "unknown dataset"),
        (["--samplers", "ddim", "ddim"], "lists a value twice"),
        (["--metrics", "l2"], "unknown metric"),
        (["--steps", "0"], ">= 1"),
        (["--devices", "99"], "devices: asked for 99"),
        (["--devices", "x"], "cannot read"),
    ],
)
def test_bad_flags_exit_2_with_one_line(argv, match, capsys, monkeypatch):
    monkeypatch.setenv("SPECDIFF_DEVICES", "all")  # restored after the test
    with pytest.raises(SystemExit) as e:
        grid.main([*argv, "--out", "unused"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and match in err and err.count("\n") == 1


@pytest.mark.slow  # six subprocesses: minutes on a loaded 2-core machine
def test_bench_distributed_rows():
    from experiments._bench_distributed import bench_distributed

    rows = bench_distributed(True, device_counts=(1, 2))
    assert [r["devices"] for r in rows] == [1, 2, 1, 2]
    for r in rows:
        assert r["per_second"] > 0 and r["cpu_count"] >= 1
        assert r["speedup"] == pytest.approx(
            r["per_second"] / rows[0 if r["count"] == 256 else 2]["per_second"]
        )
