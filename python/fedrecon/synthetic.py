"""A MovieLens-shaped synthetic population, for tests and for the tutorial where the real files
are absent. It is the generator of ``fedrecon synth`` (the Rust ``data::synth`` module, called
in memory): heavy-tailed ratings per user, Zipf item popularity, stars from a planted low-rank
model plus noise, titles and genres. Seeded, so every run sees the same data, and the same
settings give the same ratings as the command line."""

from __future__ import annotations

import io
from typing import Optional


def synthetic(users: int = 600, movies: int = 400, *, seed: int = 0, shape: str = "ml-1m",
              ratings_per_user: Optional[float] = None, min_ratings: int = 20,
              max_ratings: Optional[int] = None, rank: Optional[int] = None,
              noise: Optional[float] = None, signal: Optional[float] = None,
              whole_stars: bool = False):
    """A :class:`fedrecon.Data` of ``users`` users over ``movies`` movies, shaped like
    ``shape`` (``"ml-1m"``: whole stars, or ``"ml-25m"``: half stars).

    Every user has at least ``min_ratings`` ratings and at most ``max_ratings`` (default: the
    shape's, at most ``movies``); the mean is ``ratings_per_user`` (default: the shape's, 165.6
    for ML-1M, or halfway between ``min_ratings`` and the cap where the catalogue is too
    small). ``rank``, ``noise`` and ``signal`` change the planted model (default: the
    shape's). The same values given to
    ``fedrecon synth --shape ... --users ... --items ... --ratings-per-user ...
    --min-ratings-per-user ... --seed ...`` write the same ratings to a folder.
    Invalid settings raise :class:`fedrecon.FedreconError` naming the option."""
    from . import Data, _native

    native, movies_csv = _native.Data.synthetic(
        shape, users=users, items=movies, ratings_per_user=ratings_per_user,
        min_ratings_per_user=min_ratings, max_ratings_per_user=max_ratings, rank=rank,
        signal=signal, noise=noise, whole_stars=whole_stars, seed=seed,
    )
    movies_df = None
    try:
        import pandas as pd

        df = pd.read_csv(io.StringIO(movies_csv))
        movies_df = pd.DataFrame({
            "movie": df["movieId"],
            "title": df["title"],
            "genres": df["genres"].fillna("").map(lambda g: g.split("|") if g else []),
        })
    except ImportError:
        pass
    return Data(native, movies_df)
