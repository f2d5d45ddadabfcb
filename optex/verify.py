"""``python -m optex book verify``: does today's code still compute the committed results?

For every configuration in the repository's committed ``results/`` (each ``manifest.json`` outside the
git-ignored ``results/_*/`` folders) it

1. checks every unit file against its record (checksum, rows, columns);
2. rebuilds the Config from the manifest (:func:`optex.results.config_from_manifest`: the runner and
   the settings; the rebuilt Config must hash to the folder's name);
3. recomputes a short prefix with today's code, as the runner's ``verification(config)`` defines it
   (one seed per method and enough iterations to include proxy iterations, see
   :class:`Prefix`), and compares it with the committed file's first rows: numbers within
   ``rtol`` (relative) or ``atol`` (absolute), NaN equal to NaN, everything else exactly. The default
   tolerance, 1e-4 relative, covers float32 runs at another thread count; a change of the algorithm moves
   numbers by far more.

On a CPU whose vector instructions differ from those the units record (``instructions``, e.g.
``"GenuineIntel AVX512"`` against ``"AuthenticAMD AVX2"``; units from before it was recorded count as
different), BLAS sums reduce in another order, and float32 runs drift further within the few iterations
of a prefix. Measured on the committed results (AVX2 here, against the machine that made them): the
loss and gap columns within 1.7e-4 relative, but the lengthscale up to 6.8e-4 (it is a median of
distances formed from near-cancelling float32 inner products), the proxy cosines and errors and the
gradient norm up to 8.5e-3, and in one text run 0.29, where two candidates of the lengthscale grid are
nearly tied and the other machine picks the neighbouring one. So across instruction sets the prefix's
other numbers must match within ``cross_rtol`` (1e-3), while the GP diagnostics (``DIAGNOSTICS``:
columns that read the fitted GP or the points it chose) are measured, recorded as the entry's
``spread`` and shown, but do not fail the check. On the same instruction set everything is compared at
``rtol``.

Results made on a GPU (or MPS) are verified only where that device is present; elsewhere they are
``skipped``. The outcome goes to ``book/_executed/verification.json`` (git-ignored), which the book's
provenance notes read ("verified against commit X", or a warning naming what changed), and which
``book check`` enforces for the paper-profile results a page shows (:func:`verification_problems`).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import importlib
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd

from . import results as _results

RECORD = Path("book") / "_executed" / "verification.json"
FIGURES = Path("book") / "_executed" / "figures"  # the provenance records of published figures
RTOL, ATOL = 1e-4, 1e-12
CROSS_RTOL = 1e-3  # the other numbers' tolerance on a CPU with other vector instructions (see above)
DIAGNOSTICS = ("lengthscale", "grad_norm", "proxy_")  # column names, or their beginnings, of the GP diagnostics
STATUSES = ("passed", "failed", "damaged", "unverifiable", "skipped")
# Execution options a runner records with each unit (e.g. the training runner's ``parallel``: one batched
# call or one call per gradient, the same numbers up to rounding): the recomputation reuses them, so that
# it rounds as the committed run did.
RECORDED_OPTIONS = ("parallel",)
TIMING = ("wall_time", "wall_time_s", "time_proxy", "time_eval", "time_update")


@dataclass(frozen=True)
class Prefix:
    """A short recomputation a runner offers for verification: ``compute()`` returns the first rows of
    the committed unit ``unit`` as today's code makes them. ``ignore`` lists columns that are not
    reproducible by nature (timings); ``rtol`` / ``atol`` are the tolerance of the other numbers, and
    ``cross_rtol`` theirs on a CPU with other vector instructions, where the ``diagnostics`` columns are
    only measured (see the module docstring)."""

    unit: str
    compute: Callable[[], pd.DataFrame]
    ignore: tuple[str, ...] = TIMING
    rtol: float = RTOL
    atol: float = ATOL
    cross_rtol: float = CROSS_RTOL
    diagnostics: tuple[str, ...] = DIAGNOSTICS

    def is_diagnostic(self, column: str) -> bool:
        return column.startswith(self.diagnostics)


def committed_configurations(root: Path) -> list[Path]:
    """Every configuration folder (``<figure>/<hash>`` with a manifest) of the committed results."""
    results_dir = root / "results"
    return sorted(p.parent for p in results_dir.glob("*/*/manifest.json")
                  if not p.parent.parent.name.startswith(_results.LOCAL_PREFIX))


def _numeric(old: pd.Series, new: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(old) and pd.api.types.is_numeric_dtype(new)


def compare(committed: pd.DataFrame, recomputed: pd.DataFrame, prefix: Prefix, same_cpu: bool = True) -> str | None:
    """The first difference between ``recomputed`` and the first rows of ``committed`` (None: none).

    ``same_cpu=False`` (made on a CPU with other vector instructions): numbers within ``prefix.cross_rtol``
    and the diagnostics columns not compared (:func:`spread` measures them)."""
    if len(committed) < len(recomputed):
        return f"has {len(committed)} rows, the recomputed prefix {len(recomputed)}"
    columns = [c for c in recomputed.columns if c not in prefix.ignore]
    absent = [c for c in columns if c not in committed.columns]
    if absent:
        return f"lacks column(s) {', '.join(absent)} that today's code writes"
    head = committed.iloc[: len(recomputed)].reset_index(drop=True)
    fresh = recomputed.reset_index(drop=True)
    rtol = prefix.rtol if same_cpu else prefix.cross_rtol
    for column in columns:
        old, new = head[column], fresh[column]
        if _numeric(old, new):
            if not same_cpu and prefix.is_diagnostic(column):
                continue
            a, b = old.to_numpy(dtype=float), new.to_numpy(dtype=float)
            same = np.isclose(a, b, rtol=rtol, atol=prefix.atol, equal_nan=True)
        else:
            same = ((old.astype(str) == new.astype(str)) | (old.isna() & new.isna())).to_numpy()  # missing alike
        if not same.all():
            row = int(np.flatnonzero(~same)[0])
            where = f"iteration {head['iteration'].iloc[row]}" if "iteration" in head else f"row {row}"
            return f"column {column}, {where}: committed {old.iloc[row]!r}, recomputed {new.iloc[row]!r}"
    return None


def spread(committed: pd.DataFrame, recomputed: pd.DataFrame, prefix: Prefix) -> dict[str, float]:
    """The largest relative difference of each numeric diagnostics column between ``recomputed`` and
    the first rows of ``committed`` (differences within ``prefix.atol`` count as none; NaN alike)."""
    head = committed.iloc[: len(recomputed)].reset_index(drop=True)
    fresh = recomputed.reset_index(drop=True)
    out = {}
    for column in fresh.columns:
        if column in prefix.ignore or column not in head or not prefix.is_diagnostic(column):
            continue
        if not _numeric(head[column], fresh[column]):
            continue
        a, b = head[column].to_numpy(dtype=float), fresh[column].to_numpy(dtype=float)
        both = np.isfinite(a) & np.isfinite(b)
        gap = np.abs(a[both] - b[both])
        relative = np.where(gap > prefix.atol, gap / np.maximum(np.abs(a[both]), prefix.atol), 0.0)
        out[column] = float(relative.max()) if relative.size else 0.0
    return out


def _available(device: str, backend: str) -> bool:
    if device in ("cpu", "auto"):
        return True
    from .cli import available_devices

    return device in available_devices(backend)


@contextlib.contextmanager
def _torch_threads(records: dict[str, dict[str, Any]]) -> Iterator[None]:
    """torch at the thread count the units were computed with (one thread where none is recorded: the
    committed results are computed that way, see the README), restored afterwards."""
    counts = {r.get("threads") for r in records.values()} - {None}
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(max(counts)) if counts else 1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def verify_configuration(directory: Path, root: Path) -> dict[str, Any]:
    """The verification entry of one committed configuration (see the module docstring)."""
    start = time.perf_counter()
    store = _results.ResultStore.at(directory)
    manifest = store.manifest()
    records = manifest["units"]
    commits = sorted({str(r.get("commit") or "unknown") for r in records.values()})
    devices = sorted({str(r.get("device", "cpu")) for r in records.values()})
    backends = sorted({str(r.get("backend", "torch")) for r in records.values()})
    recorded = sorted({str(r.get("instructions") or "unrecorded") for r in records.values()})
    here = _results.cpu_instructions()
    same_cpu = recorded == [here]
    entry: dict[str, Any] = {
        "figure_id": store.figure_id, "hash": store.key, "path": directory.relative_to(root).as_posix(),
        "runner": manifest.get("runner"), "units": len(records), "commits": commits,
        "dirty": any(c.endswith("+dirty") for c in commits), "devices": devices, "backends": backends,
        "instructions": {"recorded": recorded, "here": here, "same": same_cpu}, "checked": [], "spread": {},
    }

    def done(status: str, reason: str | None = None) -> dict[str, Any]:
        entry.update(status=status, reason=reason, seconds=round(time.perf_counter() - start, 2))
        return entry

    for unit in sorted(records):
        problem, _ = store.check(unit)
        if problem is not None:
            return done("damaged", f"{unit}.csv {problem}")
    device, backend = devices[0], backends[0]
    if len(devices) > 1 or len(backends) > 1:
        return done("unverifiable", f"units made on several devices or backends ({', '.join(devices + backends)})")
    if not _available(device, backend):
        return done("skipped", f"made on {device}; no {device} device here")
    options = {}
    for name in RECORDED_OPTIONS:
        values = sorted({str(r[name]) for r in records.values() if name in r})
        if len(values) > 1:
            return done("unverifiable", f"units made with several {name} settings ({', '.join(values)})")
        options.update({name: values[0]} if values else {})
    try:
        config = _results.config_from_manifest(manifest, device=device, backend=backend, **options)
    except (ValueError, TypeError, ImportError, AttributeError) as error:
        return done("unverifiable", str(error))
    hook = getattr(importlib.import_module(type(config).__module__), "verification", None)
    if hook is None:
        return done("unverifiable", f"{type(config).__module__} defines no verification prefix")
    for prefix in hook(config):
        problem, committed = store.check(prefix.unit)
        if committed is None:
            return done("damaged", f"{prefix.unit}.csv {problem}")
        with _torch_threads(records):
            recomputed = prefix.compute()
        entry["checked"].append(dict(unit=prefix.unit, rows=len(recomputed)))
        if not same_cpu:
            for column, value in spread(committed, recomputed, prefix).items():
                entry["spread"][column] = max(value, entry["spread"].get(column, 0.0))
        difference = compare(committed, recomputed, prefix, same_cpu)
        if difference is not None:
            return done("failed", f"{prefix.unit}: {difference}")
    if not entry["checked"]:
        return done("unverifiable", "the runner offers no prefix for these units")
    return done("passed")


def verify(root: Path, only: Sequence[str] = (), progress: bool = True) -> dict[str, Any]:
    """Verify every committed configuration (or those of the figure ids ``only``) and return the record."""
    from tqdm.auto import tqdm

    start = time.perf_counter()
    folders = [d for d in committed_configurations(root) if not only or d.parent.name in only]
    entries = []
    for folder in tqdm(folders, desc="verify", unit="result", disable=not progress):
        entries.append(verify_configuration(folder, root))
    return {
        "commit": _results.git_commit(root / "optex"),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "instructions": _results.cpu_instructions(),
        "tolerance": {"rtol": RTOL, "atol": ATOL, "cross_rtol": CROSS_RTOL, "diagnostics": list(DIAGNOSTICS)},
        "seconds": round(time.perf_counter() - start, 1),
        "entries": entries,
    }


def load_record(root: Path) -> dict[str, Any] | None:
    """The last verification record (None when ``book verify`` has not run or it is unreadable)."""
    try:
        return json.loads((root / RECORD).read_text())
    except (OSError, ValueError):
        return None


def entries_for(record: dict[str, Any] | None, figure_id: str, hashes: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The record's entries of ``figure_id``'s configurations ``hashes``, by hash (absent: not verified)."""
    if record is None:
        return {}
    wanted = set(hashes)
    return {e["hash"]: e for e in record.get("entries", []) if e["figure_id"] == figure_id and e["hash"] in wanted}


def verification_problems(root: Path) -> list[str]:
    """What ``book check`` reports about the paper-profile results the book shows: each must have been
    verified, pass, and come from a clean commit (quick-profile results are recomputed by every build)."""
    shown = []
    for path in sorted((root / FIGURES).glob("*.json")):
        try:
            summary = json.loads(path.read_text())
        except ValueError:
            continue
        if isinstance(summary, dict) and summary.get("profile") == "paper" and "hashes" in summary:
            shown.append(summary)
    if not shown:
        return []
    record = load_record(root)
    if record is None:
        return [f"no verification record ({RECORD}): run `python -m optex book verify` before the paper-profile "
                "build"]
    problems = []
    head = _results.git_commit(root / "optex")
    if head is not None and record.get("commit") != head:
        problems.append(f"{RECORD} verified commit {record.get('commit')}, not the current {head}: rerun "
                        "`python -m optex book verify`")
    for summary in shown:
        figure_id = summary["figure_id"]
        entries = entries_for(record, figure_id, summary["hashes"])
        for key in summary["hashes"]:
            entry = entries.get(key)
            if entry is None:
                problems.append(f"{figure_id}/{key}: shown by the book but not verified")
            elif entry["status"] not in ("passed", "skipped"):
                problems.append(f"{figure_id}/{key}: verification {entry['status']}: {entry['reason']}")
            elif entry["dirty"]:
                problems.append(f"{figure_id}/{key}: computed from uncommitted code "
                                f"({', '.join(c for c in entry['commits'] if c.endswith('+dirty'))})")
    return problems


def _print_summary(record: dict[str, Any]) -> None:
    entries = record["entries"]
    counts = {s: sum(e["status"] == s for e in entries) for s in STATUSES}
    dirty = sum(e["dirty"] for e in entries)
    by_figure: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        by_figure.setdefault(entry["figure_id"], []).append(entry)
    width = max([len(f) for f in by_figure] + [6])
    print("\n" + "figure".ljust(width + 2) + "  ".join(s.ljust(8) for s in STATUSES) + "dirty   time")
    for figure, group in by_figure.items():
        cells = "  ".join(str(sum(e["status"] == s for e in group)).ljust(8) for s in STATUSES)
        print(f"{figure.ljust(width + 2)}{cells}{str(sum(e['dirty'] for e in group)).ljust(8)}"
              f"{sum(e['seconds'] for e in group):5.1f} s")
    for entry in entries:
        if entry["status"] not in ("passed", "skipped"):
            print(f"{entry['status'].upper()} {entry['path']}: {entry['reason']}", file=sys.stderr)
    outcome = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    outcome += f"; {dirty} from uncommitted code" if dirty else ""
    print(f"verify: {len(entries)} committed results in {record['seconds']:.1f} s against commit {record['commit']}: "
          f"{outcome}")


def run(root: Path, only: Sequence[str] = (), strict: bool = False, progress: bool = True) -> int:
    """``book verify``: write the record, print the summary; with ``strict``, exit 1 unless every
    result passed (or was skipped for want of its device) and none was made from uncommitted code."""
    record = verify(root, only, progress)
    path = root / RECORD
    _results.atomic_write(path, json.dumps(record, indent=1, sort_keys=True) + "\n")
    _print_summary(record)
    print(f"record: {RECORD}")
    bad = [e for e in record["entries"] if e["status"] not in ("passed", "skipped") or e["dirty"]]
    return 1 if strict and bad else 0


__all__ = ["ATOL", "CROSS_RTOL", "DIAGNOSTICS", "Prefix", "RECORD", "RECORDED_OPTIONS", "RTOL", "committed_configurations", "compare", "entries_for", "load_record",
           "run", "spread", "verification_problems", "verify", "verify_configuration"]
