"""MovieLens on a fresh machine, as TFF's tutorial gets it: download the GroupLens zip with a
progress bar, verify its checksum, unzip, return the folder to pass as ``--data``.

GroupLens licenses MovieLens for research use and forbids redistribution, so fedrecon never
ships it. A download interrupted part-way is kept as ``NAME.zip.part`` and resumed with an
HTTP range request on the next call (or restarted when the server ignores the range); a zip
whose MD5 differs from the published one is deleted and refused.
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.error
import urllib.request
import zipfile
from typing import Dict, Optional, Union

BASE_URL = "https://files.grouplens.org/datasets/movielens/"
"""Where GroupLens serves the zips; ``base_url=`` or ``FEDRECON_DATA_URL`` override it."""

# MD5 of each zip as GroupLens publishes it (``NAME.zip.md5`` beside the zip), the table of
# host-sim/src/data/fetch.rs: each value confirmed against ten or more independent public
# projects that pin it. A release without a pinned value (``md5=None``) reads GroupLens's
# ``.md5`` file at download time.
DATASETS: Dict[str, Dict[str, Optional[str]]] = {
    "ml-100k": {"zip": "ml-100k.zip", "md5": "0e33842e24a9c977be4e0107933c0723", "ratings": "u.data"},
    "ml-1m": {"zip": "ml-1m.zip", "md5": "c4d9eecfca2ab87c1945afe126590906", "ratings": "ratings.dat"},
    "ml-10m": {
        "zip": "ml-10m.zip",
        "md5": "ce571fd55effeba0271552578f2648bd",
        "ratings": "ratings.dat",
        # The ML-10M zip unpacks to ml-10M100K/.
        "folder": "ml-10M100K",
    },
    "ml-25m": {"zip": "ml-25m.zip", "md5": "6b51fb2759a8657d3bfcbfc42b592ada", "ratings": "ratings.csv"},
    "ml-32m": {"zip": "ml-32m.zip", "md5": "d472be332d4daa821edc399621853b57", "ratings": "ratings.csv"},
}

_CHUNK = 1 << 16


class DownloadError(Exception):
    """A download, checksum or unzip failure; the message says which file and what to do."""


def _progress(name: str, done: int, total: Optional[int], out) -> None:
    if out is None:
        return
    if total:
        frac = done / total
        bar = "=" * int(frac * 30)
        out.write(f"\r{name} [{bar:<30}] {frac:6.1%} {done / 1e6:7.1f} / {total / 1e6:.1f} MB")
    else:
        out.write(f"\r{name} {done / 1e6:7.1f} MB")
    out.flush()


def _md5(path: str) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _published_md5(url: str, timeout: float) -> str:
    try:
        with urllib.request.urlopen(url + ".md5", timeout=timeout) as r:
            text = r.read(4096).decode("ascii", "replace")
    except (urllib.error.URLError, OSError) as e:
        raise DownloadError(f"cannot read the published checksum {url}.md5: {e}") from None
    word = text.split()[0] if text.split() else ""
    if len(word) != 32 or any(c not in "0123456789abcdef" for c in word.lower()):
        raise DownloadError(f"{url}.md5 does not hold an MD5 checksum: {text[:80]!r}")
    return word.lower()


def _download(url: str, part: str, progress, timeout: float) -> None:
    """Downloads ``url`` into ``part``, resuming what ``part`` already holds."""
    have = os.path.getsize(part) if os.path.exists(part) else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:
            return  # the part already holds the whole file
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise DownloadError(f"{url}: {getattr(e, 'reason', e)}") from None
    with resp:
        if have and resp.status != 206:
            have = 0  # the server ignored the range: start over
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        name = os.path.basename(url)
        done = have
        with open(part, "ab" if have else "wb") as f:
            try:
                while True:
                    block = resp.read(_CHUNK)
                    if not block:
                        break
                    f.write(block)
                    done += len(block)
                    _progress(name, done, total, progress)
            except (OSError, urllib.error.URLError) as e:
                raise DownloadError(
                    f"{url}: connection lost after {done} bytes ({e}); {part} is kept, "
                    "run again to resume"
                ) from None
        if progress is not None:
            progress.write("\n")
        if total is not None and done < total:
            raise DownloadError(
                f"{url}: truncated at {done} of {total} bytes; {part} is kept, run again to resume"
            )


def fetch(
    name: str = "ml-1m",
    dest: Union[str, "os.PathLike[str]"] = "data",
    *,
    base_url: Optional[str] = None,
    md5: Optional[str] = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> str:
    """Downloads, verifies and unzips MovieLens ``name`` (``ml-100k``, ``ml-1m``, ``ml-10m``,
    ``ml-25m``, ``ml-32m``) into ``dest``; returns the folder holding the ratings (what
    ``fedrecon train --data`` and :func:`fedrecon.load_movielens` take).

    Already unpacked: returns at once. ``base_url`` (or ``FEDRECON_DATA_URL``) replaces
    GroupLens's address, ``md5`` the expected checksum.
    """
    if name not in DATASETS:
        raise DownloadError(f"unknown dataset '{name}' (expected one of {', '.join(DATASETS)})")
    spec = DATASETS[name]
    dest = os.fspath(dest)
    folder = os.path.join(dest, spec.get("folder") or name)
    if os.path.isfile(os.path.join(folder, spec["ratings"])):
        return folder
    os.makedirs(dest, exist_ok=True)
    base = base_url or os.environ.get("FEDRECON_DATA_URL") or BASE_URL
    url = base.rstrip("/") + "/" + spec["zip"]
    zip_path = os.path.join(dest, spec["zip"])
    part = zip_path + ".part"
    out = sys.stderr if progress else None
    expected = (md5 or spec["md5"] or _published_md5(url, timeout)).lower()
    _download(url, part, out, timeout)
    got = _md5(part)
    if got != expected:
        os.remove(part)
        raise DownloadError(
            f"{url}: checksum mismatch (MD5 {got}, expected {expected}); the download was "
            "deleted, run again to retry"
        )
    os.replace(part, zip_path)
    try:
        with zipfile.ZipFile(zip_path) as z:
            z.extractall(dest)
    except zipfile.BadZipFile as e:
        raise DownloadError(f"{zip_path}: not a valid zip ({e})") from None
    if not os.path.isfile(os.path.join(folder, spec["ratings"])):
        raise DownloadError(f"{zip_path} has no {spec.get('folder') or name}/{spec['ratings']}")
    os.remove(zip_path)
    return folder


def read_movies(path: Union[str, "os.PathLike[str]"]):
    """The movie file of a MovieLens folder (any layout) as a pandas DataFrame: ``movie``,
    ``title``, ``genres`` (a list of names)."""
    import pandas as pd

    path = os.fspath(path)
    dat = os.path.join(path, "movies.dat")
    csv = os.path.join(path, "movies.csv")
    item = os.path.join(path, "u.item")
    if os.path.isfile(dat):
        rows = []
        with open(dat, encoding="latin-1") as f:
            for line in f:
                mid, title, genres = line.rstrip("\r\n").split("::", 2)
                rows.append((int(mid), title, genres.split("|") if genres else []))
        return pd.DataFrame(rows, columns=["movie", "title", "genres"])
    if os.path.isfile(csv):
        df = pd.read_csv(csv)
        return pd.DataFrame(
            {
                "movie": df["movieId"],
                "title": df["title"],
                "genres": df["genres"].fillna("").map(lambda g: [] if g in ("", "(no genres listed)") else g.split("|")),
            }
        )
    if os.path.isfile(item):
        names = [
            "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
            "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
            "Romance", "Sci-Fi", "Thriller", "War", "Western",
        ]
        rows = []
        with open(item, encoding="latin-1") as f:
            for line in f:
                p = line.rstrip("\r\n").split("|")
                flags = p[5:5 + len(names)]
                rows.append((int(p[0]), p[1], [n for n, v in zip(names, flags) if v == "1"]))
        return pd.DataFrame(rows, columns=["movie", "title", "genres"])
    raise FileNotFoundError(f"{path}: no movies.dat, movies.csv or u.item")


def _main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m fedrecon.datasets", description=fetch.__doc__)
    p.add_argument("command", choices=["fetch"])
    p.add_argument("name", choices=sorted(DATASETS))
    p.add_argument("--dest", default="data")
    p.add_argument("--base-url", default=None)
    a = p.parse_args(argv)
    try:
        print(fetch(a.name, a.dest, base_url=a.base_url))
    except DownloadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main())


__all__ = ["BASE_URL", "DATASETS", "DownloadError", "fetch", "read_movies"]
