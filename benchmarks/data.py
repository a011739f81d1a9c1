"""Datasets for the paper benchmarks: digits (embedded), SARCOS, MNIST and CIFAR-10.

Nothing is ever downloaded. ``digits`` is scikit-learn's bundled 8x8 handwritten digits
and needs no files. The others are read from a data folder: ``--data DIR``, else the
environment variable ``COCD_DATA``, else ``../shared/data`` (beside this repository, or
relative to the current directory) when it exists. Inside it each dataset is looked for
in its own subfolder (``mnist/``, ``sarcos/``, ``cifar10/``) and then at the top level.
MNIST and SARCOS files are checked against the sha256 sums listed in
docs/data.md (the SARCOS training file, which that folder lacks, against
its git blob id); a missing or different file raises ``DataError`` saying which file,
where it was looked for and how to provide it.

Every loader returns a ``Dataset`` of torch tensors on the CPU.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import struct
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = "COCD_DATA"

MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",  # noqa: E501
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",  # noqa: E501
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081

SARCOS_TEST = "sarcos_inv_test.mat"
SARCOS_TEST_SHA256 = "161a59b5c3b4f4b404584323f181607b2acbe620eb134dc720760dc3f38f5cec"
SARCOS_TRAIN = "sarcos_inv.mat"
SARCOS_TRAIN_GIT_BLOB = "687b7aaa5faf5a9c67fc6655fd59fd8b4539ad55"  # 44,484 x 28
SARCOS_SPLIT_SEED = 0

CIFAR_DIR = "cifar-10-batches-py"
CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
CIFAR_TEST = "test_batch"
CIFAR_JPEG = "cifar10-jpeg-q75.tar.gz"  # JPEG copy of all 60,000 images (../shared/data)
CIFAR_JPEG_SHA256 = "4c4c64191219bb0d642174fc7cd91a6fd198d75348c2c209d525c5d9c34ff31c"
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                 "dog", "frog", "horse", "ship", "truck")  # fmt: skip
CIFAR_PER_CLASS = {"train": 5000, "test": 1000}
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)

HOW_TO_PROVIDE = (
    "Pass --data DIR (or set {env}=DIR) pointing at a folder that holds {what}. "
    "Nothing is downloaded by this code."
)


class DataError(FileNotFoundError):
    """A dataset file is missing, unreadable or not the expected file."""


@dataclass
class Dataset:
    name: str
    kind: str  # "classification" or "regression"
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_outputs: int  # classes, or regression targets
    source: str  # what was read, and which split: goes into the results
    info: dict = field(default_factory=dict)

    def describe(self) -> str:
        return (
            f"{self.name}: {len(self.x_train)} train / {len(self.x_test)} test rows, "
            f"input {tuple(self.x_train.shape[1:])}, {self.num_outputs} "
            f"{'classes' if self.kind == 'classification' else 'targets'} ({self.source})"
        )


# ----------------------------------------------------------------------- folders
def default_data_dirs() -> list[str]:
    """Where the default ``../shared/data`` may be: beside the repo, then beside the cwd."""
    out = []
    for base in (REPO, os.getcwd()):
        path = os.path.normpath(os.path.join(base, "..", "shared", "data"))
        if path not in out:
            out.append(path)
    return out


def resolve_data_dir(data: str | None = None) -> tuple[str | None, list[str]]:
    """The data folder to use and the candidates considered (for error messages)."""
    if data:
        return os.path.abspath(os.path.expanduser(data)), [data]
    env = os.environ.get(ENV)
    if env:
        return os.path.abspath(os.path.expanduser(env)), [f"${ENV}={env}"]
    candidates = default_data_dirs()
    for path in candidates:
        if os.path.isdir(path):
            return path, candidates
    return None, candidates


def _locate(data: str | None, subdirs: tuple[str, ...], name: str, what: str) -> str:
    """The path of ``name`` inside the data folder (subfolders first), or a DataError."""
    root, considered = resolve_data_dir(data)
    if root is None:
        raise DataError(
            f"no data folder for {what}: --data was not given, ${ENV} is not set and none "
            f"of the default locations exists ({', '.join(considered)}). "
            + HOW_TO_PROVIDE.format(env=ENV, what=what)
        )
    looked = [os.path.join(root, *([s] if s else []), name) for s in (*subdirs, "")]
    for path in looked:
        if os.path.isfile(path):
            return path
    raise DataError(
        f"{what}: file {name} is missing; looked for {' and '.join(looked)} (data folder "
        f"{root}, from {considered[0]}). " + HOW_TO_PROVIDE.format(env=ENV, what=what)
    )


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
    """sha256 of a file, read in chunks (never the whole file in memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def git_blob_sha1(path: str, chunk: int = 1 << 20) -> str:
    """The id ``git hash-object`` prints for a file, computed by streaming."""
    h = hashlib.sha1(f"blob {os.path.getsize(path)}\0".encode())
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify(path: str, expected: str, what: str, kind: str = "sha256") -> None:
    got = sha256_file(path) if kind == "sha256" else git_blob_sha1(path)
    if got != expected:
        raise DataError(
            f"{what}: {path} is not the expected file: its {kind} is {got}, expected "
            f"{expected} (see docs/data.md). Replace it with the original file "
            f"or point --data / ${ENV} at a folder that holds the original."
        )


# ----------------------------------------------------------------------- digits
def load_digits(seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1,797 images), pixels scaled to [0, 1].

    A fixed random split (``seed``): 80% train, 20% test.
    """
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = torch.tensor(bunch.data, dtype=torch.float32) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.int64)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_test = round(len(x) * test_fraction)
    test, train = perm[:n_test], perm[n_test:]
    return Dataset(
        "digits",
        "classification",
        x[train],
        y[train],
        x[test],
        y[test],
        10,
        f"scikit-learn load_digits, {100 - round(100 * test_fraction)}/"
        f"{round(100 * test_fraction)} split (seed {seed})",
    )


# ----------------------------------------------------------------------- MNIST
def read_idx(path: str) -> np.ndarray:
    """An IDX file (gzip-compressed or not) as a numpy array of its dtype and shape."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    code, ndim = raw[2], raw[3]
    if code not in dtypes:
        raise DataError(f"{path}: unknown IDX data type 0x{code:02x}")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=dtypes[code], offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path}: header says {dims} but holds {data.size} values")
    return data.reshape(dims)


def load_mnist(data: str | None = None, check: bool = True) -> Dataset:
    """MNIST from the four IDX .gz files: images [N, 1, 28, 28], (x/255 - 0.1307)/0.3081."""
    what = "MNIST (the four IDX .gz files, in DIR/mnist/ or DIR/)"
    paths = {name: _locate(data, ("mnist",), name, what) for name in MNIST_FILES}
    if check:
        for name, path in paths.items():
            verify(path, MNIST_FILES[name], f"MNIST {name}")

    def images(name):
        arr = read_idx(paths[name])
        x = torch.from_numpy(arr.astype(np.float32)).unsqueeze(1) / 255.0
        return (x - MNIST_MEAN) / MNIST_STD

    def labels(name):
        return torch.from_numpy(read_idx(paths[name]).astype(np.int64))

    folder = os.path.relpath(os.path.dirname(paths["t10k-labels-idx1-ubyte.gz"]))
    return Dataset(
        "mnist",
        "classification",
        images("train-images-idx3-ubyte.gz"),
        labels("train-labels-idx1-ubyte.gz"),
        images("t10k-images-idx3-ubyte.gz"),
        labels("t10k-labels-idx1-ubyte.gz"),
        10,
        f"MNIST IDX files in {folder} (official 60,000/10,000 split)",
    )


# ----------------------------------------------------------------------- SARCOS
def _read_mat(path: str, key: str) -> np.ndarray:
    from scipy.io import loadmat

    mat = loadmat(path)
    if key not in mat:
        raise DataError(f"{path} holds no variable {key!r} (has {sorted(mat)})")
    arr = np.asarray(mat[key], dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 28:
        raise DataError(f"{path}: {key} has shape {arr.shape}, expected (rows, 28)")
    return arr


def load_sarcos(
    data: str | None = None, check: bool = True, standardise_targets: bool = True
) -> Dataset:
    """SARCOS inverse dynamics: 21 inputs (columns 1-21) -> 7 torques (columns 22-28).

    With only ``sarcos_inv_test.mat`` (4,449 rows; what ../shared/data holds) its rows are
    split 80/20 with a fixed seed; with ``sarcos_inv.mat`` (44,484 rows) as well, that is
    the training set and the test file the test set. Inputs and targets are standardised
    with the training split's mean and standard deviation; ``info`` keeps them.
    ``standardise_targets=False`` keeps the torques in their original units (the scale of
    the paper's reported losses); inputs are standardised either way.
    """
    what = "SARCOS (sarcos_inv_test.mat, optionally sarcos_inv.mat, in DIR/sarcos/ or DIR/)"
    test_path = _locate(data, ("sarcos",), SARCOS_TEST, what)
    if check:
        verify(test_path, SARCOS_TEST_SHA256, f"SARCOS {SARCOS_TEST}")
    test = torch.from_numpy(_read_mat(test_path, "sarcos_inv_test"))
    try:
        train_path = _locate(data, ("sarcos",), SARCOS_TRAIN, what)
    except DataError:
        train_path = None
    if train_path is not None:
        if check:
            verify(train_path, SARCOS_TRAIN_GIT_BLOB, f"SARCOS {SARCOS_TRAIN}", kind="git-blob")
        train = torch.from_numpy(_read_mat(train_path, "sarcos_inv"))
        source = f"{SARCOS_TRAIN} (44,484 rows) / {SARCOS_TEST} (4,449 rows)"
    else:
        perm = torch.randperm(len(test), generator=torch.Generator().manual_seed(SARCOS_SPLIT_SEED))
        n_train = round(0.8 * len(test))
        train, test = test[perm[:n_train]], test[perm[n_train:]]
        source = (
            f"{SARCOS_TEST} only (4,449 rows), split 80/20 with seed {SARCOS_SPLIT_SEED}: "
            f"{n_train} train / {len(test)} test rows"
        )
    x_mean, x_std = train[:, :21].mean(0), train[:, :21].std(0).clamp_min(1e-12)
    y_mean, y_std = train[:, 21:].mean(0), train[:, 21:].std(0).clamp_min(1e-12)
    if not standardise_targets:
        y_mean, y_std = torch.zeros_like(y_mean), torch.ones_like(y_std)

    def split(rows):
        x = ((rows[:, :21] - x_mean) / x_std).float()
        y = ((rows[:, 21:] - y_mean) / y_std).float()
        return x, y

    (x_tr, y_tr), (x_te, y_te) = split(train), split(test)
    return Dataset(
        "sarcos",
        "regression",
        x_tr,
        y_tr,
        x_te,
        y_te,
        7,
        source
        + (
            "; inputs and the 7 torques standardised with train statistics"
            if standardise_targets
            else "; inputs standardised with train statistics, torques in original units"
        ),
        {"y_mean": y_mean.tolist(), "y_std": y_std.tolist(), "split": train_path is None},
    )


# ----------------------------------------------------------------------- CIFAR-10
class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR-10 batch format only: dicts, lists, bytes and numpy arrays."""

    _ALLOWED: ClassVar[frozenset] = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),
        }
    )

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"CIFAR-10 batch refers to {module}.{name}; refused")


def _read_cifar_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as fh:
        batch = _ArrayUnpickler(fh, encoding="bytes").load()
    if not isinstance(batch, dict):
        raise DataError(f"{path} is not a CIFAR-10 python batch (not a dict)")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise DataError(f"{path} lacks 'data' or 'labels' (has {sorted(batch)})")
    x = np.asarray(batch["data"], dtype=np.uint8)
    y = np.asarray(batch["labels"], dtype=np.int64)
    if x.ndim != 2 or x.shape[1] != 3072 or len(x) != len(y):
        raise DataError(f"{path}: data {x.shape}, labels {y.shape}; expected (N, 3072), (N,)")
    return x, y


def cache_dir() -> str:
    """Where decoded arrays are cached: $COCD_CACHE, else ~/.cache/cocd_cuda."""
    base = os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache"))
    return os.environ.get("COCD_CACHE", os.path.join(base, "cocd_cuda"))


def decode_cifar_jpeg(path: str, check: bool = True) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"train"|"test": (uint8 [N, 3, 32, 32], int64 labels)} from the JPEG archive.

    Members ``<split>/<class>/<name>.jpg`` are decoded with Pillow in sorted order (classes
    in CIFAR-10's label order, files by name). With ``check`` every class must have 5,000
    training and 1,000 test images. Decoded once, then read from an .npz cache keyed by
    the archive's sha256 and Pillow's version (decoders may differ between versions).
    """
    import io
    import tarfile

    try:
        import PIL
        from PIL import Image
    except ImportError:
        raise DataError(f"reading {path} needs Pillow: pip install pillow") from None
    digest = sha256_file(path)
    if check and digest != CIFAR_JPEG_SHA256:
        raise DataError(
            f"CIFAR-10: {path} is not the expected archive: its sha256 is {digest}, expected "
            f"{CIFAR_JPEG_SHA256} (see ../shared/data/README.md)"
        )
    cache = os.path.join(cache_dir(), f"cifar10-jpeg-{digest[:16]}-pillow{PIL.__version__}.npz")
    if os.path.isfile(cache):
        with np.load(cache) as z:
            return {k: (z[f"x_{k}"], z[f"y_{k}"]) for k in CIFAR_PER_CLASS}
    images: dict[str, list] = {k: [] for k in CIFAR_PER_CLASS}
    with tarfile.open(path, "r:gz") as tar:
        for member in tar.getmembers():
            parts = member.name.split("/")
            if not (member.isfile() and len(parts) == 3 and parts[2].endswith(".jpg")):
                continue
            split, cls, name = parts
            if split not in images or cls not in CIFAR_CLASSES:
                raise DataError(f"{path}: unexpected member {member.name}")
            images[split].append((CIFAR_CLASSES.index(cls), name, member))
        out = {}
        for split, items in images.items():
            items.sort(key=lambda t: (t[0], t[1]))
            x = np.empty((len(items), 3, 32, 32), dtype=np.uint8)
            for i, (_, _, member) in enumerate(items):
                img = Image.open(io.BytesIO(tar.extractfile(member).read())).convert("RGB")
                if img.size != (32, 32):
                    raise DataError(f"{path}: {member.name} is {img.size}, expected 32 x 32")
                x[i] = np.asarray(img).transpose(2, 0, 1)
            y = np.array([t[0] for t in items], dtype=np.int64)
            counts = np.bincount(y, minlength=10).tolist()
            if check and counts != [CIFAR_PER_CLASS[split]] * 10:
                raise DataError(
                    f"{path}: {split} label counts {counts}, expected "
                    f"{CIFAR_PER_CLASS[split]} per class"
                )
            out[split] = (x, y)
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    tmp = cache + ".tmp.npz"
    np.savez(tmp, **{f"{a}_{k}": v for k, (x, y) in out.items() for a, v in (("x", x), ("y", y))})
    os.replace(tmp, cache)
    return out


def load_cifar10(data: str | None = None, check: bool = True) -> Dataset:
    """CIFAR-10 from the python pickle batches (``cifar-10-batches-py``) or the JPEG copy.

    The official batches are looked for first, in DIR/cifar10/cifar-10-batches-py,
    DIR/cifar-10-batches-py, DIR/cifar10 and DIR (their format is checked; no checksum is
    known here); else ``cifar10-jpeg-q75.tar.gz`` in DIR/cifar10 or DIR (checksum, label
    counts; see ``decode_cifar_jpeg``). Images [N, 3, 32, 32], scaled to [0, 1] and
    normalised per channel.
    """
    what = (
        "CIFAR-10 (the python batches data_batch_1..5 and test_batch, or cifar10-jpeg-q75.tar.gz)"
    )
    subdirs = (os.path.join("cifar10", CIFAR_DIR), CIFAR_DIR, "cifar10")
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)

    def images(arr):
        x = torch.from_numpy(arr).float().view(-1, 3, 32, 32) / 255.0
        return (x - mean) / std

    try:
        first = _locate(data, subdirs, CIFAR_TEST, what)
    except DataError as err:
        try:
            archive = _locate(data, ("cifar10",), CIFAR_JPEG, what)
        except DataError:
            raise err from None
        arrays = decode_cifar_jpeg(archive, check)
        (x_tr, y_tr), (x_te, y_te) = arrays["train"], arrays["test"]
        return Dataset(
            "cifar10",
            "classification",
            images(x_tr),
            torch.from_numpy(y_tr),
            images(x_te),
            torch.from_numpy(y_te),
            10,
            f"CIFAR-10 JPEG copy (quality 75) {os.path.relpath(archive)} "
            f"({len(x_tr)} train / {len(x_te)} test)",
        )
    folder = os.path.dirname(first)
    missing = [n for n in CIFAR_TRAIN if not os.path.isfile(os.path.join(folder, n))]
    if missing:
        raise DataError(
            f"{what}: {', '.join(missing)} missing from {folder}. "
            + HOW_TO_PROVIDE.format(env=ENV, what=what)
        )
    parts = [_read_cifar_batch(os.path.join(folder, n)) for n in CIFAR_TRAIN]
    x_te, y_te = _read_cifar_batch(first)
    x_tr = np.concatenate([p[0] for p in parts])
    y_tr = np.concatenate([p[1] for p in parts])
    return Dataset(
        "cifar10",
        "classification",
        images(x_tr),
        torch.from_numpy(y_tr),
        images(x_te),
        torch.from_numpy(y_te),
        10,
        f"CIFAR-10 python batches in {folder} ({len(x_tr)} train / {len(x_te)} test)",
    )


def load(task: str, data: str | None = None, **options) -> Dataset:
    """The dataset of a benchmark task (options go to the task's loader)."""
    if task == "digits":
        return load_digits()
    if task == "mnist":
        return load_mnist(data)
    if task == "sarcos":
        return load_sarcos(data, **options)
    if task == "cifar10":
        return load_cifar10(data)
    raise ValueError(f"unknown task {task!r}; use digits, sarcos, mnist or cifar10")
