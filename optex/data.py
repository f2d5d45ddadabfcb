"""Datasets of the neural-network chapters, read with numpy and verified before they are used.

MNIST and Fashion-MNIST (idx ``.gz`` files), CIFAR-10 (the python pickles) and tiny Shakespeare (one
text file). Where they are looked for, in order:

1. the ``data_dir`` argument, else ``$OPTEX_DATA_DIR``;
2. the user cache, ``$XDG_CACHE_HOME/optex/data`` (``~/.cache/optex/data``); downloads go there.

A data folder has torchvision's layout (``MNIST/raw/*.gz``, ``FashionMNIST/raw/*.gz``,
``cifar-10-batches-py/<batch>``, ``tinyshakespeare/input.txt``) and may hold instead, or as well, the
packed ``<name>.npz`` that :func:`pack` writes (``scripts/pack_data.py``), which is preferred.

Verification. Every file is read into memory once and checked against the digests in this module
before anything is decoded: the sha256 of the file (MNIST, Fashion-MNIST, Shakespeare, the CIFAR-10
archive) or, for the loose CIFAR-10 batches, the sha256 of the decoded uint8 image and label arrays
(the staged batches are rebuilt pickles whose bytes differ from the canonical tarball's while their
pixels and labels are the canonical ones). A packed file is checked the same way, array by array.
A missing, truncated or altered file raises one :class:`DatasetError` naming the file, the expected
digest and where to put it. CIFAR-10 pickles are opened by a restricted unpickler that admits only
builtin containers and numpy arrays (:func:`unpickle_arrays`).

Downloads (``download=True``, where the network allows), from the canonical sources:
MNIST from torchvision's mirror ``https://ossci-datasets.s3.amazonaws.com/mnist/`` then
``http://yann.lecun.com/exdb/mnist/``; Fashion-MNIST from
``http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/``; CIFAR-10 as the archive
``https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz``; tiny Shakespeare from
``https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt``.

Splits and minibatches (shared by every method of a runner, so all see reproducible data):
:func:`holdout` fixes the validation part of a training set (the same for every seed and method);
minibatch k of seed s is drawn by :func:`minibatch_indices` / :func:`window_offsets` from its own
generator, ``numpy.random.default_rng([s, 1, k])``, so it does not depend on who else drew before.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import io
import os
import pickle
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

DATASETS = ("mnist", "fashion_mnist", "cifar10", "shakespeare")
SPLIT_SEED = 20240217  # fixes the validation part and the evaluation subsets, whatever the run's seed
MINIBATCH_STREAM = 1  # second entry of a minibatch generator's seed: keeps data draws apart from other uses of s

_MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
_FASHION_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_IDX_PARTS = ("train_images", "train_labels", "test_images", "test_labels")


@dataclass(frozen=True)
class RemoteFile:
    """A file of a data folder: its path in the folder, its sha256 and where it can be downloaded."""

    path: str
    sha256: str
    urls: tuple[str, ...]


def _idx_files(folder: str, mirrors: tuple[str, ...], digests: tuple[str, ...]) -> dict[str, RemoteFile]:
    return {part: RemoteFile(f"{folder}/raw/{name}.gz", digest, tuple(m + name + ".gz" for m in mirrors))
            for part, name, digest in zip(_IDX_PARTS, _IDX_FILES, digests)}


# sha256 of the files (sha256sum of the canonical files; /work/shared/data/MANIFEST.sha256 agrees).
FILES: dict[str, dict[str, RemoteFile]] = {
    "mnist": _idx_files("MNIST", _MNIST_MIRRORS, (
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6")),
    "fashion_mnist": _idx_files("FashionMNIST", _FASHION_MIRRORS, (
        "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5")),
    "cifar10": {"archive": RemoteFile(
        "cifar-10-python.tar.gz", "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
        ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",))},
    "shakespeare": {"text": RemoteFile(
        "tinyshakespeare/input.txt", "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        ("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",))},
}

# sha256 of the decoded uint8 arrays (``array.tobytes()``, C order): idx pixels/labels after the header,
# CIFAR-10 ``data`` (n x 3072) and ``labels`` per batch, Shakespeare's UTF-8 bytes. Only the batches staged
# here have entries: data_batch_2..5 are accepted from the verified archive.
ARRAYS: dict[str, dict[str, str]] = {
    "mnist": {
        "train_images": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
        "train_labels": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
        "test_images": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
        "test_labels": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5"},
    "fashion_mnist": {
        "train_images": "2e487a6c89124f78f2d7521542223cafe96f7123c3ca13d447772ac6ecbb3012",
        "train_labels": "657fbd221bfc9f4198cc14b5619cc33ec57c58dd0e47af4d99d6650759e869a7",
        "test_images": "c867c93ff95360594e8ec3287995350b824dd110b11595c0e13d5423f621867a",
        "test_labels": "3d0e6c6ea990b53b6f8f500a41cac93881d981b315f84578b7d915342ade01e9"},
    "cifar10": {
        "test_batch/data": "177777c33ba79825320efa646ad04a94bdc3c80e4ebe3bd21724f8cdfd4b9d56",
        "test_batch/labels": "cec8a24a1e92aa2ecaa0bbd3dbfa86bf6cd8759fbd209a832824c8cf0afca9d5",
        "data_batch_1/data": "a50e8b48728e1667d682a807155c375279d5ae321fb12242c02e3104a6bc8b21",
        "data_batch_1/labels": "d829dbdf32167c9d7b3687cee66d92d80d46c441308b5aca0d11e8b69e27dac9"},
    "shakespeare": {"text": "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"},
}

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TRAIN_SIZE = 50_000
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
MNIST_CLASSES = tuple(str(i) for i in range(10))
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")


class DatasetError(OSError):
    """A dataset file is missing, truncated or altered; the message names it and says what to do."""


# ---------------------------------------------------------------------------------------------- folders
def cache_dir() -> Path:
    """The user cache folder for datasets (downloads go here)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "optex" / "data"


def data_dirs(data_dir: str | os.PathLike | None = None) -> tuple[Path, ...]:
    """The folders searched, in order: ``data_dir`` (else ``$OPTEX_DATA_DIR``), then the user cache."""
    chosen = data_dir if data_dir not in (None, "") else os.environ.get("OPTEX_DATA_DIR") or None
    dirs = [Path(chosen).expanduser().resolve()] if chosen is not None else []
    cache = cache_dir()
    return tuple(dirs + ([cache] if cache not in dirs else []))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _missing(what: str, expected: str, dirs: tuple[Path, ...], remote: RemoteFile | None, reason: str = "") -> DatasetError:
    source = f"; canonical source: {remote.urls[0]}" if remote else ""
    where = " or ".join(str(d / what) for d in dirs)
    tail = f" ({reason})" if reason else ", or call with download=True where the network allows"
    return DatasetError(f"dataset file {what} not found (expected sha256 {expected}); put it at {where}{source}{tail}")


def _read_verified(path: Path, expected: str, remote: RemoteFile | None = None) -> bytes:
    data = path.read_bytes()
    actual = _sha256(data)
    if actual != expected:
        source = f" from {remote.urls[0]}" if remote else ""
        raise DatasetError(f"dataset file {path} is truncated or altered: sha256 {actual}, expected {expected} "
                           f"({len(data):,} bytes); replace it with the canonical file{source}, or delete it")
    return data


def _fetch(url: str, target: Path, expected: str) -> None:
    """Download ``url`` to ``target`` (atomically) and check its sha256; the file appears only if it matches."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != expected:
            raise DatasetError(f"download of {url} has sha256 {digest.hexdigest()}, expected {expected}")
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _download(remote: RemoteFile, dirs: tuple[Path, ...]) -> Path:
    target = cache_dir() / remote.path
    errors = []
    for url in remote.urls:
        try:
            _fetch(url, target, remote.sha256)
            return target
        except OSError as error:  # urllib's URLError and DatasetError are OSErrors
            errors.append(f"{url}: {error}")
    raise _missing(remote.path, remote.sha256, dirs, remote, "download failed: " + "; ".join(errors))


def _locate(remote: RemoteFile, dirs: tuple[Path, ...], download: bool) -> bytes:
    """The verified bytes of ``remote``: from the first folder that has it, else downloaded into the cache."""
    for folder in dirs:
        path = folder / remote.path
        if path.is_file():
            return _read_verified(path, remote.sha256, remote)
    if not download:
        raise _missing(remote.path, remote.sha256, dirs, remote)
    return _read_verified(_download(remote, dirs), remote.sha256, remote)


def download(name: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Fetch every canonical file of dataset ``name`` that no searched folder has yet (into the cache)."""
    _check_name(name)
    dirs = data_dirs(data_dir)
    out = []
    for remote in FILES[name].values():
        found = [folder / remote.path for folder in dirs if (folder / remote.path).is_file()]
        out.append(found[0] if found else _download(remote, dirs))
    return out


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(map(repr, DATASETS))}; got {name!r}")


def _check_array(array: np.ndarray, expected: str | None, what: str, hint: str) -> np.ndarray:
    actual = _sha256(np.ascontiguousarray(array).tobytes())
    if expected is None:
        raise DatasetError(f"{what}: no digest is known for these decoded arrays (sha256 {actual}), so they cannot "
                           f"be verified; {hint}")
    if actual != expected:
        raise DatasetError(f"{what} is truncated or altered: its decoded arrays have sha256 {actual}, expected "
                           f"{expected}; {hint}")
    array.setflags(write=False)
    return array


# ---------------------------------------------------------------------------------------------- datasets
@dataclass(frozen=True, eq=False)
class ImageDataset:
    """An image classification dataset as uint8 arrays: images (n, channels, height, width), labels (n,).

    ``note`` says when only part of the training set was found (CIFAR-10 from one batch of five).
    """

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: tuple[str, ...]
    source: str
    note: str = ""

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_images.shape[1:])

    def __repr__(self) -> str:
        note = f", {self.note}" if self.note else ""
        return (f"ImageDataset({self.name}: {len(self.train_labels):,} training and {len(self.test_labels):,} test "
                f"images of shape {self.image_shape} from {self.source}{note})")


@dataclass(frozen=True, eq=False)
class TextDataset:
    """A character-level corpus: ``tokens[i]`` is the index of ``text[i]`` in ``vocabulary`` (sorted characters)."""

    name: str
    text: str
    vocabulary: str
    tokens: np.ndarray
    source: str
    note: str = ""

    def encode(self, text: str) -> np.ndarray:
        index = {c: i for i, c in enumerate(self.vocabulary)}
        unknown = sorted(set(text) - index.keys())
        if unknown:
            raise ValueError(f"text has characters outside the vocabulary: {unknown!r}")
        return np.array([index[c] for c in text], dtype=np.uint8)

    def decode(self, tokens: Iterable[int]) -> str:
        return "".join(self.vocabulary[int(i)] for i in tokens)

    def split(self, validation: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
        """(training tokens, validation tokens): the first 1 - ``validation`` of the text, then the rest."""
        if not 0.0 < validation < 1.0:
            raise ValueError(f"validation must be a fraction in (0, 1), got {validation!r}")
        cut = int(round(len(self.tokens) * (1.0 - validation)))
        return self.tokens[:cut], self.tokens[cut:]

    def __repr__(self) -> str:
        return f"TextDataset({self.name}: {len(self.tokens):,} characters, vocabulary {len(self.vocabulary)}, from {self.source})"


def _parse_idx(data: bytes, what: str) -> np.ndarray:
    raw = gzip.decompress(data)
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise DatasetError(f"{what} is not an idx file of unsigned bytes")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    values = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if values.size != int(np.prod(dims)):
        raise DatasetError(f"{what}: header says {dims}, found {values.size} values")
    return values.reshape(dims)


def _load_idx(name: str, dirs: tuple[Path, ...], download: bool) -> ImageDataset:
    parts = {}
    for part, remote in FILES[name].items():
        parts[part] = _parse_idx(_locate(remote, dirs, download), remote.path)
        parts[part].setflags(write=False)
    classes = MNIST_CLASSES if name == "mnist" else FASHION_CLASSES
    return ImageDataset(name, parts["train_images"][:, None], parts["train_labels"], parts["test_images"][:, None],
                        parts["test_labels"], classes, source=_where(dirs, FILES[name]["train_images"].path))


def _where(dirs: tuple[Path, ...], relative: str) -> str:
    for folder in dirs:
        if (folder / relative).exists():
            return str(folder)
    return str(cache_dir())


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals a numpy array needs; any other global is refused
    before it can be called (``find_class`` runs when the pickle *names* a global, before REDUCE)."""

    _reconstruct = np.empty(0).__reduce__()[0]  # numpy's array rebuild function, whatever numpy calls its module
    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        **{(module, t.__name__): t for module in ("builtins", "__builtin__")
           for t in (dict, list, tuple, set, frozenset, bytearray)},
    }

    def __init__(self, file: io.BufferedIOBase, what: str) -> None:
        super().__init__(file, encoding="bytes")
        self.what = what

    def find_class(self, module: str, name: str) -> object:
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"{self.what}: refusing to load the global {module}.{name}; a dataset pickle may only hold builtin "
                "containers and numpy arrays") from None


def unpickle_arrays(data: bytes, what: str = "pickle") -> object:
    """Unpickle ``data`` admitting only builtin containers, ``numpy.ndarray``, ``numpy.dtype`` and numpy's
    array rebuild function; anything else raises ``pickle.UnpicklingError`` before it runs."""
    return _ArrayUnpickler(io.BytesIO(data), what).load()


def _decode_cifar_batch(data: bytes, what: str) -> tuple[np.ndarray, np.ndarray]:
    batch = unpickle_arrays(data, what)
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DatasetError(f"{what} is not a CIFAR-10 batch (a dict with data and labels)")
    images, labels = batch[b"data"], np.asarray(batch[b"labels"])
    if not (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 2
            and images.shape[1] == 3072 and labels.shape == (len(images),) and labels.min() >= 0 and labels.max() <= 9):
        raise DatasetError(f"{what}: expected uint8 data of shape (n, 3072) and n labels in 0..9")
    return images, labels.astype(np.uint8)


def _cifar_hint(dirs: tuple[Path, ...]) -> str:
    archive = FILES["cifar10"]["archive"]
    return (f"put the canonical archive {archive.path} (sha256 {archive.sha256}, from {archive.urls[0]}) in "
            f"{dirs[0]}, or the staged batches in {dirs[0] / CIFAR10_FOLDER}")


def _cifar_from_archive(payload: bytes, source: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    # The archive's sha256 (checked by the caller) vouches for every batch in it.
    batches = {}
    with tarfile.open(fileobj=io.BytesIO(payload), mode="r:gz") as tar:
        for name in ("test_batch",) + CIFAR10_TRAIN_BATCHES:
            member = tar.extractfile(f"{CIFAR10_FOLDER}/{name}")
            batches[name] = _decode_cifar_batch(member.read(), f"{source}:{name}")
    return batches


def _cifar_from_folder(folder: Path, hint: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    # Loose batches: each is verified by the digests of its decoded arrays (the file bytes of rebuilt
    # pickles differ from the canonical ones; their pixels and labels do not).
    table, batches = ARRAYS["cifar10"], {}
    for name in ("test_batch",) + CIFAR10_TRAIN_BATCHES:
        path = folder / name
        if path.is_file():
            images, labels = _decode_cifar_batch(path.read_bytes(), str(path))
            _check_array(images, table.get(f"{name}/data"), str(path), hint)
            _check_array(labels, table.get(f"{name}/labels"), f"{path} labels", hint)
            batches[name] = images, labels
    return batches


def _cifar_note(train: list[str]) -> str:
    if len(train) == len(CIFAR10_TRAIN_BATCHES):
        return ""
    numbers = ", ".join(name.rsplit("_", 1)[1] for name in train)
    return (f"{10_000 * len(train):,} of the {CIFAR10_TRAIN_SIZE:,} training images "
            f"(batch{'es' if len(train) > 1 else ''} {numbers} of {len(CIFAR10_TRAIN_BATCHES)})")


def _load_cifar10(dirs: tuple[Path, ...], download: bool) -> ImageDataset:
    archive = FILES["cifar10"]["archive"]
    archive_path = next((d / archive.path for d in dirs if (d / archive.path).is_file()), None)
    folder = next((d / CIFAR10_FOLDER for d in dirs if (d / CIFAR10_FOLDER / "test_batch").is_file()
                   and (d / CIFAR10_FOLDER / "data_batch_1").is_file()), None)
    if archive_path is None and folder is None:
        if not download:
            table = ARRAYS["cifar10"]
            raise _missing(f"{CIFAR10_FOLDER}/test_batch and data_batch_1",
                           f"of the decoded image arrays {table['test_batch/data']} and {table['data_batch_1/data']}, "
                           f"or the archive {archive.path} with sha256 {archive.sha256}", dirs, archive)
        archive_path = _download(archive, dirs)
    if archive_path is not None:
        batches = _cifar_from_archive(_read_verified(archive_path, archive.sha256, archive), str(archive_path))
        source = str(archive_path)
    else:
        batches, source = _cifar_from_folder(folder, _cifar_hint(dirs)), str(folder)
    train = [name for name in CIFAR10_TRAIN_BATCHES if name in batches]
    train_images = np.concatenate([batches[n][0] for n in train]).reshape(-1, 3, 32, 32)
    train_labels = np.concatenate([batches[n][1] for n in train])
    test_images, test_labels = batches["test_batch"]
    arrays = (train_images, train_labels, test_images.reshape(-1, 3, 32, 32), test_labels)
    for array in arrays:
        array.setflags(write=False)
    return ImageDataset("cifar10", *arrays, CIFAR10_CLASSES, source, _cifar_note(train))


def _load_shakespeare(dirs: tuple[Path, ...], download: bool) -> TextDataset:
    remote = FILES["shakespeare"]["text"]
    text = _locate(remote, dirs, download).decode("utf-8")
    return _text_dataset(text, _where(dirs, remote.path))


def _text_dataset(text: str, source: str) -> TextDataset:
    vocabulary = "".join(sorted(set(text)))
    index = np.zeros(max(map(ord, vocabulary)) + 1, dtype=np.uint8)
    index[[ord(c) for c in vocabulary]] = np.arange(len(vocabulary), dtype=np.uint8)
    tokens = index[np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)]
    tokens.setflags(write=False)
    return TextDataset("shakespeare", text, vocabulary, tokens, source)


# ---------------------------------------------------------------------------------------------- packed files
def _packed_arrays(dataset: ImageDataset | TextDataset) -> dict[str, np.ndarray]:
    if isinstance(dataset, TextDataset):
        return {"text": np.frombuffer(dataset.text.encode("utf-8"), dtype=np.uint8)}
    if dataset.name != "cifar10":  # as the idx files hold them: n x 28 x 28
        return {"train_images": dataset.train_images[:, 0], "train_labels": dataset.train_labels,
                "test_images": dataset.test_images[:, 0], "test_labels": dataset.test_labels}
    # CIFAR-10 laid out as the pickles are (n x 3072), so the per-batch digests verify the packed arrays; only
    # batches with a known digest are packed (a packed file is read without the archive that vouched for the rest).
    known = [b for b in CIFAR10_TRAIN_BATCHES if f"{b}/data" in ARRAYS["cifar10"]]
    keep = slice(0, 10_000 * min(len(known), len(dataset.train_labels) // 10_000))
    return {"train_images": dataset.train_images[keep].reshape(-1, 3072), "train_labels": dataset.train_labels[keep],
            "test_images": dataset.test_images.reshape(-1, 3072), "test_labels": dataset.test_labels,
            "train_batches": np.array(known[: keep.stop // 10_000])}


def pack(name: str, out_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None,
         download: bool = True) -> Path:
    """Write dataset ``name`` (verified) as one compressed uint8 ``<out_dir>/<name>.npz``; returns its path.

    The file is what :func:`load` reads first from a data folder, verified array by array. CIFAR-10 keeps
    the training batches whose decoded digests are in ``ARRAYS`` (data_batch_1 today)."""
    from .results import atomic_write

    dataset = load(name, data_dir, download)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **_packed_arrays(dataset))
    path = Path(out_dir) / f"{name}.npz"
    atomic_write(path, buffer.getvalue())
    return path


def _load_packed(name: str, path: Path) -> ImageDataset | TextDataset:
    hint = f"delete {path} and write it again with scripts/pack_data.py"
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError) as error:
        raise DatasetError(f"packed dataset {path} cannot be read ({error}); {hint}") from None
    table = ARRAYS[name]
    try:
        if name == "shakespeare":
            text = _check_array(arrays["text"], table["text"], str(path), hint).tobytes().decode("utf-8")
            return _text_dataset(text, str(path))
        if name == "cifar10":
            train = [str(b) for b in arrays["train_batches"]]
            for key, batch_names in (("train", train), ("test", ["test_batch"])):
                images, labels = arrays[f"{key}_images"], arrays[f"{key}_labels"]
                if len(labels) != 10_000 * len(batch_names):
                    raise DatasetError(f"{path}: {key} holds {len(labels)} images for batches {batch_names}; {hint}")
                for i, batch in enumerate(batch_names):
                    part = slice(10_000 * i, 10_000 * (i + 1))
                    _check_array(images[part], table.get(f"{batch}/data"), f"{path}:{batch}", hint)
                    _check_array(labels[part], table.get(f"{batch}/labels"), f"{path}:{batch} labels", hint)
                arrays[f"{key}_images"] = images.reshape(-1, 3, 32, 32)
            note, classes = _cifar_note(train), CIFAR10_CLASSES
        else:
            for part in _IDX_PARTS:
                _check_array(arrays[part], table[part], f"{path}:{part}", hint)
                if part.endswith("images"):
                    arrays[part] = arrays[part].reshape(-1, 1, 28, 28)
            note, classes = "", MNIST_CLASSES if name == "mnist" else FASHION_CLASSES
    except KeyError as error:
        raise DatasetError(f"packed dataset {path} lacks the array {error}; {hint}") from None
    for array in arrays.values():
        array.setflags(write=False)
    return ImageDataset(name, arrays["train_images"], arrays["train_labels"], arrays["test_images"],
                        arrays["test_labels"], classes, str(path), note)


# ---------------------------------------------------------------------------------------------- public loaders
@functools.lru_cache(maxsize=4)
def _load(name: str, dirs: tuple[Path, ...], download: bool) -> ImageDataset | TextDataset:
    for folder in dirs:
        packed = folder / f"{name}.npz"
        if packed.is_file():
            return _load_packed(name, packed)
    if name == "cifar10":
        return _load_cifar10(dirs, download)
    if name == "shakespeare":
        return _load_shakespeare(dirs, download)
    return _load_idx(name, dirs, download)


def load(name: str, data_dir: str | os.PathLike | None = None, download: bool = True) -> ImageDataset | TextDataset:
    """Dataset ``name`` (one of ``DATASETS``), verified; read-only arrays, cached per process."""
    _check_name(name)
    return _load(name, data_dirs(data_dir), bool(download))


def load_mnist(data_dir: str | os.PathLike | None = None, download: bool = True) -> ImageDataset:
    """MNIST: 60,000 training and 10,000 test images, 1 x 28 x 28."""
    return load("mnist", data_dir, download)


def load_fashion_mnist(data_dir: str | os.PathLike | None = None, download: bool = True) -> ImageDataset:
    """Fashion-MNIST: 60,000 training and 10,000 test images, 1 x 28 x 28."""
    return load("fashion_mnist", data_dir, download)


def load_cifar10(data_dir: str | os.PathLike | None = None, download: bool = True) -> ImageDataset:
    """CIFAR-10: the training batches found (all five from the archive) and the 10,000 test images, 3 x 32 x 32."""
    return load("cifar10", data_dir, download)


def load_shakespeare(data_dir: str | os.PathLike | None = None, download: bool = True) -> TextDataset:
    """Tiny Shakespeare (1,115,394 characters, 65 distinct)."""
    return load("shakespeare", data_dir, download)


# ---------------------------------------------------------------------------------------------- splits and draws
def holdout(n: int, validation: float) -> tuple[np.ndarray, np.ndarray]:
    """(training indices, validation indices) of a training set of ``n`` examples.

    A fixed permutation (``SPLIT_SEED``) puts ``round(validation * n)`` examples aside for validation;
    the rest, in permuted order, trains. The same for every run, seed and method.
    """
    if not 0.0 < validation < 1.0:
        raise ValueError(f"validation must be a fraction in (0, 1), got {validation!r}")
    order = np.random.default_rng([SPLIT_SEED, 0]).permutation(n)
    cut = int(round(validation * n))
    return order[cut:], order[:cut]


def fixed_subset(n: int, size: int, stream: int) -> np.ndarray:
    """``min(size, n)`` distinct indices in 0..n-1, the same in every run (``stream`` tells subsets apart)."""
    return np.random.default_rng([SPLIT_SEED, 1, stream]).permutation(n)[:size]


def fixed_window_offsets(n_tokens: int, block_size: int, count: int, stream: int) -> np.ndarray:
    """``count`` window start offsets into a text of ``n_tokens`` tokens, the same in every run."""
    if n_tokens <= block_size + 1:
        raise ValueError(f"the text ({n_tokens} tokens) is shorter than one window of block_size + 1 = {block_size + 1}")
    return np.random.default_rng([SPLIT_SEED, 2, stream]).integers(0, n_tokens - block_size - 1, size=count)


def minibatch_generator(seed: int, k: int) -> np.random.Generator:
    """The generator of minibatch ``k`` (0-based) of run seed ``seed``: independent of every other draw."""
    return np.random.default_rng([seed, MINIBATCH_STREAM, k])


def minibatch_indices(seed: int, k: int, n: int, batch_size: int) -> np.ndarray:
    """Minibatch ``k`` of seed ``seed``: ``batch_size`` distinct indices into a training set of ``n`` examples."""
    if batch_size > n:
        raise ValueError(f"batch_size ({batch_size}) exceeds the {n} training examples")
    return minibatch_generator(seed, k).choice(n, size=batch_size, replace=False)


def window_offsets(seed: int, k: int, n_tokens: int, block_size: int, batch_size: int) -> np.ndarray:
    """Minibatch ``k`` of seed ``seed`` of a text: ``batch_size`` start offsets of windows of ``block_size + 1``
    tokens (input and next-token target), uniform over the text."""
    if n_tokens <= block_size + 1:
        raise ValueError(f"the text ({n_tokens} tokens) is shorter than one window of block_size + 1 = {block_size + 1}")
    return minibatch_generator(seed, k).integers(0, n_tokens - block_size - 1, size=batch_size)


def windows(tokens: np.ndarray, offsets: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and targets (both ``len(offsets)`` x ``block_size``): target j is the token after input j."""
    rows = offsets[:, None] + np.arange(block_size + 1)
    chunk = tokens[rows]
    return chunk[:, :-1], chunk[:, 1:]


__all__ = ["DATASETS", "DatasetError", "ImageDataset", "TextDataset", "load", "load_mnist", "load_fashion_mnist",
           "load_cifar10", "load_shakespeare", "download", "pack", "unpickle_arrays", "holdout", "fixed_subset", "fixed_window_offsets",
           "minibatch_generator", "minibatch_indices", "window_offsets", "windows", "data_dirs", "cache_dir",
           "FILES", "ARRAYS"]
