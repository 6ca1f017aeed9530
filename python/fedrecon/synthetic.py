"""A small MovieLens-shaped synthetic population, for tests and for the tutorial where the real
files are absent: users with a long-tailed number of ratings, 1-5 stars from a low-rank taste
model plus noise, titles and genres. Seeded, so every run sees the same data."""

from __future__ import annotations

from typing import Optional

import numpy as np

GENRES = ["Action", "Comedy", "Drama", "Romance", "Sci-Fi", "Thriller", "Animation", "Documentary"]


def synthetic(users: int = 600, movies: int = 400, *, rank: int = 4, seed: int = 0,
              min_ratings: int = 20, max_ratings: Optional[int] = None):
    """A :class:`fedrecon.Data` of ``users`` users over ``movies`` movies (ML-1M's shape at a
    smaller scale: at least ``min_ratings`` ratings per user, median about 2.5 times that)."""
    from . import Data, _native

    if users < 10 or movies < min_ratings + 1 or min_ratings < 2:
        raise ValueError("synthetic: need users >= 10, min_ratings >= 2 and movies > min_ratings")
    rng = np.random.default_rng(seed)
    cap = min(max_ratings or movies, movies)
    counts = np.minimum(cap, min_ratings + rng.geometric(1.0 / (1.5 * min_ratings), users) - 1)
    u_f = rng.normal(0, 1, (users, rank))
    m_f = rng.normal(0, 1, (movies, rank))
    m_bias = rng.normal(0, 0.5, movies)
    popularity = rng.zipf(1.3, movies).astype(float)
    popularity /= popularity.sum()
    us, ms, rs, ts = [], [], [], []
    t0 = 956_703_932
    for u in range(users):
        chosen = rng.choice(movies, size=int(counts[u]), replace=False, p=popularity)
        score = 3.6 + m_bias[chosen] + 0.6 * (u_f[u] @ m_f[chosen].T) / np.sqrt(rank)
        stars = np.clip(np.rint(score + rng.normal(0, 0.6, len(chosen))), 1, 5)
        us.append(np.full(len(chosen), u + 1, dtype=np.uint32))
        ms.append((chosen + 1).astype(np.uint32))
        rs.append(stars.astype(np.float32))
        ts.append((t0 + np.sort(rng.integers(0, 86_400 * 365, len(chosen)))).astype(np.uint32))
    native = _native.Data.from_arrays(
        np.concatenate(us), np.concatenate(ms), np.concatenate(rs), np.concatenate(ts)
    )
    movies_df = None
    try:
        import pandas as pd

        ids = np.arange(1, movies + 1)
        movies_df = pd.DataFrame({
            "movie": ids,
            "title": [f"Synthetic movie {i} ({1950 + i % 50})" for i in ids],
            "genres": [sorted({GENRES[int(g)] for g in rng.integers(0, len(GENRES), 1 + i % 3)})
                       for i in ids],
        })
    except ImportError:
        pass
    return Data(native, movies_df)
