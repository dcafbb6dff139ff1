"""``specdiff.core.multihost.initialize``: when it joins a run, and its errors (issue 14).

Joining real processes is tested in ``tests/experiments/test_grid.py`` (two local processes
on gloo); here only what needs no second process.
"""

import pytest

from specdiff.core import multihost

COORD, NUM, PID = multihost.ENV_COORDINATOR, multihost.ENV_NUM_PROCESSES, multihost.ENV_PROCESS_ID


@pytest.mark.parametrize(
    "env",
    [
        {},  # nothing says multi-process
        {"SLURM_JOB_ID": "7", "SLURM_PROCID": "0", "SLURM_NTASKS": "1"},  # one task
        {"OMPI_MCA_orte_hnp_uri": "x", "OMPI_COMM_WORLD_SIZE": "1"},
        {"TPU_WORKER_HOSTNAMES": "host0"},  # a single-host TPU VM
        {COORD: "localhost:1234", NUM: "1", PID: "0"},  # one process: nothing to join
        {COORD: "localhost:1234", NUM: "2", PID: "1", multihost.ENV_MULTIHOST: "0"},  # off
    ],
)
def test_single_process_is_a_no_op(env):
    assert multihost.initialize(env) is False


@pytest.mark.parametrize(
    "env, match",
    [
        ({COORD: "localhost:1234"}, f"missing: {NUM}, {PID}"),
        ({NUM: "2", PID: "0"}, f"missing: {COORD}"),
        ({COORD: "localhost", NUM: "2", PID: "0"}, "host:port"),
        ({COORD: "localhost:99999", NUM: "2", PID: "0"}, "host:port"),
        ({COORD: "h:1", NUM: "two", PID: "0"}, f"{NUM} must be an integer >= 1"),
        ({COORD: "h:1", NUM: "0", PID: "0"}, f"{NUM} must be an integer >= 1"),
        ({COORD: "h:1", NUM: "2", PID: "-1"}, f"{PID} must be an integer >= 0"),
        ({COORD: "h:1", NUM: "2", PID: "2"}, r"must be in 0\.\.1"),
        ({multihost.ENV_MULTIHOST: "yes"}, "must be 0, 1 or auto"),
    ],
)
def test_bad_configuration_names_the_variables(env, match):
    with pytest.raises(ValueError, match=match):
        multihost.initialize(env)


def test_jax_coordinator_address_stands_in_for_ours():
    env = {"JAX_COORDINATOR_ADDRESS": "h:1", NUM: "2", PID: "5"}
    with pytest.raises(ValueError, match=r"must be in 0\.\.1"):  # read, then checked
        multihost.initialize(env)


def test_launchers_are_recognised():
    detected = multihost._launcher_detected
    assert detected({"SLURM_JOB_ID": "7", "SLURM_PROCID": "1", "SLURM_NTASKS": "4"})
    assert detected({"OMPI_MCA_orte_hnp_uri": "x", "OMPI_COMM_WORLD_SIZE": "2"})
    assert detected({"TPU_WORKER_HOSTNAMES": "h0,h1,h2,h3"})
    assert not detected({"SLURM_JOB_ID": "7"})  # an allocation, not a launched step


def test_barrier_and_main_process_in_one_process():
    multihost.barrier("test")  # returns at once
    assert multihost.is_main_process()
