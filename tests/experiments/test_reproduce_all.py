"""``reproduce_all`` hands every experiment a command line it accepts, with ``--devices``
passed on (issue 14). Each experiment's own parser reads it; nothing is run."""

import argparse
import importlib

import pytest

from experiments import _common, reproduce_all


class _Parsed(Exception):
    pass


def _probe_parser(name, doc):
    p = _common.parser(name, doc)

    def parse_args(argv=None, namespace=None):
        raise _Parsed(argparse.ArgumentParser.parse_args(p, argv, namespace))

    p.parse_args = parse_args
    return p


@pytest.mark.parametrize("quick", [True, False])
@pytest.mark.parametrize("name", list(reproduce_all.RUNS))
def test_every_experiment_accepts_its_arguments(name, quick, tmp_path, monkeypatch):
    monkeypatch.setenv("SPECDIFF_DEVICES", "all")  # restored after the test
    module = importlib.import_module(f"experiments.{reproduce_all.RUNS[name][0]}")
    monkeypatch.setattr(module, "parser", _probe_parser)
    ns = argparse.Namespace(seed=3, quick=quick, devices="1", cifar10=None, wav=None)
    argv = reproduce_all.experiment_argv(name, tmp_path, ns)
    with pytest.raises(_Parsed) as e:
        module.main(argv)
    args = e.value.args[0]
    assert (args.devices, args.out, args.seed) == ("1", str(tmp_path / name), 3)
    assert getattr(args, "quick", quick) == quick


def test_data_set_is_part_of_every_run():
    assert set(reproduce_all.DATA) <= set(reproduce_all.RUNS)
