"""The benchmark's datasets behind one small interface: `load_data(name, ...) -> Data`.

Why this shape: a BP run and a DBP run of a pair must see exactly the same batches, so the order and the
augmentation of epoch e are drawn from a `torch.Generator` seeded by (seed, epoch) — never the global RNG, which
the model and the DBP update also use. And the loader must not be what is measured: datasets that fit in memory
live as tensors on the device and are batched by index, with augmentation done on whole batches by tensor ops.

Datasets (input C×H×W; augmentation with augment=True, none otherwise):
- digits: scikit-learn's bundled 8×8 digits, 1×8×8, fixed stratified 75/25 split (1347/450); no augmentation.
  Option image_size resizes them (bilinear): the same task over more pixels, so every conv layer does more work
  per image while the part of DBP's extra work that no input size changes (forming W·R, the R update's d³) does not.
- cifar10, cifar100: 3×32×32, held as uint8 on the device; random crop with 4-pixel zero padding + horizontal flip.
- imagenet, imagenette: image folders, 3×224×224 (options image_size); RandomResizedCrop + horizontal flip
  (test: Resize 256/224·size + CenterCrop). Decoded by DataLoader workers (options num_workers).
- synthetic: fixed by options data_seed, not the run seed; class-mean images + Gaussian noise; no augmentation.

Where the files are (nothing is ever downloaded): `<data>` = `$DECORBENCH_DATA`, else `~/.cache/decorbench/data`.
cifar10/cifar100 read `<root>/cifar-10-batches-py/` / `<root>/cifar-100-python/` (torchvision's download layout,
default root `<data>`); imagenet and imagenette read `<root>/train/<class>/*` and `<root>/val/<class>/*`, default
roots `<data>/imagenet` and `<data>/imagenette2` (fast.ai's tarball). The CIFAR pickles are read directly, as
torchvision reads them: its CIFAR classes always check md5 sums, even with download=False, and so reject any file
that is not byte-identical to the official one (a re-pickled or trimmed copy).
Each image-folder sample is augmented under its own seed, drawn from (seed, epoch), so the result does not depend
on the number of workers either.

Every data set takes the option `validation`: the share of its training set held out (the same images for every
run, seed and setting) and scored at the eval points instead of the test set, which such runs never see: settings
chosen on it (lr, ...) are not chosen on the test set. The held-out images are not augmented and not trained on.

Several processes (torchrun): `batch_size` stays the global batch and each of `world_size` ranks gets its share of
every global batch — the tensor datasets a contiguous slice of it, the image folders DistributedSampler's share (the
same images, in another order) — so a run trains on the same batches whatever the number of processes. Each rank
evaluates its contiguous share of the eval set.
"""

import copy
import functools
import itertools
import math
import os
import pickle
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from torchvision.datasets import ImageFolder

from decorbench.meters.memory import host_memory_bytes
from decorbench.settings import OPTIONS, resolved_options

DATASETS: tuple[str, ...] = ("digits", "cifar10", "cifar100", "imagenet", "imagenette", "synthetic")

# training images per data set where the name (and options) alone say it: digits is sklearn's 1,797 images less the
# 25 % held out for testing; image folders are only known once read
_TRAIN_SIZE = {"digits": 1347, "cifar10": 50_000, "cifar100": 50_000}
_DIGITS_IMAGES = 1797
_OPTION_MINIMUM = {"image_size": 1, "num_workers": 0, "data_seed": 0, "num_classes": 2, "channels": 1,
                   "train_size": 1, "test_size": 1, "noise": 0, "validation": 0}
_VALIDATION_SPLIT = 2405_02385  # seeds which training images validation holds out: one split for every run


def check_options(name: str, options: dict) -> None:
    """ValueError (one line) for an option data set `name` does not take, or a value it cannot use."""
    unknown = sorted(set(options) - set(OPTIONS[name]))
    if unknown:
        valid = ", ".join(OPTIONS[name]) or "none"
        raise ValueError(f"unknown data.options key {unknown[0]!r} for {name}; valid: {valid}")
    for key, value in options.items():
        if value is None and OPTIONS[name][key] is None:
            continue  # the documented "choose for me"
        kinds, what = ((int, float), "a number") if key in ("noise", "validation") else (int, "an integer")
        if (isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value)
                or value < _OPTION_MINIMUM[key]):
            raise ValueError(f"data.options.{key} must be {what} ≥ {_OPTION_MINIMUM[key]}, got {value!r}")
        if key == "validation" and value >= 1:
            raise ValueError(f"data.options.validation is the share of the training set held out, in [0, 1), got "
                             f"{value!r}")
    if name in ("synthetic", "digits"):
        _check_fits(name, resolved_options(name, options))


def _check_fits(name: str, opts: dict) -> None:
    """Synthetic data and digits are prepared whole in host memory: a size that cannot fit would fail every run."""
    if name == "synthetic":  # float32, with the class means
        images = opts["train_size"] + opts["test_size"] + opts["num_classes"]
        channels, value_bytes = opts["channels"], 4
    else:  # float64 while resized and normalised, two copies
        images, channels, value_bytes = _DIGITS_IMAGES, 1, 16
    need = value_bytes * images * channels * opts["image_size"] ** 2
    have = host_memory_bytes()
    if need > have:
        raise ValueError(f"{name} data of {images} images of {channels}×{opts['image_size']}² values needs "
                         f"{need / 2**30:.3g} GiB; this machine has {have / 2**30:.3g} GiB of memory")


_CIFAR = {  # folder, train files, test file, label key, per-channel mean and std of the training images
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", "labels",
                (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ("cifar-100-python", ["train"], "test", "fine_labels",
                 (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def known_train_size(name: str, options: dict) -> int | None:
    """The size of data set `name`'s training set (less what validation holds out) without reading it, or None where
    only its files tell."""
    opts = resolved_options(name, options)
    whole = opts["train_size"] if name == "synthetic" else _TRAIN_SIZE.get(name)
    return None if whole is None else whole - held_out(whole, opts["validation"])


def held_out(n: int, share: float) -> int:
    """How many of `n` training images option validation = `share` holds out: at least one for any share above 0."""
    return max(1, round(n * share)) if share > 0 else 0


def _split(n: int, share: float) -> tuple[Tensor, Tensor]:
    """Indices of the `n` training images (kept, held out), each in the data set's order."""
    held = torch.randperm(n, generator=_generator(_VALIDATION_SPLIT))[:held_out(n, share)].sort().values
    kept = torch.ones(n, dtype=torch.bool)
    kept[held] = False
    return kept.nonzero().squeeze(1), held


def _scored(x_train, y_train, x_test, y_test, share: float) -> tuple:
    """(training images, their labels, the scored images, their labels): with a validation `share`, the held-out
    part of the training set replaces the test set. Indexes tensors and numpy arrays alike."""
    if not share:
        return x_train, y_train, x_test, y_test
    kept, held = (i.numpy() for i in _split(len(x_train), share))
    return x_train[kept], y_train[kept], x_train[held], y_train[held]


def input_shape(name: str, options: dict) -> tuple[int, int, int]:
    """(C, H, W) of one model input of data set `name` with `options`, known without reading any file."""
    opts = resolved_options(name, options)
    if name in _CIFAR:
        return 3, 32, 32
    channels = 1 if name == "digits" else opts.get("channels", 3)
    return channels, opts["image_size"], opts["image_size"]


def _generator(*key: int) -> torch.Generator:
    """A CPU generator seeded from non-negative integers such as (seed, epoch), well mixed by SeedSequence."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence(key).generate_state(1, np.uint64)[0]))


def _data_root() -> Path:
    """Where datasets live by default: $DECORBENCH_DATA, else ~/.cache/decorbench/data."""
    return Path(os.environ.get("DECORBENCH_DATA") or Path.home() / ".cache" / "decorbench" / "data").expanduser()


@dataclass
class Data:
    """A dataset ready for training: batches are on `device`; training drops the last incomplete batch."""
    name: str
    num_classes: int
    input_shape: tuple[int, int, int]  # (C, H, W) of one model input
    train_size: int
    test_size: int  # of the eval set: the test set, or the validation set held out of the training set
    batch_size: int
    seed: int
    device: torch.device
    chance_accuracy: float  # always guessing the eval set's most frequent class: what learning nothing scores
    rank: int = 0
    world_size: int = 1
    # seconds train_batches spent waiting for a loader to deliver (none for data on the device: its batches are made
    # by the step's own device work); inside the timed window, so a loader-bound run times its loader
    waited_s: float = 0.0

    @property
    def local_batch_size(self) -> int:
        """This rank's share of the global `batch_size`."""
        return self.batch_size // self.world_size

    def test_shard(self) -> range:
        """The indices of the eval set (test or validation) this rank evaluates: all of them in a single process."""
        return range(self.test_size * self.rank // self.world_size, self.test_size * (self.rank + 1) // self.world_size)

    def steps_per_epoch(self) -> int:
        return self.train_size // self.batch_size

    def train_batches(self, epoch: int, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """One epoch in the order (and with the augmentation) fixed by (seed, epoch); this rank's share of it. From
        batch `start` on: the batches before it are never made (a resumed run skips them without decoding them)."""
        raise NotImplementedError

    def test_batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        """This rank's shard of the eval set (test or validation) in fixed order, not augmented."""
        raise NotImplementedError

    def calibration_batches(self, count: int) -> Iterator[tuple[Tensor, Tensor]]:
        """The first `count` training batches of epoch 0 (this rank's share), the same at every call, for
        `train.precise_bn`'s statistics; called mid-epoch, so it must leave the epoch in progress as it was."""
        return itertools.islice(self.train_batches(0), count)


def _upload(t: Tensor, device: torch.device) -> Tensor:
    """A host tensor on `device`; to a GPU through pinned memory, so the host does not wait for the GPU's queue."""
    return t.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else t.to(device)


class TensorData(Data):
    """The whole dataset on the device; uint8 images are normalised per batch, after augmentation."""

    def __init__(self, x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor, *, crop_flip: bool,
                 mean: tuple[float, ...] = (0.0,), std: tuple[float, ...] = (1.0,), **meta):
        device = meta["device"]
        super().__init__(input_shape=tuple(x_train.shape[1:]), train_size=len(x_train), test_size=len(x_test),
                         chance_accuracy=y_test.bincount().max().item() / len(y_test), **meta)
        self.x_train, self.y_train = x_train.to(device), y_train.to(device)
        self.x_test, self.y_test = x_test.to(device), y_test.to(device)
        self.crop_flip = crop_flip
        self.mean = torch.tensor(mean, device=device).view(-1, 1, 1)
        self.std = torch.tensor(std, device=device).view(-1, 1, 1)

    def _prepare(self, x: Tensor) -> Tensor:
        return (x.float() / 255 - self.mean) / self.std if x.dtype == torch.uint8 else x

    def train_batches(self, epoch: int, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        g, n, b, share = _generator(self.seed, epoch), self.train_size, self.batch_size, self.local_batch_size
        order = _upload(torch.randperm(n, generator=g), self.device)
        if self.crop_flip:  # all of the epoch's random draws at once, so no batch waits on the host
            shifts = _upload(torch.randint(0, 9, (n, 2), generator=g), self.device)
            flips = _upload(torch.rand(n, generator=g) < 0.5, self.device)
        for first in range(start * b, n - b + 1, b):
            mine = slice(first + self.rank * share, first + (self.rank + 1) * share)
            x = self.x_train[order[mine]]
            if self.crop_flip:
                x = _crop_flip(x, shifts[mine], flips[mine])
            yield self._prepare(x), self.y_train[order[mine]]

    def test_batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        shard, b = self.test_shard(), self.local_batch_size
        for s in range(shard.start, shard.stop, b):
            e = min(s + b, shard.stop)
            yield self._prepare(self.x_test[s:e]), self.y_test[s:e]


def _crop_flip(x: Tensor, shifts: Tensor, flips: Tensor, pad: int = 4) -> Tensor:
    """Per-sample random crop of the zero-padded batch (offsets `shifts` in [0, 2·pad]) and horizontal flip."""
    n, c, h, w = x.shape
    x = F.pad(x, (pad, pad, pad, pad))
    rows = shifts[:, :1] + torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device).expand(n, w)
    cols = torch.where(flips[:, None], cols.flip(1), cols) + shifts[:, 1:]
    return x[torch.arange(n, device=x.device)[:, None, None, None], torch.arange(c, device=x.device)[:, None, None],
             rows[:, None, :, None], cols[:, None, None, :]]


class _SeededSampler(DistributedSampler):
    """DistributedSampler's share of the epoch's order, each index paired with its sample's augmentation seed, drawn
    from (seed, epoch) per dataset index so it is the same on whichever rank the sample lands; the first `skip` of
    the share left out."""

    skip = 0

    def __iter__(self):
        seeds = torch.randint(2**62, (len(self.dataset),), generator=_generator(self.seed, self.epoch)).tolist()
        return ((i, seeds[i]) for i in itertools.islice(super().__iter__(), self.skip, None))


class _Seeded(Dataset):
    """Runs the wrapped dataset's random transforms under the sample's own seed, leaving the global RNG as it was."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        index, sample_seed = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed)
            return self.dataset[index]


class LoaderData(Data):
    """Image folders decoded by DataLoader workers (persistent, pinned memory and async copies on CUDA)."""

    def __init__(self, train_set, test_set, *, num_workers: int, **meta):
        super().__init__(train_size=len(train_set), test_size=len(test_set),
                         chance_accuracy=float(np.bincount(test_set.targets).max() / len(test_set)), **meta)
        # DistributedSampler seeds its order with seed + epoch: a mixed seed keeps run seeds s and s+1 from sharing
        # epochs' orders. drop_last: every rank gets the same number of samples, floor(n / world_size).
        mixed = int(np.random.SeedSequence(self.seed).generate_state(1, np.uint32)[0])
        self._shuffled = functools.partial(_SeededSampler, train_set, self.world_size, self.rank, shuffle=True,
                                           seed=mixed, drop_last=True)
        self._sampler = self._shuffled()
        self._loader = dict(batch_size=self.local_batch_size, num_workers=num_workers,
                            pin_memory=self.device.type == "cuda")
        persistent = num_workers > 0  # own generators below: without, DataLoader draws from the global RNG
        self._train = DataLoader(_Seeded(train_set), sampler=self._sampler, drop_last=True,
                                 generator=torch.Generator(), persistent_workers=persistent, **self._loader)
        self._test = DataLoader(Subset(test_set, self.test_shard()), generator=torch.Generator(),
                                persistent_workers=persistent, **self._loader)

    def _to_device(self, loader: DataLoader, timed: bool = False) -> Iterator[tuple[Tensor, Tensor]]:
        batches = iter(loader)
        while True:
            asked = time.perf_counter()
            batch = next(batches, None)  # workers decode ahead; this waits only when they fall behind
            if timed:
                self.waited_s += time.perf_counter() - asked
            if batch is None:
                return
            x, y = batch
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def train_batches(self, epoch: int, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        self._sampler.set_epoch(epoch)
        self._sampler.skip = start * self.local_batch_size
        yield from self._to_device(self._train, timed=True)

    def test_batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        yield from self._to_device(self._test)

    def calibration_batches(self, count: int) -> Iterator[tuple[Tensor, Tensor]]:
        """On a loader of their own, over just those samples: asking the training loader would reset its
        persistent workers and its sampler, and the epoch in progress would go on with epoch 0's batches."""
        first = list(itertools.islice(self._shuffled(), count * self.local_batch_size))
        loader = DataLoader(self._train.dataset, sampler=first, drop_last=True, generator=torch.Generator(),
                            **self._loader)
        yield from self._to_device(loader)


def _digits(validation: float, image_size: int, **meta) -> Data:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x / 16, y, test_size=0.25, random_state=0, stratify=y)
    x_train, y_train, x_test, y_test = _scored(x_train, y_train, x_test, y_test, validation)
    if image_size != 8:
        x_train, x_test = (_resized(a, image_size) for a in (x_train, x_test))
    mean, std = x_train.mean(), x_train.std()  # of the images as trained on
    x_train, x_test = (torch.tensor((a - mean) / std, dtype=torch.float32).view(-1, 1, image_size, image_size)
                       for a in (x_train, x_test))
    return TensorData(x_train, torch.tensor(y_train), x_test, torch.tensor(y_test), crop_flip=False, num_classes=10,
                      **meta)


def _resized(rows: np.ndarray, size: int) -> np.ndarray:
    """(n, 64) 8×8 images as (n, size²) rows, resized bilinearly (antialiased when shrunk, as torchvision does)."""
    images = torch.from_numpy(rows).view(-1, 1, 8, 8)
    return F.interpolate(images, size=size, mode="bilinear", antialias=size < 8).flatten(1).numpy()


def _files_root(name: str, root: str | Path | None) -> Path:
    """Where the files of `name` are looked for: `root`, else its default under _data_root()."""
    if root is not None:
        return Path(root).expanduser()
    return _data_root() / {"imagenette": "imagenette2", "imagenet": "imagenet"}.get(name, "")


def missing_data(name: str, root: str | Path | None = None, batch_size: int = 1) -> str | None:
    """Why data set `name` cannot be read from `root` (None: its default place), or an image folder holds fewer
    training images than `batch_size`, in one line; None when its files are there (or it needs none). Checked
    before a suite writes anything, and again when the data are loaded."""
    try:
        return _why_missing(name, root, batch_size)
    except OSError as e:  # a folder on the way that may not be read
        return f"{name}: cannot read {e.filename or _files_root(name, root)} ({e.strerror or e})"


def _why_missing(name: str, root: str | Path | None, batch_size: int) -> str | None:
    if name in _CIFAR:
        base = _files_root(name, root)
        folder, train_files, test_file = _CIFAR[name][:3]
        if all((base / folder / f).is_file() for f in [*train_files, test_file]):
            return None
        cls = "CIFAR10" if name == "cifar10" else "CIFAR100"
        return (f"{name} not found: expected {base / folder}/ ({', '.join([*train_files, test_file])}); get it on a "
                f"machine with internet: python -c \"import torchvision; torchvision.datasets.{cls}('{base}', "
                f"download=True)\" (or https://www.cs.toronto.edu/~kriz/cifar.html), or set $DECORBENCH_DATA / the "
                f"data root")
    if name in ("imagenet", "imagenette"):
        base = _files_root(name, root)
        if all((base / split).is_dir() and _class_folders(base / split)
               for split in ("train", "val")):
            return _folder_problem(name, base, batch_size)
        how = ("https://github.com/fastai/imagenette (imagenette2.tgz)" if name == "imagenette" else
               "https://image-net.org (ILSVRC-2012, val sorted into class folders)")
        return (f"{name} not found: expected {base}/train/<class>/ and {base}/val/<class>/ with images; get it "
                f"from {how}, or set $DECORBENCH_DATA / the data root")
    return None


def _images(folder: Path) -> Iterator[str]:
    """The files of `folder` and its subfolders that ImageFolder reads as images."""
    def unreadable(error: OSError):
        raise error  # not "no images": missing_data says which folder cannot be read, and why

    for parent, folders, files in os.walk(folder, onerror=unreadable, followlinks=True):
        folders[:] = [f for f in folders if not f.startswith(".")]
        yield from (path for path in (os.path.join(parent, f) for f in files if _is_image_name(f))
                    if os.path.isfile(path))  # not a link to nothing


def _is_image_name(name: str) -> bool:
    """A file name ImageFolder should read: an image's extension, and not hidden, which a data set's images never
    are (macOS's `._x.JPEG` resource forks would fail the run that decodes them)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    return not name.startswith(".") and name.lower().endswith(IMG_EXTENSIONS)


def _class_folders(split: Path) -> list[Path]:
    """The class folders of a train/ or val/ folder; hidden ones (.ipynb_checkpoints, .Trash) are not classes."""
    return sorted(p for p in split.iterdir() if p.is_dir() and not p.name.startswith("."))


class _VisibleImageFolder(ImageFolder):
    """ImageFolder over what is not hidden: class folders of `_class_folders`, files whose path below their class
    folder has no hidden part."""

    def __init__(self, root: Path, transform):
        def visible_image(path: str) -> bool:
            below = Path(path).relative_to(root).parts
            return _is_image_name(below[-1]) and not any(part.startswith(".") for part in below)

        super().__init__(root, transform, is_valid_file=visible_image)

    def find_classes(self, directory):
        classes = [p.name for p in _class_folders(Path(directory))]
        return classes, {name: i for i, name in enumerate(classes)}


def _folder_problem(name: str, base: Path, batch_size: int) -> str | None:
    """What keeps ImageFolder from reading `base`'s train and val class folders as one classification task with
    at least one full training batch."""
    classes = {}
    for split in ("train", "val"):
        folders = _class_folders(base / split)
        empty = next((f for f in folders if next(_images(f), None) is None), None)
        if empty is not None:
            return f"{name}: class folder {empty} holds no images (every class folder needs some; remove it)"
        classes[split] = folders
    names = {split: [f.name for f in folders] for split, folders in classes.items()}
    if names["train"] != names["val"]:
        extra = sorted(set(names["train"]) ^ set(names["val"]))
        return f"{name}: {base}/train and {base}/val have different class folders (e.g. {extra[0]!r})"
    if len(names["train"]) < 2:
        return f"{name}: {base}/train has {len(names['train'])} class folder; classification needs at least 2"
    found = sum(1 for _ in itertools.islice(itertools.chain(*map(_images, classes["train"])), batch_size))
    if found < batch_size:  # counted only up to one batch: ImageNet's 1.28 M files are not all listed here
        return (f"{name}: {base}/train holds {found} images, fewer than train.batch_size {batch_size}: no full batch "
                "to train on")
    return None


def _read_cifar(name: str, path: Path, files: list[str]) -> tuple[Tensor, Tensor]:
    """Images (N, 3, 32, 32) uint8 and labels of CIFAR batch `files` in `path`; ValueError (one line, naming the file
    and what is wrong) for a file that is not one."""
    label_key, classes = _CIFAR[name][3], 10 if name == "cifar10" else 100
    entries = []
    for f in files:
        try:
            fh = open(path / f, "rb")
        except OSError as e:
            raise ValueError(f"{path / f}: cannot read it ({e.strerror or e})") from e
        try:
            with fh:
                entry = pickle.load(fh, encoding="latin1")  # Python 2 pickles, as torchvision reads them
            images, labels = np.asarray(entry["data"]), np.asarray(entry[label_key])
            if images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != 3 * 32 * 32:
                raise ValueError(f"data is {images.dtype} of shape {images.shape}, not uint8 rows of 3×32×32")
            if labels.shape != (len(images),) or labels.dtype.kind not in "iu" or not len(images):
                raise ValueError(f"{labels.shape[0] if labels.ndim else 'no'} labels of kind {labels.dtype} for "
                                 f"{len(images)} images, not one integer label per image")
            if labels.min() < 0 or labels.max() >= classes:
                raise ValueError(f"labels in {labels.min()}..{labels.max()}, not 0..{classes - 1}")
            entries.append((images.reshape(-1, 3, 32, 32), labels))
        except Exception as e:  # a damaged pickle can raise almost any kind (a renamed class: AttributeError)
            raise ValueError(f"{path / f}: not a {name} python-version batch file (damaged download?): "
                             f"{type(e).__name__}: {e}") from e
    return (torch.from_numpy(np.concatenate([x for x, _ in entries])),
            torch.from_numpy(np.concatenate([y for _, y in entries]).astype(np.int64)))


def damaged_data(name: str, root: str | Path | None = None, batch_size: int = 1) -> str | None:
    """Why the files of data set `name` that are there cannot be trained on in batches of `batch_size`, in one
    line, or None. CIFAR's batch files are read whole (≈ 1 s, before a suite writes anything); image files are
    decoded by the runs only (all of ImageNet's would take hours)."""
    if name not in _CIFAR:
        return None
    folder, train_files, test_file = _CIFAR[name][:3]
    path = _files_root(name, root) / folder
    try:
        found = len(_read_cifar(name, path, train_files)[0])
        _read_cifar(name, path, [test_file])
    except ValueError as e:
        return str(e)
    if found < batch_size:
        return (f"{name}: {path} holds {found} training images, fewer than train.batch_size {batch_size}: no full "
                "batch to train on")
    return None


def _cifar(root: Path, augment: bool, validation: float, **meta) -> Data:
    name = meta["name"]
    folder, train_files, test_file, _, mean, std = _CIFAR[name]
    splits = _scored(*_read_cifar(name, root / folder, train_files), *_read_cifar(name, root / folder, [test_file]),
                     validation)
    return TensorData(*splits, crop_flip=augment, mean=mean, std=std, num_classes=10 if name == "cifar10" else 100,
                      **meta)


def _default_workers() -> int:
    """The CPUs this process may use, shared with the other processes of its machine (torchrun), one kept for the
    training loop, at most 32 (each worker holds its own copy of the file list: ImageNet's is 1.28 M entries): a
    GPU trains ResNet-18 on thousands of images a second, a core decodes a few hundred JPEGs."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(32, cpus // int(os.environ.get("LOCAL_WORLD_SIZE", "1")) - 1))


def _subset(dataset: ImageFolder, indices: Tensor) -> Subset:
    part = Subset(dataset, indices.tolist())
    part.targets = [dataset.targets[i] for i in part.indices]  # LoaderData's chance accuracy reads them
    return part


def _image_folder(root: Path, augment: bool, image_size: int, num_workers: int | None, validation: float,
                  **meta) -> Data:
    from torchvision.transforms import v2

    finish = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(_IMAGENET_MEAN, _IMAGENET_STD)]
    test_tf = v2.Compose([v2.ToImage(), v2.Resize(round(image_size * 256 / 224)), v2.CenterCrop(image_size), *finish])
    train_tf = (v2.Compose([v2.ToImage(), v2.RandomResizedCrop(image_size), v2.RandomHorizontalFlip(), *finish])
                if augment else test_tf)
    train_set = _VisibleImageFolder(root / "train", train_tf)
    num_classes = len(train_set.classes)
    if validation:
        kept, held = _split(len(train_set), validation)
        scored = copy.copy(train_set)  # the same file list, not listed again (ImageNet's is 1.28 M files)
        scored.transform = test_tf
        train_set, test_set = _subset(train_set, kept), _subset(scored, held)
    else:
        test_set = _VisibleImageFolder(root / "val", test_tf)
    return LoaderData(train_set, test_set, num_workers=_default_workers() if num_workers is None
                      else num_workers, num_classes=num_classes,
                      input_shape=(3, image_size, image_size), **meta)


def _synthetic(*, data_seed: int, num_classes: int, image_size: int, channels: int, train_size: int,
               test_size: int, noise: float | None, validation: float, **meta) -> Data:
    """Smooth random class-mean images (unit pixel std) plus i.i.d. Gaussian pixel noise of std `noise`, scaled
    to unit variance. The default noise grows with sqrt(C·H·W), which keeps the Bayes error the same for every shape.
    """
    noise = 5 * (channels * image_size**2 / 3072) ** 0.5 if noise is None else noise
    g = _generator(data_seed)
    coarse = torch.randn(num_classes, channels, 4, 4, generator=g)
    means = F.interpolate(coarse, size=(image_size, image_size), mode="bilinear", align_corners=False)
    means /= means.std()

    def draw(n: int) -> tuple[Tensor, Tensor]:
        y = torch.arange(n) % num_classes
        x = means[y] + noise * torch.randn(n, channels, image_size, image_size, generator=g)
        return x / (1 + noise**2) ** 0.5, y

    return TensorData(*_scored(*draw(train_size), *draw(test_size), validation), crop_flip=False,
                      num_classes=num_classes, **meta)


def load_data(name: str, *, batch_size: int, seed: int, device: torch.device | str = "cpu",
              root: str | Path | None = None, augment: bool = True, options: dict | None = None,
              rank: int = 0, world_size: int = 1) -> Data:
    """Dataset `name` (see DATASETS and the module docstring) with batches of `batch_size` on `device`.

    `seed` fixes the training order and augmentation per epoch; `root` is ignored by digits and synthetic;
    `options` takes the keys in OPTIONS[name]. `rank` of `world_size` processes gets its share of every batch.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if batch_size % world_size:
        raise ValueError(f"batch_size {batch_size} (the global batch) does not split evenly over {world_size} "
                         "processes")
    check_options(name, options or {})
    opts = resolved_options(name, options or {})
    meta = dict(name=name, batch_size=batch_size, seed=seed, device=torch.device(device), rank=rank,
                world_size=world_size)
    missing = missing_data(name, root, batch_size)
    if missing:
        raise FileNotFoundError(missing)
    if name == "digits":
        data = _digits(**opts, **meta)
    elif name == "synthetic":
        data = _synthetic(**opts, **meta)
    elif name in _CIFAR:
        data = _cifar(_files_root(name, root), augment, **opts, **meta)
    else:
        data = _image_folder(_files_root(name, root), augment, **opts, **meta)
    if batch_size > data.train_size:
        raise ValueError(f"batch_size {batch_size} is larger than the {name} training set ({data.train_size})")
    return data
