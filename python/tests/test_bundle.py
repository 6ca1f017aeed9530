"""The model bundle `model.npz` that `fedrecon train` writes, read with numpy alone (no fedrecon
import): its arrays, dtypes and shapes, and rows keyed by raw MovieLens movie id."""

import csv
import os
import pathlib
import shutil
import subprocess

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
# `best` learns implicit rows (client.implicit): the bundle adds them as `implicit`.
FILES = {"format_version", "items", "item_biases", "global_mean", "item_ids", "data_digest",
         "rounds", "config", "implicit"}


def fedrecon_bin():
    """The command-line binary: $FEDRECON_BIN, else the debug build that `cargo test` left
    (CI's earlier step), else one cargo builds now."""
    exe = os.environ.get("FEDRECON_BIN")
    if exe:
        return exe
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    exe = target / "debug" / "fedrecon"
    if exe.is_file():
        return str(exe)
    if shutil.which("cargo") is None:
        pytest.skip("no fedrecon binary and no cargo to build it (set FEDRECON_BIN)")
    subprocess.run(["cargo", "build", "--quiet", "--locked", "-p", "fedrecon-host-sim",
                    "--bin", "fedrecon"], cwd=ROOT, check=True)
    return str(exe)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 3-round `best` run (K = 8) on small synthetic data: (data dir, run dir)."""
    exe = fedrecon_bin()
    d = tmp_path_factory.mktemp("bundle")
    data, out = d / "data", d / "run"
    subprocess.run([exe, "synth", "--out", str(data), "--shape", "ml-1m", "--users", "120",
                    "--items", "80", "--ratings-per-user", "30", "--seed", "5"],
                   check=True, capture_output=True)
    subprocess.run([exe, "train", "--data", str(data), "--preset", "best", "--max-clients", "none",
                    "--k", "8", "--rounds", "3", "--clients-per-round", "20", "--eval-every", "0",
                    "--threads", "2", "--no-progress", "--no-plots", "--out", str(out)],
                   check=True, capture_output=True)
    return data, out


def test_bundle_arrays_dtypes_and_shapes(trained):
    data, out = trained
    m = np.load(out / "model.npz")
    assert set(m.files) == FILES
    assert m["format_version"].dtype == np.uint32 and int(m["format_version"]) == 1
    items = m["items"]
    n = items.shape[0]
    assert items.dtype == np.float32 and items.shape == (n, 8)
    # The same rows as items.npy, which existing readers keep using.
    assert np.array_equal(items, np.load(out / "items.npy"))
    assert m["item_biases"].dtype == np.float32 and m["item_biases"].shape == (n,)
    # One implicit row per item, then the learned prior mean's row, trained away from zero.
    assert m["implicit"].dtype == np.float32 and m["implicit"].shape == (n + 1, 8)
    assert np.any(m["implicit"][-1] != 0.0)
    assert np.any(m["item_biases"] != 0.0)  # `best` has item biases
    assert m["global_mean"].shape == () and 1.0 <= float(m["global_mean"]) <= 5.0
    assert m["data_digest"].dtype == np.uint64 and m["data_digest"].shape == ()
    assert int(m["rounds"]) == 3
    config = str(m["config"])
    assert 'preset = "best"' in config and "k = 8" in config
    assert config == (out / "config.toml").read_text()


def test_rows_are_keyed_by_movie_id_in_first_appearance_order(trained):
    data, out = trained
    ids = np.load(out / "model.npz")["item_ids"]
    assert ids.dtype == np.uint32 and len(np.unique(ids)) == len(ids)
    seen = []
    with open(data / "ratings.csv", newline="") as f:
        for row in csv.DictReader(f):
            movie = int(row["movieId"])
            if movie not in seen:
                seen.append(movie)
    assert ids.tolist() == seen
