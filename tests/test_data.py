"""optex.data: the staged datasets, digests that catch damage, downloads, the restricted unpickler, packing."""
import hashlib
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from optex import data

STAGED = Path(os.environ.get("OPTEX_DATA_DIR", Path(__file__).resolve().parents[1] / "../shared/data")).resolve()
needs_staged = pytest.mark.skipif(not (STAGED / "MNIST").is_dir(), reason=f"no staged datasets in {STAGED}")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty user cache (downloads land here) and no $OPTEX_DATA_DIR."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("OPTEX_DATA_DIR", raising=False)
    data._load.cache_clear()
    yield tmp_path / "xdg" / "optex" / "data"
    data._load.cache_clear()


def _mirror(folder: Path, relative: str, source: Path | None = None) -> Path:
    """``folder/relative``, linked to the staged file (or ``source``)."""
    target = folder / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(source or STAGED / relative)
    return target


@needs_staged
def test_staged_datasets_load_with_their_documented_sizes():
    mnist = data.load_mnist(STAGED)
    assert mnist.train_images.shape == (60_000, 1, 28, 28) and mnist.test_images.shape == (10_000, 1, 28, 28)
    assert mnist.train_images.dtype == np.uint8 and set(np.unique(mnist.train_labels)) == set(range(10))
    assert not mnist.train_images.flags.writeable  # shared between runs: read-only
    fashion = data.load_fashion_mnist(STAGED)
    assert fashion.train_labels.shape == (60_000,) and fashion.classes[-1] == "Ankle boot"
    cifar = data.load_cifar10(STAGED)
    assert cifar.train_images.shape == (10_000, 3, 32, 32) and cifar.test_images.shape == (10_000, 3, 32, 32)
    assert cifar.note.startswith("10,000 of the 50,000 training images")
    # SOURCES.md: data_batch_1 row 0 starts 59, 43, 50 (red plane) and its labels start 6, 9, 9, 4, 1.
    np.testing.assert_array_equal(cifar.train_images[0, 0, 0, :3], [59, 43, 50])
    np.testing.assert_array_equal(cifar.train_labels[:5], [6, 9, 9, 4, 1])
    np.testing.assert_array_equal(cifar.test_labels[:4], [3, 8, 8, 0])
    text = data.load_shakespeare(STAGED)
    assert len(text.text) == 1_115_394 and len(text.vocabulary) == 65
    assert text.decode(text.tokens[:14]) == "First Citizen:"
    train, val = text.split(0.1)
    assert len(train) + len(val) == len(text.tokens) and abs(len(val) / len(text.tokens) - 0.1) < 1e-6
    np.testing.assert_array_equal(text.encode(text.text[:1000]), text.tokens[:1000])


@needs_staged
def test_a_flipped_byte_or_a_truncated_file_is_refused(tmp_path, cache):
    folder = tmp_path / "data"
    for part in ("train_images", "train_labels", "test_images"):
        _mirror(folder, data.FILES["mnist"][part].path)
    remote = data.FILES["mnist"]["test_labels"]
    damaged = bytearray((STAGED / remote.path).read_bytes())
    damaged[100] ^= 0x01
    (folder / remote.path).write_bytes(bytes(damaged))
    with pytest.raises(data.DatasetError) as error:
        data.load_mnist(folder, download=False)
    message = str(error.value)
    assert str(folder / remote.path) in message and remote.sha256 in message and "canonical" in message
    (folder / remote.path).write_bytes((STAGED / remote.path).read_bytes()[:-10])
    data._load.cache_clear()
    with pytest.raises(data.DatasetError, match="truncated or altered"):
        data.load_mnist(folder, download=False)


def test_a_missing_file_names_the_file_its_digest_and_where_to_put_it(tmp_path, cache):
    with pytest.raises(data.DatasetError) as error:
        data.load_shakespeare(tmp_path, download=False)
    remote = data.FILES["shakespeare"]["text"]
    message = str(error.value)
    assert remote.path in message and remote.sha256 in message and str(tmp_path / remote.path) in message
    assert remote.urls[0] in message
    with pytest.raises(data.DatasetError, match="cifar-10-python.tar.gz"):
        data.load_cifar10(tmp_path, download=False)


@needs_staged
def test_download_fetches_into_the_cache_verifies_and_falls_back_to_the_next_mirror(tmp_path, cache, monkeypatch):
    remote = data.FILES["shakespeare"]["text"]
    good = (STAGED / remote.path).as_uri()
    missing = (tmp_path / "nowhere.txt").as_uri()
    monkeypatch.setitem(data.FILES["shakespeare"], "text", data.RemoteFile(remote.path, remote.sha256, (missing, good)))
    text = data.load_shakespeare(tmp_path / "empty")
    assert len(text.text) == 1_115_394
    stored = cache / remote.path
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == remote.sha256
    assert data.download("shakespeare", tmp_path / "empty") == [stored]  # present: nothing fetched again
    # A mirror serving other bytes: refused, and nothing is left behind in the cache.
    stored.unlink()
    data._load.cache_clear()
    wrong = data.RemoteFile(remote.path, remote.sha256, ((STAGED / "SOURCES.md").as_uri(),))
    monkeypatch.setitem(data.FILES["shakespeare"], "text", wrong)
    with pytest.raises(data.DatasetError, match="download failed.*expected " + remote.sha256):
        data.load_shakespeare(tmp_path / "empty")
    assert not list(stored.parent.iterdir())


def _os_system_pickle(marker: Path) -> bytes:
    return b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."


def test_restricted_unpickler_refuses_other_globals_before_they_run(tmp_path):
    marker = tmp_path / "ran"
    assert pickle.loads(_os_system_pickle(marker)) == 0 and marker.exists()  # the plain unpickler runs it
    marker.unlink()
    with pytest.raises(pickle.UnpicklingError, match="os.system"):
        data.unpickle_arrays(_os_system_pickle(marker), "evil")
    assert not marker.exists()
    for module, name in (("builtins", "eval"), ("numpy", "load"), ("subprocess", "Popen")):
        with pytest.raises(pickle.UnpicklingError, match=f"{module}.{name}"):
            data.unpickle_arrays(f"c{module}\n{name}\n(S'1'\ntR.".encode())
    # What a batch needs is admitted: containers and arrays (numpy 2 names them numpy._core.multiarray; the
    # staged CIFAR-10 batches, read in the tests below, spell it numpy.core.multiarray).
    batch = {b"data": np.arange(12, dtype=np.uint8).reshape(3, 4), b"labels": [1, 2, 3], b"names": (b"a", {b"b"})}
    loaded = data.unpickle_arrays(pickle.dumps(batch, protocol=4))
    np.testing.assert_array_equal(loaded[b"data"], batch[b"data"])
    assert loaded[b"labels"] == [1, 2, 3] and loaded[b"names"] == (b"a", {b"b"})


@needs_staged
def test_cifar_batches_are_verified_by_their_decoded_arrays(tmp_path, cache):
    folder = tmp_path / "data" / data.CIFAR10_FOLDER
    _mirror(folder.parent, f"{data.CIFAR10_FOLDER}/test_batch")
    batch = data.unpickle_arrays((STAGED / data.CIFAR10_FOLDER / "data_batch_1").read_bytes())
    batch[b"data"] = batch[b"data"].copy()
    batch[b"data"][5, 7] ^= 0x01
    (folder / "data_batch_1").write_bytes(pickle.dumps(batch, protocol=4))
    with pytest.raises(data.DatasetError, match="data_batch_1 is truncated or altered.*" + data.ARRAYS["cifar10"]["data_batch_1/data"]):
        data.load_cifar10(folder.parent, download=False)
    # A re-pickled but unaltered batch (different file bytes, same arrays) is accepted.
    batch[b"data"][5, 7] ^= 0x01
    (folder / "data_batch_1").write_bytes(pickle.dumps(batch, protocol=4))
    data._load.cache_clear()
    assert data.load_cifar10(folder.parent, download=False).train_labels[0] == 6
    # A batch whose arrays have no known digest cannot be verified: refused, pointing at the archive.
    shutil.copy(folder / "data_batch_1", folder / "data_batch_2")
    data._load.cache_clear()
    with pytest.raises(data.DatasetError, match="data_batch_2: no digest.*cifar-10-python.tar.gz"):
        data.load_cifar10(folder.parent, download=False)
    (folder / "data_batch_2").write_bytes(_os_system_pickle(tmp_path / "ran"))
    data._load.cache_clear()
    with pytest.raises(pickle.UnpicklingError):
        data.load_cifar10(folder.parent, download=False)
    assert not (tmp_path / "ran").exists()


@needs_staged
@pytest.mark.parametrize("name", ["shakespeare", "mnist"])
def test_packed_file_reads_back_verified(tmp_path, cache, name):
    path = data.pack(name, tmp_path / "carry", STAGED)
    assert path.stat().st_size < 64 * 2**20
    original, packed = data.load(name, STAGED), data.load(name, tmp_path / "carry", download=False)
    assert packed.source == str(path)
    if name == "shakespeare":
        assert packed.text == original.text and packed.vocabulary == original.vocabulary
    else:
        for field in ("train_images", "train_labels", "test_images", "test_labels"):
            np.testing.assert_array_equal(getattr(packed, field), getattr(original, field))
    with np.load(path) as npz:
        arrays = {key: npz[key].copy() for key in npz.files}
    key = "text" if name == "shakespeare" else "test_labels"
    arrays[key][3] ^= 0x01
    np.savez_compressed(path, **arrays)
    data._load.cache_clear()
    with pytest.raises(data.DatasetError, match="truncated or altered"):
        data.load(name, tmp_path / "carry", download=False)


@needs_staged
def test_packed_cifar_keeps_the_verifiable_batch(tmp_path, cache):
    path = data.pack("cifar10", tmp_path, STAGED)
    packed = data.load_cifar10(tmp_path, download=False)
    np.testing.assert_array_equal(packed.train_images, data.load_cifar10(STAGED).train_images)
    assert packed.note.startswith("10,000 of the 50,000") and path.stat().st_size < 64 * 2**20


def test_holdout_and_minibatches_are_the_documented_draws():
    train, val = data.holdout(1000, 0.1)
    assert len(val) == 100 and len(train) == 900 and not set(train) & set(val)
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(1000))
    np.testing.assert_array_equal(data.holdout(1000, 0.1)[1], val)  # the same split every time
    k_batch = data.minibatch_indices(3, 17, 500, 32)
    np.testing.assert_array_equal(k_batch, np.random.default_rng([3, 1, 17]).choice(500, 32, replace=False))
    assert len(set(k_batch)) == 32
    offsets = data.window_offsets(3, 17, 1000, 8, 5)
    np.testing.assert_array_equal(offsets, np.random.default_rng([3, 1, 17]).integers(0, 1000 - 9, 5))
    tokens = np.arange(1000)
    x, y = data.windows(tokens, offsets, 8)
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
    np.testing.assert_array_equal(x[:, 0], offsets)
    with pytest.raises(ValueError, match="batch_size"):
        data.minibatch_indices(0, 0, 10, 11)


def test_data_folder_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("OPTEX_DATA_DIR", str(tmp_path / "env"))
    cache = tmp_path / "xdg" / "optex" / "data"
    assert data.data_dirs() == ((tmp_path / "env").resolve(), cache)
    assert data.data_dirs(tmp_path / "arg") == ((tmp_path / "arg").resolve(), cache)
    monkeypatch.delenv("OPTEX_DATA_DIR")
    assert data.data_dirs() == (cache,)
    with pytest.raises(ValueError, match="dataset must be one of"):
        data.load("imagenet")


def test_cifar_archive_is_downloaded_verified_and_read_whole(tmp_path, cache, monkeypatch):
    import io
    import tarfile

    rng = np.random.default_rng(0)
    batches = {name: {b"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8), b"labels": rng.integers(0, 10, 20).tolist()}
               for name in ("test_batch",) + data.CIFAR10_TRAIN_BATCHES}
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, batch in batches.items():
            payload = pickle.dumps(batch, protocol=4)
            info = tarfile.TarInfo(f"{data.CIFAR10_FOLDER}/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    monkeypatch.setitem(data.FILES["cifar10"], "archive", data.RemoteFile(archive.name, digest, (archive.as_uri(),)))
    cifar = data.load_cifar10(tmp_path / "empty")
    assert cifar.source == str(cache / archive.name) and cifar.note == ""
    assert cifar.train_images.shape == (100, 3, 32, 32)
    np.testing.assert_array_equal(cifar.train_images[20:40].reshape(20, -1), batches["data_batch_2"][b"data"])
    np.testing.assert_array_equal(cifar.test_labels, batches["test_batch"][b"labels"])
