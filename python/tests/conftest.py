import os

import pytest

import fedrecon

ML1M = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "ml-1m")


@pytest.fixture(scope="session")
def small():
    """A small synthetic population shared by the tests (seeded)."""
    return fedrecon.synthetic(users=300, movies=200, seed=3)


def fast(**run):
    """A quick tutorial-shaped configuration: K = 8, few clients and rounds."""
    cfg = {"model": {"k": 8}, "run": {"rounds": 4, "clients_per_round": 20, "eval_every": 2,
                                       "threads": 2}}
    cfg["run"].update(run)
    return cfg
