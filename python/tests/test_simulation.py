import json
import math
import os
import signal
import threading
import time

import numpy as np
import pytest

import fedrecon
from conftest import fast


def test_round_returns_that_rounds_metrics_and_the_schedule_matches_run(small):
    a = fedrecon.Simulation(small, "tutorial", fast())
    r1 = a.round()
    assert r1["kind"] == "train" and r1["round"] == 1
    assert 0.0 < r1["loss"] < 20.0 and 0.0 <= r1["rating_accuracy"] <= 1.0
    r2 = a.round()
    assert r2["round"] == 2 and r2["val"]["split"] == "val"  # eval_every = 2
    assert a.rounds_done == 2 and not a.done
    a.round(), a.round()
    assert a.done
    test_a = a.evaluate("val"), a.evaluate("test")

    b = fedrecon.Simulation(small, "tutorial", fast())
    test_b = b.run()
    # Stepping and running follow one schedule with the same seeds: identical metrics.
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]
    assert strip(a.metrics()) == strip(b.metrics())
    assert {**test_b, "kind": "eval"} == b.metrics()[-1] and test_b["split"] == "test"
    assert test_a[1]["loss"] == test_b["loss"]
    kinds = [(m["kind"], m.get("split"), m["round"]) for m in b.metrics()]
    assert kinds == [("eval", "val", 0), ("train", None, 1), ("train", None, 2), ("eval", "val", 2),
                     ("train", None, 3), ("train", None, 4), ("eval", "val", 4), ("eval", "test", 4)]


def test_training_lowers_the_loss(small):
    sim = fedrecon.Simulation(small, "tutorial", fast(rounds=30, eval_every=0, clients_per_round=50))
    before = sim.evaluate("val")["loss"]
    sim.run()
    after = [m for m in sim.metrics() if m.get("split") == "val"][-1]["loss"]
    assert after < before - 0.1, (before, after)


def test_metrics_frame_and_dicts(small):
    sim = fedrecon.Simulation(small, config=fast())
    sim.run()
    df = sim.metrics_frame()
    assert list(df["kind"]).count("train") == 4
    assert {"loss", "rating_accuracy", "round", "split"} <= set(df.columns)
    assert df[df["kind"] == "train"]["round"].tolist() == [1, 2, 3, 4]


def test_items_and_biases_are_numpy_arrays(small):
    sim = fedrecon.Simulation(small, config=fast())
    x0 = sim.items
    assert x0.shape == (small.items, 8) and x0.dtype == np.float32 and x0.flags.c_contiguous
    assert np.all(np.abs(x0) <= 0.05)  # U(-0.05, 0.05) before training
    sim.round()
    x1 = sim.items
    assert not np.array_equal(x0, x1)  # a snapshot: the old array keeps round 0
    assert np.all(np.abs(x0) <= 0.05)
    assert sim.item_biases.shape == (0,)
    b = fedrecon.Simulation(small, config={**fast(), "model": {"k": 8, "item_bias": True}})
    b.round()
    assert b.item_biases.shape == (small.items,) and np.any(b.item_biases != 0)


def test_config_from_preset_dict_and_file_with_the_cli_messages(small, tmp_path):
    t = fedrecon.config_toml("paper")
    assert 'preset = "paper"' in t and "k = 50" in t
    f = tmp_path / "c.toml"
    f.write_text('[run]\nrounds = 3\nclients_per_round = 7\n[model]\nk = 8\n')
    sim = fedrecon.Simulation(small, config=f)
    assert sim.config["run"]["rounds"] == 3 and sim.config["run"]["clients_per_round"] == 7
    assert sim.config["preset"] == "tutorial"
    # None in a dict is the TOML's "none".
    sim = fedrecon.Simulation(small, config={"model": {"k": 8}, "run": {"eval_clients": None}})
    assert sim.config["run"]["eval_clients"] == "none"
    with pytest.raises(fedrecon.FedreconError, match=r"unknown preset 'nope'"):
        fedrecon.Simulation(small, preset="nope")
    with pytest.raises(fedrecon.FedreconError, match=r"K = 7 is not built in|model.k"):
        fedrecon.Simulation(small, config={"model": {"k": 7}})
    with pytest.raises(fedrecon.FedreconError, match=r"invalid config: client.client_lr"):
        fedrecon.Simulation(small, config={"client": {"client_lr": -1.0}})
    with pytest.raises(fedrecon.FedreconError, match=r"config dict: .*rounds"):
        fedrecon.Simulation(small, config={"run": {"rounds": "many"}})
    bad = tmp_path / "bad.toml"
    bad.write_text("[run]\nrounds = \n")
    with pytest.raises(fedrecon.FedreconError, match=r"bad.toml: "):
        fedrecon.Simulation(small, config=bad)
    with pytest.raises(fedrecon.FedreconError, match=r"conflicts with the requested preset"):
        fedrecon.Simulation(small, preset="paper", config={"preset": "tutorial"})
    with pytest.raises(fedrecon.FedreconError, match=r"missing.toml"):
        fedrecon.Simulation(small, config=tmp_path / "missing.toml")


def test_checkpoint_and_resume_continue_bit_identically(small, tmp_path):
    full = fedrecon.Simulation(small, config=fast(rounds=6))
    full.run()
    part = fedrecon.Simulation(small, config=fast(rounds=6))
    part.round(), part.round(), part.round()
    part.save_checkpoint(tmp_path / "ck")
    assert {"checkpoint.bin", "config.toml", "metrics.jsonl", "metrics.csv"} <= set(
        os.listdir(tmp_path / "ck"))
    del part
    resumed = fedrecon.Simulation.resume(tmp_path / "ck", small)
    assert resumed.rounds_done == 3
    resumed.run()
    np.testing.assert_array_equal(resumed.items, full.items)
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]
    assert strip(resumed.metrics()) == strip(full.metrics())
    other = fedrecon.synthetic(users=200, movies=200, seed=4)
    with pytest.raises(fedrecon.FedreconError, match="the data differs from the checkpointed run"):
        fedrecon.Simulation.resume(tmp_path / "ck", other)
    with pytest.raises(fedrecon.FedreconError, match="no checkpoint"):
        fedrecon.Simulation.resume(tmp_path, small)


def test_recommend_gives_unrated_titles(small):
    sim = fedrecon.Simulation(small, config=fast(rounds=10, eval_every=0))
    sim.run()
    ratings = small.ratings_frame()
    user = int(ratings["user"].iloc[0])
    top = sim.recommend(user, 5)
    assert len(top) == 5
    rated = set(ratings[ratings["user"] == user]["movie"])
    assert not rated & {m for m, _, _ in top}
    scores = [s for _, _, s in top]
    assert scores == sorted(scores, reverse=True)
    assert all(t.startswith("Synthetic Movie") for _, t, _ in top)
    with pytest.raises(fedrecon.FedreconError, match="no such user"):
        sim.recommend(10**9, 5)
    with pytest.raises(fedrecon.FedreconError, match="must be in 1..=100"):
        sim.recommend(user, 0)


def test_data_arrays_and_errors(small, tmp_path):
    df = small.ratings_frame()
    assert len(df) == len(small) and df["user"].nunique() == small.users
    assert df["movie"].nunique() == small.items
    assert set(df["rating"].unique()) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert df.groupby("user").size().min() >= 20
    (tmp_path / "ratings.dat").write_text("1::2::5::978300760\n1::3::x::978300760\n")
    with pytest.raises(fedrecon.FedreconError, match=r"ratings.dat:2: field 3 \(rating\) is not a number: 'x'"):
        fedrecon.load_movielens(tmp_path)
    with pytest.raises(fedrecon.FedreconError, match=r"--data"):
        fedrecon.load_movielens(tmp_path / "nowhere")
    with pytest.raises(fedrecon.FedreconError, match="one length"):
        fedrecon._native.Data.from_arrays(np.array([1], np.uint32), np.array([], np.uint32),
                                          np.array([1], np.float32), np.array([1], np.uint32))


def test_the_gil_is_released_during_rounds(small):
    sim = fedrecon.Simulation(small, config=fast(rounds=40, eval_every=0, clients_per_round=100))
    ticks = []
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    t = threading.Thread(target=ticker)
    t.start()
    t0 = time.perf_counter()
    sim.run()
    t1 = time.perf_counter()
    stop.set()
    t.join()
    inside = [x for x in ticks if t0 < x < t1]
    # With the GIL held for the whole run the ticker could not run inside it at all.
    assert len(inside) >= 5, (len(inside), t1 - t0)


def test_ctrl_c_stops_run_between_rounds_and_run_continues(small):
    sim = fedrecon.Simulation(small, config=fast(rounds=400, eval_every=0, clients_per_round=100))
    sim.round()
    timer = threading.Timer(0.3, lambda: signal.raise_signal(signal.SIGINT))
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        sim.run()
    timer.join()
    done = sim.rounds_done
    assert 1 < done < 400
    trains = [m for m in sim.metrics() if m["kind"] == "train"]
    assert [m["round"] for m in trains] == list(range(1, done + 1))  # whole rounds only
    sim.round()
    assert sim.rounds_done == done + 1


@pytest.mark.skipif(not os.path.isdir(os.path.join(os.path.dirname(__file__), "..", "..", "..",
                                                   "shared", "data", "ml-1m")),
                    reason="../shared/data/ml-1m is absent")
def test_ml1m_loads_with_the_readme_figures():
    from conftest import ML1M

    d = fedrecon.load_movielens(ML1M)
    assert (len(d), d.users, d.items) == (1_000_209, 6_040, 3_706)
    df = d.ratings_frame()
    assert math.isclose(df["rating"].astype("float64").mean(), 3.581564453029317, rel_tol=1e-9)
    m = d.movies_frame()
    assert len(m) == 3_883 and m.loc[0, "genres"] == ["Animation", "Children's", "Comedy"]


def test_save_model_writes_the_bundle_numpy_reads(small, tmp_path):
    sim = fedrecon.Simulation(small, preset="best", config=fast(rounds=3, eval_every=0))
    sim.run()
    sim.save_model(tmp_path / "model.npz")
    z = np.load(tmp_path / "model.npz")
    np.testing.assert_array_equal(z["items"], sim.items)
    np.testing.assert_array_equal(z["item_biases"], sim.item_biases)
    np.testing.assert_array_equal(z["item_ids"], small._native.movie_ids())
    assert 'preset = "best"' in str(z["config"])
    with pytest.raises(fedrecon.FedreconError):
        sim.save_model(tmp_path / "no-such-dir" / "model.npz")
