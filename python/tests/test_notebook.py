"""Executes examples/tutorial.ipynb (nbclient) and checks its key outputs: on ML-1M where
../shared/data/ml-1m exists, on synthetic data otherwise."""

import ast
import json
import os

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("matplotlib")

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
NOTEBOOK = os.path.join(ROOT, "examples", "tutorial.ipynb")


ML1M = os.path.join(ROOT, "..", "shared", "data", "ml-1m")


@pytest.mark.parametrize("source", ["ml-1m", "synthetic"])
def test_tutorial_notebook_runs_and_reproduces_tff(source, monkeypatch):
    if source == "ml-1m" and not os.path.isdir(ML1M):
        pytest.skip("../shared/data/ml-1m is absent")
    # The kernel inherits the environment: a missing folder makes the notebook go synthetic.
    monkeypatch.setenv("FEDRECON_DATA", ML1M if source == "ml-1m" else os.path.join(ROOT, "no-such-dir"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # The kernel's inline matplotlib backend turns each plt.show() into a PNG output.
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": os.path.dirname(NOTEBOOK)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []) if o.get("output_type") == "stream")
    line = next(l for l in text.splitlines() if l.startswith("RESULT "))
    r = ast.literal_eval(line[len("RESULT "):])
    print("notebook:", json.dumps(r))
    images = sum(1 for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                 if "image/png" in o.get("data", {}))
    assert images == 2  # the exploration and the training plots
    assert r["rounds"] == 20 and r["recommendations"] == 10
    assert r["real"] == (source == "ml-1m")
    if r["real"]:
        # TFF's tutorial printed 0.308-0.313; fedrecon's seeds 1-5 give 0.306-0.312 (README).
        assert 0.300 <= r["test_accuracy"] <= 0.320, r
        assert 1.8 <= r["test_loss"] <= 2.2, r
    else:
        # 1-5 stars: a model that learned nothing rounds most predictions to one star value.
        assert 0.25 <= r["test_accuracy"] <= 0.9, r
