"""Release: one versioned, verifiable archive of a catalog and everything needed to rebuild it.

The archive ``<run.name>-<release.version>.tar.gz`` holds, under one top folder:

* the catalog products (``catalog.fits``, ``catalog.yaml`` …) and other listed products;
* ``config/config.resolved.yaml`` — the exact configuration, every default filled in — and
  the user's config file(s) as given;
* ``observations.ecsv`` — the input observations with every file they read (events, GTI,
  IRFs) and its SHA-256, so anyone can check they have the same data;
* ``versions.json`` — Python, gpscat (and its git commit when run from a checkout) and the
  versions of the libraries that shape the numbers;
* the Snakemake report, when given;
* ``MANIFEST.sha256`` — SHA-256 of every other file, in ``sha256sum`` format
  (``sha256sum -c MANIFEST.sha256`` inside the unpacked folder verifies it).

The tar file itself is reproducible: members sorted, fixed modification times and owners,
gzip without a timestamp.  :func:`verify_release` checks an archive against its manifest.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import platform
import subprocess
import tarfile
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path

import numpy as np
import yaml
from astropy.table import Table

from gpscat import __version__
from gpscat.config import Config
from gpscat.io.atomic import atomic_path
from gpscat.io.dl3 import DataStore, DL3Error

__all__ = ["run", "verify_release", "software_versions", "sha256_file", "observation_files"]

log = logging.getLogger(__name__)

#: distributions whose versions are recorded
_DISTRIBUTIONS = (
    "numpy",
    "scipy",
    "astropy",
    "regions",
    "iminuit",
    "scikit-image",
    "scikit-learn",
    "pyyaml",
    "matplotlib",
    "snakemake",
    "jsonschema",
)
_HDU_TYPES = ("events", "gti", "aeff", "edisp", "psf", "bkg")
_MTIME = 946684800  # 2000-01-01: fixed member times make the archive reproducible


def sha256_file(path: str | os.PathLike, *, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def software_versions() -> dict:
    """Versions of Python, gpscat (+ git commit if available) and the numerical libraries."""
    out = {"python": platform.python_version(), "gpscat": __version__}
    repo = Path(__file__).resolve().parents[3]
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        out["gpscat_git_commit"] = commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    for dist in _DISTRIBUTIONS:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def observation_files(store: DataStore, obs_ids: Iterable[int]) -> Table:
    """One row per (observation, HDU type): file path, HDU name, size and SHA-256.

    Files shared by several observations (e.g. one IRF file) are hashed once.
    """
    rows = []
    cache: dict[Path, tuple[str, int]] = {}
    for obs_id in obs_ids:
        for hdu_type in _HDU_TYPES:
            try:
                loc = store.location(int(obs_id), hdu_type)
            except DL3Error:
                continue  # e.g. no PSF entry for this observation
            if loc.path not in cache:
                if not loc.path.is_file():
                    raise FileNotFoundError(f"obs {obs_id}: {hdu_type} file {loc.path} is missing")
                cache[loc.path] = (sha256_file(loc.path), loc.path.stat().st_size)
            digest, size = cache[loc.path]
            rows.append((int(obs_id), hdu_type, str(loc.path), loc.hdu_name, size, digest))
    names = ("OBS_ID", "HDU_TYPE", "FILE", "HDU_NAME", "SIZE", "SHA256")
    if not rows:
        return Table(names=names, dtype=(np.int64, str, str, str, np.int64, str))
    return Table(rows=rows, names=names)


def _member(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = _MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o644
    return info, data


def _write_archive(path: Path, files: dict[str, bytes]) -> None:
    """Reproducible .tar.gz of ``{member name: content}``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            info, data = _member(name, files[name])
            tar.addfile(info, io.BytesIO(data))
    with atomic_path(path) as tmp, open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
        gz.write(buf.getvalue())


def run(
    cfg: Config,
    *,
    products: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    obs_ids: Sequence[int] = (),
    config_files: Sequence[str | os.PathLike] = (),
    report: str | os.PathLike | None = None,
    store: DataStore | None = None,
) -> dict:
    """Build the release archive ``output`` and return its manifest ``{member: sha256}``.

    Parameters
    ----------
    cfg : Config
        The run's configuration (written resolved into the archive; ``run.name`` and
        ``release.version`` name the top folder).
    products : sequence of path
        Catalog products and other result files to ship (kept under ``products/`` with
        their path relative to the working directory).
    output : path
        ``release/<name>-<version>.tar.gz``.
    obs_ids : sequence of int
        Input observations; their files are listed with SHA-256 (needs the data store).
    config_files : sequence of path
        The user's config file(s) as given to Snakemake / the CLI.
    report : path, optional
        Snakemake report (zip or html) to include.
    store : DataStore, optional
        Open data store (default: ``data.store`` of the config).
    """
    rel = cfg["release"]
    name = f"{cfg['run'].get('name', 'gpscat')}-{rel.get('version', '0.1.0')}"
    files: dict[str, bytes] = {}
    for p in products:
        p = Path(p)
        if not p.is_file():
            raise FileNotFoundError(f"release: product {p} does not exist")
        files[f"{name}/products/{_relative(p)}"] = p.read_bytes()
    files[f"{name}/config/config.resolved.yaml"] = yaml.safe_dump(cfg.to_dict(), sort_keys=True).encode()
    for c in config_files:
        files[f"{name}/config/{Path(c).name}"] = Path(c).read_bytes()
    if obs_ids and rel.get("checksum_inputs", True):
        if store is None:
            data = cfg["data"]
            store = DataStore.from_dir(
                cfg.path(data["store"]),
                obs_index=cfg.path(data["obs_index"]) if data.get("obs_index") else None,
                hdu_index=cfg.path(data["hdu_index"]) if data.get("hdu_index") else None,
            )
        table = observation_files(store, obs_ids)
        log.info("release: %d input files of %d observations hashed", len(set(table["FILE"])), len(obs_ids))
    else:
        table = Table({"OBS_ID": np.asarray(obs_ids, dtype=np.int64)})
    buf = io.StringIO()
    table.write(buf, format="ascii.ecsv")
    files[f"{name}/observations.ecsv"] = buf.getvalue().encode()
    versions = software_versions()
    versions["config_hash"] = cfg.hash
    files[f"{name}/versions.json"] = json.dumps(versions, indent=2, sort_keys=True).encode()
    if report is not None:
        files[f"{name}/report/{Path(report).name}"] = Path(report).read_bytes()
    manifest = {k: hashlib.sha256(v).hexdigest() for k, v in sorted(files.items())}
    lines = [f"{digest}  {member[len(name) + 1 :]}" for member, digest in manifest.items()]
    files[f"{name}/MANIFEST.sha256"] = ("\n".join(lines) + "\n").encode()
    _write_archive(Path(output), files)
    log.info("release %s: %d files, archive %s", name, len(files), output)
    return manifest


def _relative(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return p.name


def verify_release(archive: str | os.PathLike) -> list[str]:
    """Check every member of a release archive against its ``MANIFEST.sha256``.

    Returns the list of problems (empty when the archive verifies).
    """
    problems = []
    with tarfile.open(archive, "r:gz") as tar:
        members = {m.name: m for m in tar.getmembers() if m.isfile()}
        manifests = [n for n in members if n.endswith("/MANIFEST.sha256")]
        if len(manifests) != 1:
            return [f"{archive}: expected one MANIFEST.sha256, found {len(manifests)}"]
        top = manifests[0].rsplit("/", 1)[0]
        listed = {}
        for line in tar.extractfile(members[manifests[0]]).read().decode().splitlines():
            digest, rel = line.split("  ", 1)
            listed[f"{top}/{rel}"] = digest
        for member, digest in listed.items():
            if member not in members:
                problems.append(f"{member}: listed in the manifest but missing")
                continue
            actual = hashlib.sha256(tar.extractfile(members[member]).read()).hexdigest()
            if actual != digest:
                problems.append(f"{member}: SHA-256 {actual} differs from the manifest's {digest}")
        for member in members:
            if member not in listed and member != manifests[0]:
                problems.append(f"{member}: not listed in the manifest")
    return problems
