"""The datasets: sizes and shapes, deterministic order and augmentation per (seed, epoch), real on-disk formats
(tiny hand-made CIFAR pickles and image folders), clear errors. Offline and fast."""

import pickle
import re
import shutil
import struct
import time

import numpy as np
import pytest
import torch
from PIL import Image

from decorbench.data import DATASETS, OPTIONS, input_shape, known_train_size, load_data, missing_data


def batches(it) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*it)
    return torch.cat(xs), torch.cat(ys)


# --- digits -------------------------------------------------------------------------------------------------


def test_digits_shapes_sizes_and_normalisation():
    data = load_data("digits", batch_size=64, seed=0)
    assert (data.name, data.num_classes, data.input_shape) == ("digits", 10, (1, 8, 8))
    assert (data.train_size, data.test_size) == (1347, 450)
    assert data.steps_per_epoch() == 1347 // 64
    x, y = batches(data.train_batches(0))
    assert x.shape == (21 * 64, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    x_test, y_test = batches(data.test_batches())
    assert x_test.shape == (450, 1, 8, 8) and set(y_test.tolist()) == set(range(10))
    assert abs(x.mean().item()) < 0.05 and abs(x.std().item() - 1) < 0.05
    per_class = torch.bincount(batches(load_data("digits", batch_size=1347, seed=0).train_batches(0))[1])
    assert (torch.bincount(y_test) - per_class / 3).abs().max() <= 1  # stratified 75/25


def test_digits_resized_are_the_same_images_over_more_pixels():
    small, large = (load_data("digits", batch_size=64, seed=0, options=options) for options in ({}, {"image_size": 32}))
    assert large.input_shape == input_shape("digits", {"image_size": 32}) == (1, 32, 32)
    assert (large.train_size, large.test_size) == (1347, 450)
    (x_small, y_small), (x_large, y_large) = (batches(d.train_batches(0)) for d in (small, large))
    assert torch.equal(y_small, y_large) and x_large.shape == (21 * 64, 1, 32, 32)
    assert abs(x_large.mean().item()) < 0.05 and abs(x_large.std().item() - 1) < 0.05  # normalised as trained on
    # each 4×4 block averages back to its pixel, up to the blur at the edges: a correlation, image by image
    back = torch.nn.functional.avg_pool2d(x_large, 4).flatten(1)
    back, orig = (a - a.mean(1, keepdim=True) for a in (back, x_small.flatten(1)))
    corr = (back * orig).sum(1) / (back.norm(dim=1) * orig.norm(dim=1))
    assert corr.min() > 0.9
    shrunk = load_data("digits", batch_size=64, seed=0, options={"image_size": 4})
    assert batches(shrunk.test_batches())[0].shape == (450, 1, 4, 4)


def test_digits_split_is_fixed_whatever_the_seed():
    (xa, ya), (xb, yb) = (batches(load_data("digits", batch_size=b, seed=s).test_batches())
                          for b, s in ((50, 0), (32, 7)))
    assert torch.equal(xa, xb) and torch.equal(ya, yb)


# --- order and determinism ----------------------------------------------------------------------------------


def test_same_seed_and_epoch_give_identical_batches_whatever_the_global_rng():
    torch.manual_seed(1)
    first = list(load_data("digits", batch_size=64, seed=3).train_batches(2))
    torch.manual_seed(2)
    torch.rand(100)
    second = list(load_data("digits", batch_size=64, seed=3).train_batches(2))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, second, strict=True))


def test_epochs_and_seeds_change_the_order():
    data = load_data("digits", batch_size=64, seed=0)
    x0, x1 = batches(data.train_batches(0))[0], batches(data.train_batches(1))[0]
    other = batches(load_data("digits", batch_size=64, seed=1).train_batches(0))[0]
    assert not torch.equal(x0, x1) and not torch.equal(x0, other)


def test_every_sample_at_most_once_per_epoch_and_last_batch_dropped():
    data = load_data("synthetic", batch_size=30, seed=0, options={"train_size": 100, "image_size": 4})
    assert data.steps_per_epoch() == 3
    got = list(data.train_batches(0))
    assert [len(x) for x, _ in got] == [30, 30, 30]
    x = torch.cat([x for x, _ in got]).flatten(1)
    assert len(torch.unique(x, dim=0)) == 90
    assert [len(x) for x, _ in data.test_batches()] == [30] * 17 + [2]  # test keeps the last partial batch


# --- CIFAR: tiny files in the real python-pickle layout -----------------------------------------------------


class Py2Pickler(pickle._Pickler):
    """Pickles bytes as Python 2 `str` (SHORT_BINSTRING/BINSTRING), as in the files from cs.toronto.edu, which
    readers load with encoding="latin1" (dict keys then come back as str: "data", "labels", ...)."""
    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj: bytes):
        n = len(obj)
        self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj if n < 256 else
                   pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def dump(path, obj):
    with open(path, "wb") as f:
        Py2Pickler(f, protocol=2).dump(obj)


def image_rows(offset: int, n: int = 2) -> np.ndarray:
    """n images as rows of 3072 uint8 (1024 R, then G, then B; row-major 32×32), pixel = (i + offset + k) % 256."""
    return ((np.arange(3072)[None] + offset + np.arange(n)[:, None]) % 256).astype(np.uint8)


def expected_images(offset: int, mean, std, n: int = 2) -> torch.Tensor:
    x = torch.from_numpy(image_rows(offset, n)).view(n, 3, 32, 32).float() / 255
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


CIFAR10_MEAN_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


@pytest.fixture
def cifar_root(tmp_path):
    ten, hundred = tmp_path / "cifar-10-batches-py", tmp_path / "cifar-100-python"
    ten.mkdir()
    hundred.mkdir()
    for i in range(1, 6):
        dump(ten / f"data_batch_{i}", {b"batch_label": b"training batch %d of 5" % i, b"data": image_rows(10 * i),
                                       b"labels": [i, 9 - i], b"filenames": [b"a_%d.png" % i, b"b_%d.png" % i]})
    dump(ten / "test_batch", {b"batch_label": b"testing batch 1 of 1", b"data": image_rows(100), b"labels": [3, 7],
                              b"filenames": [b"t1.png", b"t2.png"]})
    dump(ten / "batches.meta", {b"label_names": [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog",
                                                 b"frog", b"horse", b"ship", b"truck"],
                                b"num_cases_per_batch": 10000, b"num_vis": 3072})
    for split, offset, fine in (("train", 20, [11, 99, 42, 0]), ("test", 200, [57, 3])):
        dump(hundred / split, {b"batch_label": split.encode(), b"data": image_rows(offset, len(fine)),
                               b"fine_labels": fine, b"coarse_labels": [f % 20 for f in fine],
                               b"filenames": [b"x%d.png" % f for f in fine]})
    dump(hundred / "meta", {b"fine_label_names": [b"c%d" % i for i in range(100)],
                            b"coarse_label_names": [b"s%d" % i for i in range(20)]})
    return tmp_path


def test_cifar10_pixels_and_labels_round_trip(cifar_root):
    data = load_data("cifar10", batch_size=4, seed=0, root=cifar_root)
    assert (data.num_classes, data.input_shape, data.train_size, data.test_size) == (10, (3, 32, 32), 10, 2)
    x, y = batches(data.test_batches())
    mean, std = CIFAR10_MEAN_STD
    torch.testing.assert_close(x, expected_images(100, mean, std))
    assert y.tolist() == [3, 7]
    x, y = batches(load_data("cifar10", batch_size=5, seed=0, root=cifar_root, augment=False).train_batches(0))
    expected = torch.cat([expected_images(10 * i, mean, std) for i in range(1, 6)])
    labels = [label for i in range(1, 6) for label in (i, 9 - i)]
    for img, label in zip(x, y):  # shuffled, so find each image among the expected ones
        match = [k for k in range(10) if torch.allclose(img, expected[k])]
        assert len(match) == 1 and labels[match[0]] == label


def test_cifar100_reads_fine_labels(cifar_root):
    data = load_data("cifar100", batch_size=2, seed=0, root=cifar_root)
    assert (data.num_classes, data.train_size, data.test_size) == (100, 4, 2)
    x, y = batches(data.test_batches())
    torch.testing.assert_close(x, expected_images(200, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)))
    assert y.tolist() == [57, 3]
    assert sorted(batches(data.train_batches(0))[1].tolist()) == [0, 11, 42, 99]


def test_cifar_augmentation_is_seeded_and_keeps_shape(cifar_root):
    one = list(load_data("cifar10", batch_size=4, seed=5, root=cifar_root).train_batches(1))
    two = list(load_data("cifar10", batch_size=4, seed=5, root=cifar_root).train_batches(1))
    assert [x.shape for x, _ in one] == [(4, 3, 32, 32)] * 2
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(one, two))
    plain = batches(load_data("cifar10", batch_size=4, seed=5, root=cifar_root, augment=False).train_batches(1))
    assert torch.equal(batches(one)[1], plain[1]) and not torch.equal(batches(one)[0], plain[0])


def _pixels(x: torch.Tensor) -> torch.Tensor:
    """CIFAR-10 images as load_data gives them, back in 0..255."""
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in CIFAR10_MEAN_STD)
    return ((x * std + mean) * 255).round()


def _crops(image: torch.Tensor) -> dict[tuple[int, int, bool], torch.Tensor]:
    """Every crop of `image` zero-padded by 4 pixels, mirrored or not, by (rows down, columns right, mirrored)."""
    padded = torch.nn.functional.pad(image, (4, 4, 4, 4))
    return {(dy, dx, flip): (lambda crop: crop.flip(-1) if flip else crop)(padded[:, dy:dy + 32, dx:dx + 32])
            for dy in range(9) for dx in range(9) for flip in (False, True)}


def _crop_of(augmented: torch.Tensor, image: torch.Tensor) -> tuple[int, int, bool]:
    """Which of `image`'s padded crops `augmented` is; fails unless exactly one."""
    found = [how for how, crop in _crops(image).items() if torch.equal(augmented, crop)]
    assert len(found) == 1, found
    return found[0]


def test_cifar_augmentation_is_a_random_padded_crop_and_mirror_of_each_image(cifar_root):
    augmented, plain = (load_data("cifar10", batch_size=4, seed=5, root=cifar_root, augment=augment)
                        for augment in (True, False))
    drawn = []
    for epoch in range(8):  # 64 images
        for (x, y), (x_plain, y_plain) in zip(augmented.train_batches(epoch), plain.train_batches(epoch), strict=True):
            assert torch.equal(y, y_plain)
            batch = [_crop_of(aug, image) for aug, image in zip(_pixels(x), _pixels(x_plain))]
            assert len({(dy, dx) for dy, dx, _ in batch}) > 1, batch  # a shift per image, not one per batch
            drawn += batch
    assert {dy for dy, _, _ in drawn} == {dx for _, dx, _ in drawn} == set(range(9)), drawn  # shifts 0..8 px
    assert {flip for *_, flip in drawn} == {False, True}, drawn


def test_missing_cifar_names_the_expected_path(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nothing" / "cifar-10-batches-py")) as err:
        load_data("cifar10", batch_size=2, seed=0, root=tmp_path / "nothing")
    assert "\n" not in str(err.value) and "download=True" in str(err.value)
    monkeypatch.setenv("DECORBENCH_DATA", str(tmp_path / "env"))
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "env" / "cifar-100-python")):
        load_data("cifar100", batch_size=2, seed=0)


# --- image folders ------------------------------------------------------------------------------------------


@pytest.fixture
def folder_root(tmp_path):
    """2 classes, 3 train and 2 val images each: cats red, dogs blue, both with a green gradient (so crops and
    flips change them)."""
    for split, n in (("train", 3), ("val", 2)):
        for cls, (red, blue) in {"cat": (255, 0), "dog": (0, 255)}.items():
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                w = 40 + 4 * i
                green = np.broadcast_to(np.linspace(0, 255, w, dtype=np.uint8), (36, w))
                rgb = np.stack([np.full_like(green, red), green, np.full_like(green, blue)], axis=-1)
                Image.fromarray(rgb).save(tmp_path / split / cls / f"{i}.png")
    return tmp_path


def test_image_folder_shapes_labels_and_classes(folder_root):
    data = load_data("imagenette", batch_size=2, seed=0, root=folder_root,
                     options={"image_size": 32, "num_workers": 0})
    assert (data.num_classes, data.input_shape, data.train_size, data.test_size) == (2, (3, 32, 32), 6, 4)
    assert data.steps_per_epoch() == 3
    x, y = batches(data.test_batches())
    assert x.shape == (4, 3, 32, 32) and y.tolist() == [0, 0, 1, 1]
    mean, std = torch.tensor([0.485, 0.406]), torch.tensor([0.229, 0.225])  # ImageNet's, red and blue
    for img, red_blue in ((x[0], [1.0, 0.0]), (x[2], [0.0, 1.0])):
        torch.testing.assert_close(img[[0, 2]].mean((1, 2)), (torch.tensor(red_blue) - mean) / std, atol=1e-3, rtol=0)
    x, y = batches(data.train_batches(0))
    assert x.shape == (6, 3, 32, 32) and sorted(y.tolist()) == [0, 0, 0, 1, 1, 1]
    assert data.chance_accuracy == 0.5  # either class: 2 of the 4 val images
    (folder_root / "val" / "dog" / "1.png").unlink()
    assert load_data("imagenette", batch_size=2, seed=0, root=folder_root,
                     options={"image_size": 32, "num_workers": 0}).chance_accuracy == 2 / 3  # cats: 2 of 3


def test_an_image_folder_counts_the_time_its_training_batches_waited_for_the_loader(folder_root, monkeypatch):
    from decorbench import data as data_module

    decode = data_module._Seeded.__getitem__

    def slowly(self, item):
        time.sleep(0.02)
        return decode(self, item)

    monkeypatch.setattr(data_module._Seeded, "__getitem__", slowly)
    data = load_data("imagenette", batch_size=2, seed=0, root=folder_root, options={"image_size": 32, "num_workers": 0})
    list(data.test_batches())
    assert data.waited_s == 0  # evaluation is not training time
    start = time.perf_counter()
    for _ in data.train_batches(0):  # 3 batches
        time.sleep(0.1)  # the training step: not waiting for the loader
    loop_s = time.perf_counter() - start
    assert 6 * 0.02 <= data.waited_s <= loop_s - 3 * 0.1  # the 6 images decoded in this process (num_workers = 0)
    assert load_data("digits", batch_size=2, seed=0).waited_s == 0  # on the device: no loader to wait for


def test_image_folder_augmentation_depends_on_seed_and_epoch_only(folder_root):
    opts = {"image_size": 16, "num_workers": 0}
    state = torch.get_rng_state()
    one = batches(load_data("imagenet", batch_size=3, seed=1, root=folder_root, options=opts).train_batches(4))
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left alone
    two = batches(load_data("imagenet", batch_size=3, seed=1, root=folder_root,
                            options={**opts, "num_workers": 2}).train_batches(4))
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])
    plain = batches(load_data("imagenet", batch_size=3, seed=1, root=folder_root, options=opts,
                              augment=False).train_batches(4))
    assert torch.equal(one[1], plain[1]) and not torch.equal(one[0], plain[0])


def _same_batches(got: list, want: list) -> bool:
    """As many (inputs, labels) batches, each equal to its counterpart."""
    return len(got) == len(want) and all(torch.equal(a, b) for g, w in zip(got, want) for a, b in zip(g, w))


@pytest.mark.parametrize("name", ["digits", "imagenette"])
def test_an_epoch_from_a_later_batch_is_its_rest_and_the_batches_before_are_never_made(name, folder_root,
                                                                                        monkeypatch):
    import torchvision.datasets.folder as folder

    opts = {"image_size": 16, "num_workers": 0} if name == "imagenette" else {}
    data = load_data(name, batch_size=2, seed=4, root=folder_root, options=opts)
    whole = list(data.train_batches(3))
    decoded = []
    monkeypatch.setattr(folder, "pil_loader", lambda path, load=folder.pil_loader: decoded.append(path) or load(path))
    rest = list(data.train_batches(3, start=1))
    assert _same_batches(rest, whole[1:])
    assert len(decoded) == (4 if name == "imagenette" else 0)  # a resumed run does not decode what it skips


@pytest.mark.parametrize("name", ["digits", "imagenette"])
def test_calibration_batches_are_epoch_0s_first_and_leave_an_epoch_in_progress_as_it_was(name, folder_root):
    """train.precise_bn asks for them at an eval mid-epoch; an image folder's loader keeps its workers between
    epochs, and asking it again would restart the epoch in progress."""
    opts = {"image_size": 16, "num_workers": 1} if name == "imagenette" else {}

    def epoch(calibrate: bool) -> tuple[list, list]:
        data = load_data(name, batch_size=2, seed=4, root=folder_root, options=opts)
        batches = data.train_batches(1)
        seen, calibration = [next(batches)], []
        if calibrate:
            calibration = list(data.calibration_batches(2))
        return seen + list(batches), calibration

    (plain, _), (interrupted, calibration) = epoch(False), epoch(True)
    assert _same_batches(interrupted, plain)
    first = list(load_data(name, batch_size=2, seed=4, root=folder_root, options=opts).train_batches(0))[:2]
    assert len(calibration) == 2 and _same_batches(calibration, first)


def test_missing_image_folder_names_the_expected_path(tmp_path, monkeypatch):
    monkeypatch.setenv("DECORBENCH_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "imagenette2")) as err:
        load_data("imagenette", batch_size=2, seed=0)
    assert "fastai/imagenette" in str(err.value) and "\n" not in str(err.value)
    for split in ("train", "val"):  # the folders, but no class folder in them (e.g. an unpacking that failed)
        (tmp_path / "imagenette2" / split).mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="imagenette not found"):
        load_data("imagenette", batch_size=2, seed=0)


def test_image_folders_imagefolder_cannot_read_are_named_before_any_run(folder_root):
    assert missing_data("imagenette", folder_root) is None
    assert missing_data("imagenette", folder_root, batch_size=6) is None
    assert missing_data("imagenette", folder_root, batch_size=7) == (
        f"imagenette: {folder_root}/train holds 6 images, fewer than train.batch_size 7: no full batch to train on")
    (folder_root / "val" / "cat" / "nested").mkdir()  # ImageFolder reads a class folder's subfolders too
    (folder_root / "val" / "cat" / "1.png").rename(folder_root / "val" / "cat" / "nested" / "1.PNG")
    (folder_root / "val" / "cat" / "0.png").rename(folder_root / "val" / "cat" / "0.txt")
    assert missing_data("imagenette", folder_root) is None
    (folder_root / "val" / "cat" / "nested" / "1.PNG").unlink()
    assert missing_data("imagenette", folder_root) == (f"imagenette: class folder {folder_root / 'val' / 'cat'} "
                                                        "holds no images (every class folder needs some; remove it)")
    shutil.rmtree(folder_root / "val" / "cat")
    assert "train and " in missing_data("imagenette", folder_root) and "different class folders (e.g. 'cat')" in \
        missing_data("imagenette", folder_root)
    shutil.rmtree(folder_root / "train" / "cat")
    assert missing_data("imagenette", folder_root).endswith("has 1 class folder; classification needs at least 2")


def test_hidden_files_and_folders_are_not_part_of_an_image_folder(folder_root):
    for split in ("train", "val"):
        (folder_root / split / ".ipynb_checkpoints").mkdir()  # plain ImageFolder: a class with no images, an error
        (folder_root / split / ".DS_Store").write_bytes(b"\0")
        (folder_root / split / "cat" / "._0.png").write_bytes(b"\0\5\22\7")  # macOS resource fork: not a PNG
        (folder_root / split / "dog" / ".thumbs").mkdir()
        shutil.copy(folder_root / split / "dog" / "0.png", folder_root / split / "dog" / ".thumbs" / "0.png")
    assert missing_data("imagenette", folder_root) is None
    data = load_data("imagenette", batch_size=2, seed=0, root=folder_root, options={"image_size": 16,
                                                                                     "num_workers": 0})
    assert (data.num_classes, data.train_size, data.test_size) == (2, 6, 4)
    x, y = batches(data.train_batches(0))  # every image decodes: no resource fork among them
    assert len(x) == 6 and sorted(y.tolist()) == [0, 0, 0, 1, 1, 1]
    (folder_root / "val" / "dog" / "0.png").rename(folder_root / "val" / "dog" / ".0.png")
    (folder_root / "val" / "dog" / "1.png").unlink()
    assert missing_data("imagenette", folder_root) == (f"imagenette: class folder {folder_root / 'val' / 'dog'} "
                                                        "holds no images (every class folder needs some; remove it)")


@pytest.mark.parametrize("damage, why", [
    ("cut", "UnpicklingError|EOFError"),
    ("module", "ModuleNotFoundError: No module named 'nompy'"),  # e.g. re-pickled under numpy 2, read by numpy 1
    ({b"labels": [1, 2, 3]}, "3 labels of kind int64 for 2 images"),  # would pair images with the wrong labels
    ({b"labels": [1, 10]}, "labels in 1..10, not 0..9"),
    ({b"labels": [1.0, 2.0]}, "labels of kind float64"),
    ({b"data": np.zeros((2, 100), np.uint8)}, "not uint8 rows of 3×32×32"),
    ({b"data": np.zeros((0, 3072), np.uint8), b"labels": []}, "for 0 images"),
])
def test_a_damaged_cifar_file_is_one_line_naming_it_and_what_is_wrong(cifar_root, damage, why):
    batch = cifar_root / "cifar-10-batches-py" / "data_batch_3"
    if damage == "cut":
        batch.write_bytes(batch.read_bytes()[:100])  # a download cut short
    elif damage == "module":
        batch.write_bytes(batch.read_bytes().replace(b"numpy", b"nompy"))
    else:
        with open(batch, "rb") as f:
            entry = {key.encode(): value for key, value in pickle.load(f, encoding="latin1").items()}
        dump(batch, {**entry, **damage})
    with pytest.raises(ValueError, match=f"{batch}: not a cifar10 python-version batch file") as err:
        load_data("cifar10", batch_size=2, seed=0, root=cifar_root)
    assert "\n" not in str(err.value) and re.search(why, str(err.value)), err.value


# --- synthetic ----------------------------------------------------------------------------------------------


def nearest_class_mean_accuracy(data) -> float:
    x, y = batches(data.train_batches(0))
    means = torch.stack([x[y == c].mean(0) for c in range(data.num_classes)]).flatten(1)
    x_test, y_test = batches(data.test_batches())
    return (torch.cdist(x_test.flatten(1), means).argmin(1) == y_test).float().mean().item()


def test_synthetic_options_are_honoured():
    data = load_data("synthetic", batch_size=10, seed=0, options={
        "num_classes": 5, "image_size": 8, "channels": 1, "train_size": 100, "test_size": 50})
    assert (data.num_classes, data.input_shape, data.train_size, data.test_size) == (5, (1, 8, 8), 100, 50)
    x, y = batches(data.test_batches())
    assert x.shape == (50, 1, 8, 8) and torch.bincount(y).tolist() == [10] * 5
    assert abs(x.std().item() - 1) < 0.1


def test_synthetic_data_is_fixed_by_data_seed_not_run_seed():
    a, b = (load_data("synthetic", batch_size=64, seed=s) for s in (0, 1))
    assert torch.equal(batches(a.test_batches())[0], batches(b.test_batches())[0])
    xa, xb = batches(a.train_batches(0))[0], batches(b.train_batches(0))[0]
    assert not torch.equal(xa, xb)  # a different order of the same samples
    torch.testing.assert_close(xa.sum(0), xb.sum(0), atol=1e-4, rtol=0)
    c = load_data("synthetic", batch_size=64, seed=0, options={"data_seed": 1})
    assert not torch.equal(batches(a.test_batches())[0], batches(c.test_batches())[0])


def test_synthetic_is_learnable_and_noise_sets_the_difficulty():
    easy = nearest_class_mean_accuracy(load_data("synthetic", batch_size=64, seed=0))
    hard = nearest_class_mean_accuracy(load_data("synthetic", batch_size=64, seed=0, options={"noise": 15.0}))
    assert easy > 0.9
    assert 0.3 < hard < 0.95  # chance is 0.1


# --- validation: a held-out part of the training set, scored instead of the test set ---------------------------


def rows(x: torch.Tensor) -> set[bytes]:
    return {image.numpy().tobytes() for image in x}


def test_validation_holds_out_training_images_and_scores_them_instead_of_the_test_set():
    opts = {"train_size": 200, "test_size": 50, "image_size": 4, "channels": 1}
    whole = load_data("synthetic", batch_size=10, seed=0, options=opts)
    held = load_data("synthetic", batch_size=10, seed=0, options={**opts, "validation": 0.25})
    assert (held.train_size, held.test_size) == (150, 50)
    trained, scored = batches(held.train_batches(0))[0], batches(held.test_batches())[0]
    assert not rows(trained) & rows(scored)  # never trained on
    assert rows(trained) | rows(scored) == rows(batches(whole.train_batches(0))[0])  # all from the training set
    assert not rows(scored) & rows(batches(whole.test_batches())[0])  # the test set is not seen at all
    assert known_train_size("synthetic", {**opts, "validation": 0.25}) == 150


def test_every_run_holds_out_the_same_images_whatever_its_seed_or_batch_size():
    a, b = (load_data("digits", batch_size=bs, seed=seed, options={"validation": 0.1})
            for bs, seed in ((12, 0), (4, 3)))  # both divide 1212: whole epochs
    assert (a.train_size, a.test_size) == (1212, 135) == (known_train_size("digits", {"validation": 0.1}), 135)
    assert torch.equal(batches(a.test_batches())[0], batches(b.test_batches())[0])
    assert rows(batches(a.train_batches(0))[0]) == rows(batches(b.train_batches(2))[0])
    assert sorted(set(batches(a.test_batches())[1].tolist())) == list(range(10))
    assert a.chance_accuracy == torch.bincount(batches(a.test_batches())[1]).max().item() / 135


def test_cifar_validation_images_are_training_images_not_augmented(cifar_root):
    data = load_data("cifar10", batch_size=4, seed=0, root=cifar_root, options={"validation": 0.2})
    assert (data.train_size, data.test_size) == (8, 2)
    mean, std = CIFAR10_MEAN_STD
    training = torch.cat([expected_images(10 * i, mean, std) for i in range(1, 6)])
    labels = [label for i in range(1, 6) for label in (i, 9 - i)]
    x, y = batches(data.test_batches())
    for img, label in zip(x, y):
        match = [k for k in range(10) if torch.allclose(img, training[k])]
        assert len(match) == 1 and labels[match[0]] == label


def test_an_image_folders_validation_images_come_from_train_with_the_test_transform(folder_root):
    opts = {"image_size": 32, "num_workers": 0, "validation": 0.5}
    data = load_data("imagenette", batch_size=3, seed=0, root=folder_root, options=opts)
    assert (data.num_classes, data.train_size, data.test_size) == (2, 3, 3)
    for path in (folder_root / "val").rglob("*.png"):  # not read: anything there would change nothing
        Image.new("RGB", (40, 36), (0, 255, 0)).save(path)
    again = load_data("imagenette", batch_size=3, seed=4, root=folder_root, options=opts)
    (x, y), (x2, y2) = batches(data.test_batches()), batches(again.test_batches())
    assert torch.equal(x, x2) and torch.equal(y, y2)  # the same images, not augmented
    trained = batches(data.train_batches(0))[1].tolist()
    assert sorted(trained + y.tolist()) == [0, 0, 0, 1, 1, 1]
    assert data.chance_accuracy == max(y.tolist().count(c) for c in (0, 1)) / 3
    mean, std = torch.tensor([0.485, 0.406]), torch.tensor([0.229, 0.225])  # ImageNet's, red and blue
    for img, label in zip(x, y):  # cats red, dogs blue: unmistakably the training images
        torch.testing.assert_close(img[[0, 2]].mean((1, 2)), (torch.eye(2)[label] - mean) / std, atol=1e-3, rtol=0)


@pytest.mark.parametrize("share", [1.0, 1.5, -0.1, True, "0.1", float("nan")])
def test_a_validation_share_outside_0_to_1_is_a_value_error(share):
    with pytest.raises(ValueError, match="data.options.validation"):
        load_data("digits", batch_size=8, seed=0, options={"validation": share})


# --- errors -------------------------------------------------------------------------------------------------


def test_bad_names_options_and_batch_sizes_are_value_errors():
    with pytest.raises(ValueError, match="valid: " + ", ".join(DATASETS)):
        load_data("mnist", batch_size=8, seed=0)
    with pytest.raises(ValueError, match="noize.*valid: " + ", ".join(OPTIONS["synthetic"])):
        load_data("synthetic", batch_size=8, seed=0, options={"noize": 1.0})
    with pytest.raises(ValueError, match="'noise' for digits; valid: image_size, validation$"):
        load_data("digits", batch_size=8, seed=0, options={"noise": 1.0})
    for options, message in [({"num_classes": 1}, "num_classes must be an integer ≥ 2, got 1"),
                             ({"image_size": 2.5}, "image_size must be an integer ≥ 1"),
                             ({"train_size": 0}, "train_size must be an integer ≥ 1"),
                             ({"data_seed": -1}, "data_seed must be an integer ≥ 0"),
                             ({"channels": True}, "channels must be an integer"),
                             ({"noise": float("nan")}, "noise must be a number ≥ 0")]:
        with pytest.raises(ValueError, match=message):
            load_data("synthetic", batch_size=8, seed=0, options=options)
    with pytest.raises(ValueError, match="larger than the digits training set"):
        load_data("digits", batch_size=2000, seed=0)
    with pytest.raises(ValueError, match="at least 1"):
        load_data("digits", batch_size=0, seed=0)


def test_a_data_root_from_the_environment_may_start_with_a_tilde(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("DECORBENCH_DATA", "~/data")
    assert f"expected {tmp_path / 'data' / 'cifar-10-batches-py'}/" in missing_data("cifar10")


@pytest.mark.parametrize("name, root, options", [
    ("digits", None, {}), ("cifar10", "cifar_root", {}), ("cifar100", "cifar_root", {}),
    ("imagenette", "folder_root", {"image_size": 24, "num_workers": 0}),
    ("synthetic", None, {"channels": 2, "image_size": 5, "train_size": 4, "test_size": 2}),
])
def test_the_input_shape_is_known_before_reading_the_data(name, root, options, request):
    root = request.getfixturevalue(root) if root else None
    assert load_data(name, batch_size=2, seed=0, root=root, options=options).input_shape == input_shape(name, options)
