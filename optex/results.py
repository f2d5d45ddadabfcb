"""Result files: keyed by a hash of the scientific settings, written atomically, with provenance.

Layout: ``<root>/<figure_id>/<hash>/<unit>.csv`` (one file per independent unit of work, e.g. one
method x seed, so a killed run resumes from the finished units) and ``manifest.json`` beside them
with the settings and, per unit, where and how it was computed.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import os
import platform
import subprocess
import tempfile
from dataclasses import asdict, fields, is_dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

# Execution options never change the science, so they never change the hash (see Config classes).
EXECUTION_FIELDS = ("device", "backend")
_PACKAGES = ("optex", "torch", "gpytorch", "jax", "jaxlib", "optax", "numpy", "pandas")


def _json_ready(value: Any, annotation: str) -> Any:
    if isinstance(value, tuple):
        return list(value)
    # 100 and 100.0 are the same setting of a float field: hash them alike.
    if "float" in annotation and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def scientific_settings(config: Any) -> dict[str, Any]:
    """The config's fields minus execution options, as JSON-ready values."""
    if is_dataclass(config):
        types = {f.name: str(f.type) for f in fields(config)}
        data = asdict(config)
    else:
        data, types = dict(config), {}
    return {k: _json_ready(v, types.get(k, "")) for k, v in data.items() if k not in EXECUTION_FIELDS}


def config_hash(config: Any) -> str:
    text = json.dumps(scientific_settings(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "w" if isinstance(data, str) else "wb"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def git_commit(cwd: Path | None = None) -> str | None:
    """HEAD's commit (with '+dirty' when optex/ has uncommitted changes), or None outside git."""
    cwd = cwd or Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "."], cwd=cwd, capture_output=True, text=True,
                               check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def provenance(device: str, backend: str, commit: str | None = None) -> dict[str, Any]:
    """Where a result came from: code version, machine, libraries and date."""
    return {
        "commit": commit or git_commit(),
        "device": device,
        "backend": backend,
        "platform": platform.platform(),
        "versions": versions(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


class ResultStore:
    """The result files of one experiment configuration."""

    def __init__(self, root: str | Path, figure_id: str, config: Any) -> None:
        self.config = config
        self.key = config_hash(config)
        self.dir = Path(root) / figure_id / self.key
        self.figure_id = figure_id

    def _manifest_path(self) -> Path:
        return self.dir / "manifest.json"

    def manifest(self) -> dict[str, Any]:
        path = self._manifest_path()
        if path.exists():
            return json.loads(path.read_text())
        return {"figure_id": self.figure_id, "hash": self.key, "settings": scientific_settings(self.config), "units": {}}

    def load(self, unit: str) -> pd.DataFrame | None:
        path = self.dir / f"{unit}.csv"
        return pd.read_csv(path) if path.exists() else None

    def save(self, unit: str, frame: pd.DataFrame, prov: dict[str, Any]) -> None:
        buffer = io.StringIO()
        frame.to_csv(buffer, index=False)
        atomic_write(self.dir / f"{unit}.csv", buffer.getvalue())
        manifest = self.manifest()
        manifest["units"][unit] = prov
        atomic_write(self._manifest_path(), json.dumps(manifest, indent=1, sort_keys=True))

    def units(self) -> Iterable[str]:
        return self.manifest()["units"].keys()
