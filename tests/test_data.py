"""Benchmark data loaders: digits, MNIST, SARCOS and CIFAR-10 (benchmarks/data.py)."""

import gzip
import hashlib
import io
import os
import pickle
import struct

import numpy as np
import pytest
import torch
from scipy.io import savemat

from benchmarks import data

SHARED, _ = data.resolve_data_dir(None)
HAVE_SHARED = (
    SHARED is not None
    and os.path.isfile(os.path.join(SHARED, "mnist", "t10k-labels-idx1-ubyte.gz"))
    and os.path.isfile(os.path.join(SHARED, "sarcos", data.SARCOS_TEST))
)
needs_shared = pytest.mark.skipif(
    not HAVE_SHARED, reason="the shared data folder (../shared/data) is not present"
)


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv(data.ENV, raising=False)


# ----------------------------------------------------------------------- helpers
def write_idx(path, arr: np.ndarray):
    code = {np.dtype(np.uint8): 0x08}[arr.dtype]
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + arr.tobytes())


def fake_mnist(folder, n_train=12, n_test=5):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, arr in arrays.items():
        write_idx(os.path.join(folder, name), arr)
    return arrays


def fake_cifar(folder, per_batch=4, n_test=3):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(1)
    batches = {}
    for name, n in [*((b, per_batch) for b in data.CIFAR_TRAIN), (data.CIFAR_TEST, n_test)]:
        batch = {
            b"batch_label": name.encode(),
            b"labels": [int(v) for v in rng.integers(0, 10, n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [f"img{i}.png".encode() for i in range(n)],
        }
        with open(os.path.join(folder, name), "wb") as fh:
            pickle.dump(batch, fh, protocol=2)
        batches[name] = batch
    return batches


# ----------------------------------------------------------------------- digits
def test_digits_is_embedded_and_split_deterministically():
    a, b = data.load_digits(), data.load_digits()
    assert (len(a.x_train), len(a.x_test)) == (1438, 359)
    assert a.x_train.shape[1:] == (64,) and a.x_train.dtype == torch.float32
    assert a.y_train.dtype == torch.int64 and a.num_outputs == 10
    assert float(a.x_train.min()) >= 0.0 and float(a.x_train.max()) <= 1.0
    assert torch.equal(a.x_test, b.x_test) and torch.equal(a.y_train, b.y_train)
    assert "80/20" in a.source


# ----------------------------------------------------------------------- folders
def test_data_folder_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv(data.ENV, str(tmp_path / "env"))
    assert data.resolve_data_dir(str(tmp_path / "arg"))[0] == str(tmp_path / "arg")
    assert data.resolve_data_dir(None)[0] == str(tmp_path / "env")
    monkeypatch.delenv(data.ENV)
    _, candidates = data.resolve_data_dir(None)
    assert candidates[0].endswith(os.path.join("shared", "data"))


def test_hashes_stream_correctly(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"hello\n")
    assert data.sha256_file(str(path), chunk=2) == hashlib.sha256(b"hello\n").hexdigest()
    # what `git hash-object` prints for "hello\n"
    assert data.git_blob_sha1(str(path), chunk=2) == "ce013625030ba8dba906f756967f9e9ca394464a"


def test_missing_file_says_what_where_and_how(tmp_path):
    with pytest.raises(data.DataError) as err:
        data.load_mnist(str(tmp_path))
    msg = str(err.value)
    assert "train-images-idx3-ubyte.gz" in msg and "missing" in msg
    assert str(tmp_path / "mnist" / "train-images-idx3-ubyte.gz") in msg
    assert "--data" in msg and data.ENV in msg and "downloaded" in msg


def test_missing_folder_names_the_candidates(monkeypatch, tmp_path):
    monkeypatch.setattr(data, "default_data_dirs", lambda: [str(tmp_path / "nowhere")])
    with pytest.raises(data.DataError, match="nowhere"):
        data.load_sarcos()


# ----------------------------------------------------------------------- MNIST
def test_mnist_loader_on_a_fake_folder(tmp_path):
    arrays = fake_mnist(tmp_path / "mnist")
    ds = data.load_mnist(str(tmp_path), check=False)
    assert ds.x_train.shape == (12, 1, 28, 28) and ds.x_test.shape == (5, 1, 28, 28)
    raw = torch.from_numpy(arrays["t10k-images-idx3-ubyte.gz"].astype(np.float32))
    expected = (raw / 255.0 - 0.1307) / 0.3081
    torch.testing.assert_close(ds.x_test[:, 0], expected)
    assert ds.y_train.tolist() == arrays["train-labels-idx1-ubyte.gz"].tolist()


def test_mnist_wrong_file_fails_its_sha256(tmp_path):
    fake_mnist(tmp_path)  # top level of the data folder is searched too
    with pytest.raises(data.DataError, match="sha256"):
        data.load_mnist(str(tmp_path))


@needs_shared
def test_real_mnist_matches_the_readme():
    ds = data.load_mnist(SHARED)
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    train_counts = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    test_counts = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert torch.bincount(ds.y_train).tolist() == train_counts
    assert torch.bincount(ds.y_test).tolist() == test_counts
    assert abs(float(ds.x_train.mean())) < 0.01 and abs(float(ds.x_train.std()) - 1) < 0.01


# ----------------------------------------------------------------------- SARCOS
def test_sarcos_train_file_is_used_when_present(tmp_path):
    rng = np.random.default_rng(2)
    folder = tmp_path / "sarcos"
    folder.mkdir()
    savemat(folder / data.SARCOS_TEST, {"sarcos_inv_test": rng.normal(size=(20, 28))})
    savemat(folder / data.SARCOS_TRAIN, {"sarcos_inv": rng.normal(3, 2, size=(50, 28))})
    ds = data.load_sarcos(str(tmp_path), check=False)
    assert (len(ds.x_train), len(ds.x_test)) == (50, 20)
    assert ds.x_train.shape[1] == 21 and ds.y_train.shape[1] == 7
    torch.testing.assert_close(ds.y_train.mean(0), torch.zeros(7), atol=1e-5, rtol=0)
    assert "44,484" in ds.source
    with pytest.raises(data.DataError, match="sha256"):
        data.load_sarcos(str(tmp_path), check=True)  # the fake test file fails its sum


@needs_shared
def test_real_sarcos_split_and_standardisation():
    ds = data.load_sarcos(SHARED)
    assert (len(ds.x_train), len(ds.x_test)) == (3559, 890)
    assert ds.x_train.shape[1:] == (21,) and ds.y_train.shape[1:] == (7,)
    torch.testing.assert_close(ds.x_train.mean(0), torch.zeros(21), atol=1e-5, rtol=0)
    torch.testing.assert_close(ds.y_train.std(0), torch.ones(7), atol=1e-4, rtol=0)
    assert "split 80/20 with seed 0" in ds.source
    again = data.load_sarcos(SHARED)
    assert torch.equal(ds.x_test, again.x_test)
    raw = data.load_sarcos(SHARED, standardise_targets=False)
    assert torch.equal(raw.x_train, ds.x_train)
    assert float(raw.y_train.std(0).max()) > 10  # torques in their original units


@needs_shared
def test_a_wrong_sarcos_training_file_is_rejected(tmp_path):
    (tmp_path / "sarcos").mkdir()
    with open(os.path.join(SHARED, "sarcos", data.SARCOS_TEST), "rb") as src:
        (tmp_path / "sarcos" / data.SARCOS_TEST).write_bytes(src.read())
    savemat(tmp_path / "sarcos" / data.SARCOS_TRAIN, {"sarcos_inv": np.zeros((3, 28))})
    with pytest.raises(data.DataError, match="git-blob"):
        data.load_sarcos(str(tmp_path))


# ----------------------------------------------------------------------- CIFAR-10
def test_cifar10_loader_on_a_fake_folder(tmp_path):
    batches = fake_cifar(tmp_path / "cifar10" / data.CIFAR_DIR)
    ds = data.load_cifar10(str(tmp_path))
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.x_test.shape == (3, 3, 32, 32)
    labels = [v for b in data.CIFAR_TRAIN for v in batches[b][b"labels"]]
    assert ds.y_train.tolist() == labels
    pixel = batches[data.CIFAR_TEST][b"data"][1, 1024 + 32 * 5 + 7]  # image 1, green, (5, 7)
    expected = (pixel / 255.0 - data.CIFAR_MEAN[1]) / data.CIFAR_STD[1]
    assert float(ds.x_test[1, 1, 5, 7]) == pytest.approx(expected, rel=1e-5)
    # the folder itself may be given too
    assert len(data.load_cifar10(str(tmp_path / "cifar10" / data.CIFAR_DIR)).x_test) == 3


def test_cifar10_missing_batch_and_foreign_pickle(tmp_path):
    folder = tmp_path / data.CIFAR_DIR
    fake_cifar(folder)
    os.remove(folder / "data_batch_3")
    with pytest.raises(data.DataError, match="data_batch_3"):
        data.load_cifar10(str(tmp_path))

    class Evil:
        def __reduce__(self):
            return (os.getcwd, ())

    fake_cifar(folder)
    with open(folder / data.CIFAR_TEST, "wb") as fh:
        pickle.dump({b"data": Evil(), b"labels": []}, fh)
    with pytest.raises(pickle.UnpicklingError, match="refused"):
        data.load_cifar10(str(tmp_path))


# ----------------------------------------------------------------------- CIFAR-10 JPEG copy
def fake_cifar_jpeg(path, per_class=(2, 1)):
    """A tiny archive in the JPEG copy's layout: solid-colour images, class i has red 20*i."""
    import tarfile

    from PIL import Image

    with tarfile.open(path, "w:gz") as tar:
        for split, n in zip(("train", "test"), per_class, strict=True):
            for label, cls in enumerate(data.CIFAR_CLASSES):
                for k in range(n):
                    img = Image.new("RGB", (32, 32), (20 * label, 10 * k, 200))
                    buf = io.BytesIO()
                    img.save(buf, format="JPEG", quality=75)
                    info = tarfile.TarInfo(f"{split}/{cls}/{k:04d}.jpg")
                    info.size = len(buf.getvalue())
                    buf.seek(0)
                    tar.addfile(info, buf)
    return str(path)


def test_cifar10_jpeg_archive_is_decoded_checked_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("COCD_CACHE", str(tmp_path / "cache"))
    os.makedirs(tmp_path / "cifar10")
    archive = fake_cifar_jpeg(tmp_path / "cifar10" / data.CIFAR_JPEG)
    # not the published archive: refused by its sha256, named in the message
    with pytest.raises(data.DataError, match="sha256"):
        data.load_cifar10(str(tmp_path))
    # with its checksum accepted, the label counts (2 and 1 per class, not 5,000 and 1,000)
    monkeypatch.setattr(data, "CIFAR_JPEG_SHA256", data.sha256_file(archive))
    with pytest.raises(data.DataError, match="label counts"):
        data.load_cifar10(str(tmp_path))
    monkeypatch.setattr(data, "CIFAR_PER_CLASS", {"train": 2, "test": 1})
    ds = data.load_cifar10(str(tmp_path))
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.x_test.shape == (10, 3, 32, 32)
    assert ds.y_train.tolist() == [c for c in range(10) for _ in range(2)]  # label order
    assert ds.y_test.tolist() == list(range(10))
    # class 7's red channel is 140 (JPEG keeps a flat colour within a unit or two)
    red = float(ds.x_test[7, 0].mean()) * data.CIFAR_STD[0] + data.CIFAR_MEAN[0]
    assert abs(255 * red - 140) < 3
    assert "JPEG" in ds.source
    cached = os.listdir(tmp_path / "cache")
    assert len(cached) == 1 and cached[0].endswith(".npz")
    # the second load reads the cache, not the archive
    os.remove(archive)
    with open(archive, "wb") as fh:
        fh.write(b"")
    monkeypatch.setattr(data, "sha256_file", lambda p: data.CIFAR_JPEG_SHA256)
    again = data.load_cifar10(str(tmp_path))
    assert torch.equal(again.x_train, ds.x_train) and torch.equal(again.y_test, ds.y_test)


def test_official_cifar_batches_take_precedence_over_the_jpeg_copy(tmp_path):
    fake_cifar(tmp_path / "cifar10" / data.CIFAR_DIR)
    with open(tmp_path / "cifar10" / data.CIFAR_JPEG, "wb") as fh:
        fh.write(b"not read")
    ds = data.load_cifar10(str(tmp_path))
    assert len(ds.x_train) == 20 and "python batches" in ds.source
