"""``fedrecon.synthetic`` is the Rust generator of ``fedrecon synth``: seeded, shaped as asked,
with titles and genres, and its errors are the command line's."""

import numpy as np
import pytest

import fedrecon


def test_same_seed_same_data_other_seed_other_data():
    a = fedrecon.synthetic(users=120, movies=150, seed=5)
    b = fedrecon.synthetic(users=120, movies=150, seed=5)
    c = fedrecon.synthetic(users=120, movies=150, seed=6)
    for x, y in zip(a._native.arrays(), b._native.arrays()):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a._native.arrays()[2], c._native.arrays()[2])


def test_shape_counts_and_movies():
    d = fedrecon.synthetic(users=200, movies=300, seed=1, min_ratings=10, ratings_per_user=30)
    assert d.users == 200
    r = d.ratings_frame()
    per_user = r.groupby("user").size()
    assert per_user.min() >= 10 and per_user.max() <= 300
    assert 20 < per_user.mean() < 40
    assert not r.duplicated(["user", "movie"]).any()
    assert set(r["rating"].unique()) <= {1.0, 2.0, 3.0, 4.0, 5.0}  # ml-1m: whole stars
    half = fedrecon.synthetic(users=50, movies=100, seed=1, shape="ml-25m").ratings_frame()
    assert (half["rating"] % 1 == 0.5).any()
    movies = d.movies_frame()
    assert len(movies) == 300
    assert movies["title"].iloc[0].startswith("Synthetic Movie 1 (")
    assert all(isinstance(g, list) and 1 <= len(g) <= 2 for g in movies["genres"])


def test_bad_settings_name_the_option():
    with pytest.raises(fedrecon.FedreconError, match="option rank"):
        fedrecon.synthetic(users=50, movies=100, rank=0)
    with pytest.raises(fedrecon.FedreconError, match="max_ratings_per_user"):
        fedrecon.synthetic(users=50, movies=10, min_ratings=20)
    with pytest.raises(fedrecon.FedreconError, match="unknown shape 'ml-2m'"):
        fedrecon.synthetic(shape="ml-2m")
