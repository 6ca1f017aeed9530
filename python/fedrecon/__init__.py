"""fedrecon: Federated Reconstruction (Singhal et al., NeurIPS 2021) for matrix-factorization
recommendation, from Python and notebooks.

The simulator is the Rust library behind the ``fedrecon`` command line; every virtual device
runs ``fedrecon-core``'s round, so results are the command line's, bit for bit::

    import fedrecon
    data = fedrecon.load_movielens("ml-1m")          # or fedrecon.fetch("ml-1m"), fedrecon.synthetic()
    sim = fedrecon.Simulation(data, preset="tutorial", config={"run": {"rounds": 20}})
    sim.round()                                      # one round's metrics, a dict
    test = sim.run()                                 # the remaining rounds, then val and test
    sim.metrics_frame()                              # every round and evaluation (pandas)
    sim.items                                        # item matrix, numpy (items x K)
    sim.recommend(user=1, k=10)                      # a user's top unrated titles

Rounds run with the GIL released; Ctrl-C stops :meth:`Simulation.run` after the current round.
Errors are :class:`FedreconError` with the command line's message text.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

from . import _native
from ._native import FedreconError
from .datasets import DATASETS, fetch
from .synthetic import synthetic

__all__ = [
    "DATASETS",
    "Data",
    "FedreconError",
    "Simulation",
    "config_toml",
    "fetch",
    "load_movielens",
    "synthetic",
]

__version__ = "0.1.0"

PathLike = Union[str, "os.PathLike[str]"]
ConfigLike = Union[None, Mapping[str, Any], PathLike]


def _nones(v: Any) -> Any:
    """A dict's ``None`` as the TOML config's ``"none"`` (unset / all / automatic)."""
    if v is None:
        return "none"
    if isinstance(v, Mapping):
        return {str(k): _nones(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_nones(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


def _config_text(config: ConfigLike) -> Tuple[Optional[str], Optional[str]]:
    """``(toml text, origin for messages)`` of a dict or a TOML file path."""
    if config is None:
        return None, None
    if isinstance(config, Mapping):
        return _native.json_to_toml(json.dumps(_nones(dict(config)))), "config dict"
    path = os.fspath(config)
    try:
        with open(path, encoding="utf-8") as f:
            return f.read(), path
    except OSError as e:
        raise FedreconError(f"{path}: {e.strerror}") from None


def config_toml(preset: Optional[str] = None, config: ConfigLike = None) -> str:
    """The full validated configuration as TOML, as ``fedrecon config`` prints it.

    ``preset`` is ``"tutorial"``, ``"paper"`` or ``"best"``; ``config`` a dict or a TOML file
    overriding any subset of its keys (``None`` in a dict means ``"none"``).
    """
    text, origin = _config_text(config)
    return _native.config_toml(preset, text, origin)


class Data:
    """MovieLens ratings (or a synthetic population) held by the simulator.

    Dense ids are in order of first appearance, as the loader and TFF's tutorial number them.
    """

    def __init__(self, native: "_native.Data", movies: Any = None):
        self._native = native
        self._movies = movies

    @property
    def users(self) -> int:
        """Number of users."""
        return self._native.users

    @property
    def items(self) -> int:
        """Number of rated movies (rows of the item matrix)."""
        return self._native.items

    @property
    def path(self) -> Optional[str]:
        """The folder it was loaded from, or ``None``."""
        p = self._native.path
        return None if p is None else os.fspath(p)

    def __len__(self) -> int:
        return len(self._native)

    def __repr__(self) -> str:
        return f"Data({len(self)} ratings, {self.users} users, {self.items} movies)"

    def stats(self) -> str:
        """The summary ``fedrecon stats`` prints."""
        return self._native.stats()

    def ratings_frame(self):
        """Every rating as a pandas DataFrame: ``user``, ``movie`` (raw ids), ``rating``,
        ``timestamp``, in file order."""
        import pandas as pd

        u, m, r, t = self._native.arrays()
        return pd.DataFrame({"user": u, "movie": m, "rating": r, "timestamp": t})

    def movies_frame(self):
        """Movies as a pandas DataFrame: ``movie``, ``title``, ``genres`` (a list). Read from the
        folder's movie file (any layout); synthetic data carries its own."""
        if self._movies is not None:
            return self._movies.copy()
        import pandas as pd

        from .datasets import read_movies

        if self.path is None:
            ids = self._native.movie_ids()
            return pd.DataFrame(
                {"movie": ids, "title": self._native.titles(), "genres": [[] for _ in ids]}
            )
        return read_movies(self.path)


def load_movielens(path: PathLike) -> Data:
    """Loads a MovieLens folder: ml-100k (``u.data``), ml-1m / ml-10m (``ratings.dat``) or
    ml-20m / 25m / 32m (``ratings.csv``). Errors name the file and line, as the command
    line's do."""
    return Data(_native.Data.load(os.fspath(path)))


class Simulation:
    """A federated-reconstruction experiment on :class:`Data`.

    ``preset`` (``"tutorial"``, ``"paper"``, ``"best"``; default the config's, else tutorial)
    and ``config`` (a dict or a TOML file, any subset of the keys ``fedrecon config`` prints)
    build the configuration with the command line's validation and messages.

    The schedule is ``fedrecon train``'s: :meth:`run` validates the untrained model (when
    ``run.eval_every > 0``), trains ``run.rounds`` rounds validating every ``eval_every``, then
    evaluates on validation and test users. :meth:`round` steps one round of that schedule.
    """

    def __init__(self, data: Data, preset: Optional[str] = None, config: ConfigLike = None):
        text, origin = _config_text(config)
        self._data = data
        self._sim = _native.Simulation(data._native, preset, text, origin)
        self._started = False

    @classmethod
    def resume(cls, path: PathLike, data: Data) -> "Simulation":
        """Continues a run saved by :meth:`save_checkpoint` (or ``fedrecon train
        --checkpoint-every``) on the same data."""
        self = cls.__new__(cls)
        self._data = data
        self._sim = _native.Simulation.resume(os.fspath(path), data._native)
        self._started = True
        return self

    # -- running -------------------------------------------------------------------------

    def _start(self) -> List[Dict[str, Any]]:
        if self._started:
            return []
        self._started = True
        return json.loads(self._sim.start())

    def round(self) -> Dict[str, Any]:
        """Trains one round and returns its metrics (``loss``, ``rating_accuracy``,
        ``seconds``, bytes, ...). When the schedule validates after this round, the report is
        under ``"val"``. Rounds beyond ``run.rounds`` are allowed."""
        self._start()
        recs = json.loads(self._sim.step())
        out = dict(recs[0])
        for r in recs[1:]:
            out[r.get("split", "eval")] = r
        return out

    def run(self) -> Dict[str, Any]:
        """The remaining rounds of the schedule, then the final validation and test; returns
        the test report. Ctrl-C (KeyboardInterrupt) stops after the current round; calling
        :meth:`run` again continues."""
        self._started = True
        return json.loads(self._sim.run())

    def evaluate(self, split: str = "test") -> Dict[str, Any]:
        """Evaluates the current model on unseen ``"val"`` or ``"test"`` users (each user's
        embedding reconstructed from half of their ratings, metrics on the other half)."""
        return json.loads(self._sim.evaluate(split))

    # -- results -------------------------------------------------------------------------

    def metrics(self) -> List[Dict[str, Any]]:
        """Every record so far, as dicts (the lines of ``metrics.jsonl``)."""
        return json.loads(self._sim.records())

    def metrics_frame(self):
        """Every record so far as a pandas DataFrame (``kind`` is ``train`` or ``eval``)."""
        import pandas as pd

        return pd.DataFrame(self.metrics())

    @property
    def items(self) -> np.ndarray:
        """The item matrix, ``items x K`` float32 (a snapshot: later rounds do not change it)."""
        return self._sim.items()

    @property
    def item_biases(self) -> np.ndarray:
        """Item biases, float32 (empty unless ``model.item_bias``)."""
        return self._sim.item_biases()

    def recommend(self, user: int, k: int = 10) -> List[Tuple[int, Optional[str], float]]:
        """The ``k`` best unrated movies of MovieLens user ``user`` as
        ``(movie id, title, score)``: their embedding is reconstructed from all their ratings
        on the device side, against the current item rows."""
        top = self._sim.recommend(int(user), int(k))
        if self._data._movies is not None:
            titles = dict(zip(self._data._movies["movie"], self._data._movies["title"]))
            top = [(m, t if t is not None else titles.get(m), s) for m, t, s in top]
        return top

    def save_checkpoint(self, path: PathLike) -> None:
        """Writes ``checkpoint.bin``, ``config.toml`` and the metrics files into ``path``."""
        self._sim.save_checkpoint(os.fspath(path))

    def save_model(self, path: PathLike) -> None:
        """Writes the model bundle (``model.npz``: item rows, biases, global mean, raw movie
        ids, data digest, config) that ``fedrecon train --out`` writes and ``fedrecon
        recommend --model`` reads; ``numpy.load(path)`` reads it back."""
        self._sim.save_model(os.fspath(path))

    # -- state ---------------------------------------------------------------------------

    @property
    def rounds_done(self) -> int:
        """Training rounds done."""
        return self._sim.rounds_done

    @property
    def done(self) -> bool:
        """True once ``run.rounds`` rounds are done."""
        return self._sim.done

    @property
    def config_toml(self) -> str:
        """The full configuration as TOML."""
        return self._sim.config_toml

    @property
    def config(self) -> Dict[str, Any]:
        """The full configuration as a dict."""
        try:
            import tomllib
        except ImportError:  # Python < 3.11
            import tomli as tomllib  # type: ignore[no-redef]

        return tomllib.loads(self.config_toml)

    def split_sizes(self) -> Dict[str, Tuple[int, int]]:
        """``{"train"|"val"|"test": (users, ratings)}`` of the user split."""
        return {name: (u, r) for name, u, r in self._sim.split_sizes()}

    def __repr__(self) -> str:
        return f"Simulation({self.rounds_done} rounds done, {self._data!r})"
