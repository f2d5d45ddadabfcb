"""Write one dataset as a compact, verified uint8 ``.npz`` to carry to another machine (e.g. a GPU host).

    PYTHONPATH=. python scripts/pack_data.py mnist [--out .carry] [--data-dir ../shared/data]

The file, ``<out>/<name>.npz``, holds the dataset's uint8 arrays (text: its UTF-8 bytes); ``optex.data``
reads it first from a data folder and checks every array against the digests in the package, so on
the other machine ``Config(data_dir=".carry")`` (or ``OPTEX_DATA_DIR=.carry``) is all it takes. ``.carry/``
is git-ignored; a machine call carries at most 64 MiB with the checkout, so one dataset per call.
"""
from __future__ import annotations

import argparse
import sys

from optex import data

LIMIT = 64 * 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=data.DATASETS)
    parser.add_argument("--out", default=".carry", help="folder to write <dataset>.npz into (default: .carry)")
    parser.add_argument("--data-dir", default=None, help="where the dataset is read (default: $OPTEX_DATA_DIR, then the cache)")
    args = parser.parse_args(argv)
    path = data.pack(args.dataset, args.out, args.data_dir)
    size = path.stat().st_size
    dataset = data.load(args.dataset, args.out, download=False)  # read back and verified, as the other machine will
    print(f"{path}: {size / 2**20:.1f} MiB, {dataset!r}")
    if size > LIMIT:
        print(f"error: {path} is over the {LIMIT // 2**20} MiB a machine call carries", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
