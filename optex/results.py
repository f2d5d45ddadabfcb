"""Result files: keyed by a hash of the scientific settings, written atomically, verified before use.

One configuration lives in ``<root>/<figure_id>/<hash>/``:

- ``<unit>.csv``, one file per independent unit of work (e.g. one method x seed), so a killed run
  resumes from its finished units;
- ``manifest.json``: ``figure_id``, ``hash``, ``settings`` (the scientific fields of the Config),
  ``runner`` (``module`` and ``config``: the Config class, so the result can be recomputed from the
  manifest alone, see :func:`config_from_manifest`) and ``units``: per unit its record, i.e. where and
  how it was computed (``commit``, ``device``, ``backend``, ``platform``, ``versions``, ``date``,
  ``wall_time_s``) and what its file must be (``file``, ``sha256`` of its bytes, ``rows``, ``columns``);
- ``<unit>.record.json``: a unit's record on its way into the manifest. A writer saves the record,
  then the CSV, then merges every pending record into the manifest under a lock and removes them; a
  reader merges pending records into what it sees, so a kill between the writes never loses a unit,
  and processes writing units of one configuration at once never lose each other's entries.

A unit is used only when its file matches its record (checksum, rows, columns, and the values the
runner expects, e.g. its method and seed). A damaged unit is reported (one warning naming the file)
and recomputed; a damaged *committed* result (under the repository's ``results/``, outside the
git-ignored ``results/_*/`` folders) raises :class:`DamagedResultError` instead, since recomputing a
paper-scale result can take hours and must be a maintainer's decision. Units recorded before checksums
existed are trusted only where git vouches for them (committed and unmodified).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import importlib
import io
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import pandas as pd
from tqdm.auto import tqdm

# Execution options never change the science, so they never change the hash (see Config classes): where
# it runs, which backend, where the data files are read from, how the N gradients are evaluated
# (one batched call or one call each: the same numbers up to rounding), and how many processes compute
# the units side by side.
EXECUTION_FIELDS = ("device", "backend", "data_dir", "parallel", "workers")
_PACKAGES = ("optex", "torch", "gpytorch", "jax", "jaxlib", "optax", "numpy", "pandas")
MANIFEST = "manifest.json"
RECORD_SUFFIX = ".record.json"
LOCK = ".manifest.lock"
# The repository's committed results; its sub-folders whose names start with "_" (results/_local,
# results/_quick, ...) are git-ignored scratch space (see .gitignore).
COMMITTED_DIR = Path(__file__).resolve().parent.parent / "results"
LOCAL_PREFIX = "_"
# A temporary file is stale when its writer is gone: same host and no such process, or (another host
# sharing the folder, or a name without a pid) older than this.
STALE_AFTER_S = 24 * 3600
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[^.]+\.tmp$")


class DamagedResultError(RuntimeError):
    """A committed result file does not match its record: it is not used and not recomputed silently."""


class DamagedResultWarning(UserWarning):
    """A cached result file does not match its record: it is recomputed."""


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


def runner_of(config: Any) -> dict[str, str] | None:
    """Where ``config``'s class lives: ``{"module": ..., "config": ...}`` (None for a plain mapping)."""
    if not is_dataclass(config):
        return None
    return {"module": type(config).__module__, "config": type(config).__qualname__}


def config_from_manifest(manifest: Mapping[str, Any], **execution: Any) -> Any:
    """The Config a manifest was made from, rebuilt from its ``runner`` and ``settings`` (plus the
    execution options given, e.g. ``device``); checked against the manifest's hash."""
    runner = manifest.get("runner")
    if not runner:
        raise ValueError(f"the manifest of {manifest.get('figure_id')}/{manifest.get('hash')} records no runner "
                         "(made before runners were recorded): recompute it to verify it")
    cls = getattr(importlib.import_module(runner["module"]), runner["config"])
    names = {f.name: str(f.type) for f in fields(cls)}
    unknown = sorted(set(manifest["settings"]) - set(names))
    if unknown:
        raise ValueError(f"{runner['module']}.{runner['config']} has no field {', '.join(unknown)} (the code changed)")
    values = {k: tuple(v) if isinstance(v, list) and "tuple" in names[k] else v
              for k, v in manifest["settings"].items()}
    config = cls(**values, **{k: v for k, v in execution.items() if k in names})
    if config_hash(config) != manifest["hash"]:
        raise ValueError(f"{runner['module']}.{runner['config']} rebuilt from the manifest of "
                         f"{manifest.get('figure_id')}/{manifest['hash']} hashes to {config_hash(config)}: "
                         "the Config gained or changed a field")
    return config


def _temporary_name(path: Path) -> str:
    return f".{path.name}.{_HOST}.{os.getpid()}."


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a torn one.
    The temporary file's name carries the host and pid of its writer (see :func:`remove_stale_temporaries`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "w" if isinstance(data, str) else "wb"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temporary_name(path), suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the temporary files of killed writes in ``folder`` (never one whose writer still runs)."""
    removed = []
    for path in folder.glob(".*.tmp"):
        match = _TEMPORARY.match(path.name)
        try:
            if match and match["host"] == _HOST:
                stale = not _alive(int(match["pid"]))
            else:
                stale = time.time() - path.stat().st_mtime > STALE_AFTER_S
            if stale:
                path.unlink()
                removed.append(path)
        except FileNotFoundError:
            continue  # finished (renamed) or removed by another reader meanwhile
    return removed


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


# Vector instruction sets, widest first: BLAS and XLA kernels pick their code path (and with it the order in
# which float32 sums reduce) by the widest one the CPU offers.
_VECTOR_FLAGS = (("avx512f", "AVX512"), ("avx2", "AVX2"), ("avx", "AVX"), ("sse4_2", "SSE4.2"), ("asimd", "NEON"))


def cpu_instructions(cpuinfo: str | None = None) -> str:
    """The CPU's vendor and widest vector instruction set, e.g. ``"AuthenticAMD AVX2"`` (Linux reads
    ``/proc/cpuinfo``; elsewhere, or when it is unreadable, the machine type alone, e.g. ``"arm64"``).

    Two machines with the same string run the same BLAS code path, so float32 results agree to the last
    few bits; across strings the reduction order differs and they agree only to about 1e-4 (see
    :mod:`optex.verify`)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    widest = next((name for flag, name in _VECTOR_FLAGS if flag in flags), None)
    if widest is None:
        return platform.machine() or "unknown"
    return f"{fields.get('vendor_id') or fields.get('CPU implementer') or platform.machine()} {widest}"


def provenance(device: str, backend: str, commit: str | None = None) -> dict[str, Any]:
    """Where a result came from: code version, machine (its CPU's vector instructions included),
    libraries, torch's thread count and date.

    The thread count matters for reproduction: float32 sums reduce in a thread-dependent order, and
    quantities built from near-cancelling sums (the median distance behind the lengthscale) move by
    ~1e-4 between thread counts. ``book verify`` recomputes with the recorded count. The instruction
    set matters the same way (a BLAS kernel's order of summation follows its vector width), which
    ``book verify`` reads to choose its tolerance."""
    torch = sys.modules.get("torch")
    return {
        "commit": commit or git_commit(),
        "device": device,
        "backend": backend,
        "platform": platform.platform(),
        "instructions": cpu_instructions(),
        "versions": versions(),
        "threads": torch.get_num_threads() if torch is not None else None,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def is_committed(path: str | Path) -> bool:
    """Whether ``path`` lies in the repository's committed ``results/`` (not in a ``results/_*/`` folder)."""
    path = Path(path).resolve()
    try:
        relative = path.relative_to(COMMITTED_DIR)
    except ValueError:
        return False
    return not relative.parts or not relative.parts[0].startswith(LOCAL_PREFIX)


def _git_lines(folder: Path, *args: str) -> set[str] | None:
    try:
        done = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return {line for line in done.stdout.split("\0") if line}


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (POSIX ``flock``: released by the kernel if its holder dies; the
    empty lock file stays, git-ignored)."""
    import fcntl

    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class ResultStore:
    """The result files of one experiment configuration."""

    def __init__(self, root: str | Path, figure_id: str, config: Any, key: str | None = None) -> None:
        self.config = config
        self.key = key or config_hash(config)
        self.dir = Path(root) / figure_id / self.key
        self.figure_id = figure_id
        self._git: tuple[set[str], set[str]] | None = None
        self._swept = False

    @classmethod
    def at(cls, directory: str | Path) -> "ResultStore":
        """The store of an existing configuration folder ``<root>/<figure_id>/<hash>``, for reading and
        checking it without its Config (see :func:`config_from_manifest` to rebuild that)."""
        directory = Path(directory)
        if not (directory / MANIFEST).is_file():
            raise FileNotFoundError(f"{directory} has no {MANIFEST}")
        return cls(directory.parent.parent, directory.parent.name, None, key=directory.name)

    @property
    def committed(self) -> bool:
        return is_committed(self.dir)

    def _manifest_path(self) -> Path:
        return self.dir / MANIFEST

    def _read_manifest(self) -> dict[str, Any]:
        path = self._manifest_path()
        if path.exists():
            return json.loads(path.read_text())
        return {"figure_id": self.figure_id, "hash": self.key, "settings": scientific_settings(self.config),
                "runner": runner_of(self.config), "units": {}}

    def _pending(self) -> dict[str, tuple[dict[str, Any], bytes]]:
        """Records written but not yet merged into the manifest: unit -> (record, raw bytes)."""
        out = {}
        for path in sorted(self.dir.glob(f"*{RECORD_SUFFIX}")):
            try:
                raw = path.read_bytes()
                out[path.name[: -len(RECORD_SUFFIX)]] = (json.loads(raw), raw)
            except FileNotFoundError:
                continue  # merged and removed meanwhile: the manifest read after this has it
            except ValueError:
                continue  # a torn record cannot exist (atomic writes); an edited one is ignored
        return out

    def manifest(self) -> dict[str, Any]:
        """The manifest with every pending unit record merged in."""
        pending = self._pending()  # before the manifest: a record merged meanwhile is then in the manifest
        manifest = self._read_manifest()
        manifest["units"].update({unit: record for unit, (record, _) in pending.items()})
        return manifest

    def units(self) -> Iterable[str]:
        return self.manifest()["units"].keys()

    # ------------------------------------------------------------------------------------- reading
    def _git_state(self) -> tuple[set[str], set[str]]:
        """(tracked, modified) file names of this folder according to git (empty outside git)."""
        if self._git is None:
            tracked = _git_lines(self.dir, "ls-files", "-z", "--", ".") or set()
            modified = _git_lines(self.dir, "diff", "--name-only", "--relative", "-z", "HEAD", "--", ".") or set()
            self._git = (tracked, modified)
        return self._git

    def check(self, unit: str, expect: Mapping[str, Any] | None = None) -> tuple[str | None, pd.DataFrame | None]:
        """Why the unit's file cannot be used (None: it can), and its table when it can."""
        return self._problem(unit, self.manifest()["units"].get(unit), expect or {})

    def _problem(self, unit: str, record: Mapping[str, Any] | None,
                 expect: Mapping[str, Any]) -> tuple[str | None, pd.DataFrame | None]:
        path = self.dir / f"{unit}.csv"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return "missing (the manifest lists it)", None
        if record is None or "sha256" not in record:
            tracked, modified = self._git_state()
            if path.name not in tracked or path.name in modified:
                return "has no checksum record" if record is None else "has no checksum in its record", None
        elif hashlib.sha256(data).hexdigest() != record["sha256"]:
            return "does not match the checksum in its record (edited or damaged)", None
        try:
            frame = pd.read_csv(io.BytesIO(data))
        except ValueError as error:  # pandas' parser and empty-data errors, undecodable bytes
            return f"is not a readable CSV table ({type(error).__name__}: {str(error).splitlines()[0][:80]})", None
        if record is not None and "rows" in record and len(frame) != record["rows"]:
            return f"has {len(frame)} rows, its record says {record['rows']}", None
        if record is not None and "columns" in record and list(frame.columns) != list(record["columns"]):
            return "has other columns than its record", None
        for column, value in expect.items():
            if column not in frame.columns:
                return f"has no column {column!r}", None
            if len(frame) == 0 or not (frame[column] == value).all():
                return f"holds rows whose {column} is not {value!r}", None
        return None, frame

    def load(self, unit: str, expect: Mapping[str, Any] | None = None) -> pd.DataFrame | None:
        """The unit's table, or None when it has not been computed (or is damaged: then reported with
        one warning naming the file, never used, and overwritten when the runner recomputes it).
        ``expect`` maps columns to the value every row must hold (e.g. its method and seed). A damaged
        committed result raises :class:`DamagedResultError`; a deleted one is missing (the caller's
        ``compute`` decides)."""
        self._sweep()
        path = self.dir / f"{unit}.csv"
        record = self.manifest()["units"].get(unit)
        if record is None and not path.exists():
            return None
        problem, frame = self._problem(unit, record, expect or {})
        if problem is None:
            return frame
        if self.committed and path.exists():
            raise DamagedResultError(f"{path}: {problem}. It is a committed result: restore it with "
                                     f"`git checkout -- {path}`, or delete it and recompute it on purpose")
        warnings.warn(f"{path}: {problem}; not used (it is recomputed)", DamagedResultWarning, stacklevel=2)
        return None

    # ------------------------------------------------------------------------------------- writing
    def _sweep(self) -> None:
        if not self._swept and self.dir.is_dir():
            remove_stale_temporaries(self.dir)
            self._swept = True

    def save(self, unit: str, frame: pd.DataFrame, prov: dict[str, Any]) -> None:
        """Write the unit's table and its record (provenance plus checksum, rows and columns)."""
        self._sweep()
        buffer = io.StringIO()
        frame.to_csv(buffer, index=False)
        data = buffer.getvalue().encode()
        record = dict(prov, file=f"{unit}.csv", sha256=hashlib.sha256(data).hexdigest(), rows=len(frame),
                      columns=[str(c) for c in frame.columns])
        raw = json.dumps(record, indent=1, sort_keys=True).encode()
        atomic_write(self.dir / f"{unit}{RECORD_SUFFIX}", raw)
        atomic_write(self.dir / f"{unit}.csv", data)
        self._merge({unit: (record, raw)})

    def _merge(self, own: Mapping[str, tuple[dict[str, Any], bytes]]) -> None:
        """Move every pending record (and ``own``) into the manifest, under the manifest's lock."""
        with _locked(self.dir / LOCK):
            pending = {**self._pending(), **own}
            manifest = self._read_manifest()
            manifest["runner"] = manifest.get("runner") or runner_of(self.config)
            manifest["units"].update({unit: record for unit, (record, _) in pending.items()})
            atomic_write(self._manifest_path(), json.dumps(manifest, indent=1, sort_keys=True) + "\n")
            for unit, (_, raw) in pending.items():
                path = self.dir / f"{unit}{RECORD_SUFFIX}"
                with contextlib.suppress(FileNotFoundError):
                    if path.read_bytes() == raw:  # not rewritten by another writer meanwhile
                        path.unlink()


CHECKPOINT_SUFFIX = ".checkpoint"


@dataclass(frozen=True)
class Unit:
    """One independent piece of a runner's work: its file name, how to compute it, and the value
    every row of its table must hold (checked when it is read back).

    With ``checkpoint=True``, ``compute`` takes one argument: a file it may use to save its state
    inside a long run and resume from after a kill (``<store>/<name>.checkpoint``, or None without a
    store); :func:`run_units` removes that file once the unit's table is saved."""

    name: str
    compute: Callable[..., pd.DataFrame]
    expect: Mapping[str, Any] = field(default_factory=dict)
    checkpoint: bool = False


def process_rank() -> int:
    """This process's rank in an initialised ``torch.distributed`` group, else 0. Under
    ``parallel="distributed"`` every rank computes every unit (the ranks share its evaluations) and
    reads the same cache and checkpoints, but only rank 0 writes them."""
    torch = sys.modules.get("torch")
    dist = getattr(torch, "distributed", None) if torch is not None else None
    return dist.get_rank() if dist is not None and dist.is_available() and dist.is_initialized() else 0


def run_units(store: ResultStore | None, units: Sequence[Unit], *, device: str, backend: str,
              commit: str | None = None, compute: bool = True, progress: bool = False,
              label: str = "", details: Callable[[], Mapping[str, Any]] | None = None) -> list[pd.DataFrame]:
    """The tables of ``units`` in order: verified cached files where they exist, the rest computed
    (with a progress bar) and saved with their provenance and wall time (plus ``details()``, e.g. a
    description of the data, where given). ``store=None`` computes without caching; ``compute=False``
    raises ``FileNotFoundError`` listing what is missing. Only rank 0 of a distributed run writes
    (:func:`process_rank`)."""
    frames: dict[str, pd.DataFrame] = {}
    writer = process_rank() == 0
    for unit in units:
        cached = None if store is None else store.load(unit.name, unit.expect)
        if cached is not None:
            frames[unit.name] = cached
    missing = [u for u in units if u.name not in frames]
    if missing and not compute:
        raise FileNotFoundError(f"{len(missing)} of {len(units)} result units of {store.figure_id}/{store.key} are "
                                f"missing (e.g. {missing[0].name}); run with compute=True")
    bar = tqdm(missing, desc=label or (store.figure_id if store else "run"), unit="unit",
               disable=not progress or not missing or not writer)
    for unit in bar:
        bar.set_postfix_str(unit.name)
        start = time.perf_counter()
        if unit.checkpoint:
            checkpoint = None if store is None else store.dir / f"{unit.name}{CHECKPOINT_SUFFIX}"
            frame = unit.compute(checkpoint)
        else:
            checkpoint, frame = None, unit.compute()
        if store is not None and writer:
            store.save(unit.name, frame, dict(provenance(device, backend, commit), **(details() if details else {}),
                                              wall_time_s=round(time.perf_counter() - start, 3)))
            if checkpoint is not None:
                checkpoint.unlink(missing_ok=True)
        frames[unit.name] = frame
    return [frames[u.name] for u in units]


__all__ = ["CHECKPOINT_SUFFIX", "COMMITTED_DIR", "DamagedResultError", "DamagedResultWarning", "EXECUTION_FIELDS", "ResultStore", "Unit",
           "atomic_write", "config_from_manifest", "config_hash", "cpu_instructions", "git_commit", "is_committed", "process_rank", "provenance",
           "remove_stale_temporaries", "run_units", "runner_of", "scientific_settings", "versions"]
