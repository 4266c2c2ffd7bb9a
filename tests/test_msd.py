"""MSD-layout loader: loading, label selection, RAS orientation, resampling, 2D slicing, and one
test per bad input, each asserting the one-line error names the offending file."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from study.data import DATASETS, MSDConfig, build_msd, check_msd
from study.data.base import SplitConfig
from study.errors import SegstudyError

SHAPE = (24, 24, 12)
AFFINE = np.diag([1.5, 1.5, 3.0, 1.0])
QUARTERS = SplitConfig(train=0.25, val=0.25, calib=0.25, test=0.25)  # 4 cases -> one per split
LABELS = {"0": "background", "1": "spleen", "2": "tumour"}


def _box_label(i: int, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    """Label 1 in an 8x6x4 box shifted by case; label 2 in a 2x2x2 corner of it."""
    label = np.zeros(shape, dtype=np.uint8)
    label[4 + i : 12 + i, 6:12, 3:7] = 1
    label[4 + i : 6 + i, 6:8, 3:5] = 2
    return label


def _image(i: int, label: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(i)
    return (100.0 * (label > 0) + rng.normal(0.0, 10.0, label.shape)).astype(np.float32)


def _save(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), path)


def write_msd(root: Path, *, n: int = 4, shapes: list[tuple[int, ...]] | None = None) -> Path:
    """A tiny Decathlon folder: n cases of 24x24x12 voxels at 1.5 x 1.5 x 3 mm."""
    training = []
    for i in range(n):
        shape = shapes[i] if shapes else SHAPE
        label = _box_label(i, shape)
        _save(root / "imagesTr" / f"case_{i}.nii.gz", _image(i, label))
        _save(root / "labelsTr" / f"case_{i}.nii.gz", label)
        training.append({"image": f"./imagesTr/case_{i}.nii.gz", "label": f"./labelsTr/case_{i}.nii.gz"})
    (root / "dataset.json").write_text(json.dumps({"name": "tiny", "labels": LABELS, "training": training}))
    return root


@pytest.fixture
def msd(tmp_path: Path) -> Path:
    return write_msd(tmp_path / "Task00_Tiny")


def _all(level):
    return [split for _, split in level.named_splits()]


# --- loading -------------------------------------------------------------------------------


def test_loads_volumes_with_shapes_ids_spacing_and_fbr(msd: Path):
    level = build_msd(MSDConfig(root=msd, split=QUARTERS))
    ids = [i for split in _all(level) for i in split.ids]
    assert sorted(ids) == ["case_0", "case_1", "case_2", "case_3"]
    for split in _all(level):
        assert split.images.shape == (1, 1, *SHAPE) and split.images.dtype == np.float32
        assert split.masks.shape == (1, 1, *SHAPE) and split.masks.dtype == np.uint8
        assert split.spacing == (1.5, 1.5, 3.0)
        assert np.isnan(split.td).all()
        fg = int(split.masks.sum())
        assert fg == 8 * 6 * 4 - 2 * 2 * 2  # label 2 voxels are background for label 1
        assert split.fbr[0] == pytest.approx(fg / (np.prod(SHAPE) - fg))
        assert 0.0 <= split.images.min() and split.images.max() <= 1.0


def test_intensity_is_scaled_by_percentiles(msd: Path):
    level = build_msd(MSDConfig(root=msd, split=QUARTERS))
    split = next(s for s in _all(level) if s.ids == ("case_1",))
    raw = np.asarray(nib.load(msd / "imagesTr" / "case_1.nii.gz").dataobj)
    lo, hi = np.percentile(raw, [0.5, 99.5])
    np.testing.assert_allclose(split.images[0, 0], np.clip((raw - lo) / (hi - lo), 0, 1), atol=1e-5)


def test_split_is_by_case_and_seeded(msd: Path):
    def assignment(seed: int) -> tuple[tuple[str, ...], ...]:
        return tuple(s.ids for s in _all(build_msd(MSDConfig(root=msd, split=QUARTERS, seed=seed))))

    assert assignment(0) == assignment(0)
    assert len({assignment(s) for s in range(6)}) > 1


def test_label_selected_by_name_or_value_others_background(msd: Path):
    by_name = build_msd(MSDConfig(root=msd, split=QUARTERS, label="tumour"))
    by_value = build_msd(MSDConfig(root=msd, split=QUARTERS, label=2))
    for a, b in zip(_all(by_name), _all(by_value)):
        np.testing.assert_array_equal(a.masks, b.masks)
        case = int(a.ids[0][-1])
        np.testing.assert_array_equal(a.masks[0, 0], (_box_label(case) == 2).astype(np.uint8))


def test_orientation_is_ras(tmp_path: Path):
    root = write_msd(tmp_path / "flipped")
    flip = np.diag([-1.5, 1.5, 3.0, 1.0])  # first voxel axis points left: RAS flips it
    for i in range(4):
        for kind in ("imagesTr", "labelsTr"):
            path = root / kind / f"case_{i}.nii.gz"
            _save(path, np.asarray(nib.load(path).dataobj), flip)
    level = build_msd(MSDConfig(root=root, split=QUARTERS))
    for split in _all(level):
        case = int(split.ids[0][-1])
        np.testing.assert_array_equal(split.masks[0, 0], (_box_label(case) == 1)[::-1].astype(np.uint8))


@pytest.mark.parametrize(("spacing", "shape"), [((3.0, 3.0, 3.0), (12, 12, 12)), ((1.5, 1.5, 1.5), (24, 24, 23))])
def test_resampling_to_spacing_changes_shape(msd: Path, spacing, shape):
    level = build_msd(MSDConfig(root=msd, split=QUARTERS, spacing=spacing))
    for split in _all(level):
        assert split.images.shape == (1, 1, *shape) and split.masks.shape == (1, 1, *shape)
        assert split.spacing == spacing and split.masks.any()
    # Physical foreground volume is kept roughly (mm^3): 184 voxels of 6.75 mm^3.
    vol = level.train.masks.sum() * np.prod(spacing)
    assert vol == pytest.approx(184 * 6.75, rel=0.35)


def test_as_2d_slices_foreground_plus_share_of_empty(msd: Path):
    cfg = MSDConfig(root=msd, split=QUARTERS, as_2d=True, slice_size=32, empty_slices=0.0)
    assert cfg.spatial_dims == 2 and cfg.image_size == 32
    level = build_msd(cfg)
    for split in _all(level):
        assert split.images.shape == (4, 1, 32, 32) and split.masks.shape == (4, 1, 32, 32)
        assert [i.split("_z")[1] for i in split.ids] == ["003", "004", "005", "006"]
        assert all(m.any() for m in split.masks)
        assert split.spacing == (1.5, 1.5)
    everything = build_msd(cfg.model_copy(update={"empty_slices": 1.0}))
    assert len(everything.train) == SHAPE[2]
    half = build_msd(cfg.model_copy(update={"empty_slices": 0.5}))
    assert len(half.train) == 4 + 4  # 8 empty slices, half kept


def test_different_shapes_give_per_volume_tuples(tmp_path: Path):
    shapes = [(24, 24, 12), (26, 24, 12), (28, 24, 12), (30, 24, 12), (24, 26, 12)]
    root = write_msd(tmp_path / "mixed", n=5, shapes=shapes)
    level = build_msd(MSDConfig(root=root, split=SplitConfig(train=0.4, val=0.2, calib=0.2, test=0.2)))
    train = level.train
    assert not train.stacked and len(train) == 2 and isinstance(train.images, tuple)
    for i, image_id in enumerate(train.ids):
        image, mask = train.volume(i)
        assert image.shape == mask.shape == (1, *shapes[int(image_id[-1])])
    assert train.fbr.shape == (2,) and (train.fbr > 0).all()
    assert level.test.stacked  # one case: stacked


def test_multichannel_4d_images_become_channels(msd: Path):
    for i in range(4):
        path = msd / "imagesTr" / f"case_{i}.nii.gz"
        image = np.asarray(nib.load(path).dataobj)
        _save(path, np.stack([image, -image], axis=-1))  # MSD stores modalities on the 4th axis
    level = build_msd(MSDConfig(root=msd, split=QUARTERS))
    assert level.train.images.shape == (1, 2, *SHAPE)
    # Each channel is scaled on its own: the negated channel is the mirror image in [0, 1].
    np.testing.assert_allclose(level.train.images[0, 1], 1.0 - level.train.images[0, 0], atol=1e-5)


def test_max_cases_takes_the_first_listed(tmp_path: Path):
    root = write_msd(tmp_path / "six", n=6)
    level = build_msd(MSDConfig(root=root, split=QUARTERS, max_cases=4))
    assert sorted(i for s in _all(level) for i in s.ids) == ["case_0", "case_1", "case_2", "case_3"]


def test_check_passes_and_registry_entry(msd: Path):
    assert check_msd(MSDConfig(root=msd)) is None
    entry = DATASETS["msd"]
    assert entry.factors == {} and entry.config is MSDConfig and entry.check is check_msd
    assert MSDConfig(root=msd).spatial_dims == 3 and MSDConfig(root=msd).image_size is None


def test_native_spacing_must_agree_unless_resampled(msd: Path):
    path = msd / "imagesTr" / "case_2.nii.gz"
    for kind in ("imagesTr", "labelsTr"):
        p = msd / kind / "case_2.nii.gz"
        _save(p, np.asarray(nib.load(p).dataobj), np.diag([1.0, 1.0, 3.0, 1.0]))
    with pytest.raises(SegstudyError, match="set data.spacing") as info:
        check_msd(MSDConfig(root=msd))
    assert str(path) in str(info.value)
    assert build_msd(MSDConfig(root=msd, split=QUARTERS, spacing=(3.0, 3.0, 3.0))).train.spacing == (3.0, 3.0, 3.0)


# --- bad input: one line naming the file -----------------------------------------------------


def _expect_error(cfg: MSDConfig, names: str | Path, match: str) -> None:
    for fn in (check_msd, build_msd):
        with pytest.raises(SegstudyError, match=match) as info:
            fn(cfg)
        message = str(info.value)
        assert str(names) in message and "\n" not in message


def _edit_json(root: Path, edit) -> None:
    raw = json.loads((root / "dataset.json").read_text())
    edit(raw)
    (root / "dataset.json").write_text(json.dumps(raw))


def test_missing_dataset_json(msd: Path):
    (msd / "dataset.json").unlink()
    _expect_error(MSDConfig(root=msd), msd / "dataset.json", "not found")


def test_invalid_json(msd: Path):
    (msd / "dataset.json").write_text('{"labels": {"0": "background",')
    _expect_error(MSDConfig(root=msd), msd / "dataset.json", "not valid JSON")


def test_json_missing_keys(msd: Path):
    _edit_json(msd, lambda raw: raw.pop("training"))
    _expect_error(MSDConfig(root=msd), msd / "dataset.json", "needs the keys 'labels' and 'training'")


def test_listed_file_missing(msd: Path):
    (msd / "labelsTr" / "case_1.nii.gz").unlink()
    _expect_error(MSDConfig(root=msd), (msd / "labelsTr" / "case_1.nii.gz").resolve(), "file not found")


@pytest.mark.parametrize("damage", ["not nifti", "not gzip", "truncated"])
def test_corrupt_nifti(msd: Path, damage):
    path = msd / "imagesTr" / "case_0.nii.gz"
    content = {
        "not nifti": gzip.compress(b"this is not a nifti file"),
        "not gzip": b"plain bytes",
        "truncated": path.read_bytes()[: path.stat().st_size // 2],  # header fine, voxel data cut
    }[damage]
    path.write_bytes(content)
    _expect_error(MSDConfig(root=msd), path.resolve(), "cannot read as NIfTI")


def test_shape_mismatch(msd: Path):
    _save(msd / "labelsTr" / "case_1.nii.gz", np.ones((24, 24, 10), dtype=np.uint8))
    _expect_error(MSDConfig(root=msd), (msd / "labelsTr" / "case_1.nii.gz").resolve(), "does not match image shape")


def test_affine_mismatch(msd: Path):
    shifted = AFFINE.copy()
    shifted[0, 3] = 0.5  # half a millimetre off: not the same grid
    path = msd / "labelsTr" / "case_2.nii.gz"
    _save(path, _box_label(2), shifted)
    _expect_error(MSDConfig(root=msd), path.resolve(), "affine differs")


def test_tiny_affine_difference_is_tolerated(msd: Path):
    nudged = AFFINE.copy()
    nudged[0, 3] = 1e-5
    _save(msd / "labelsTr" / "case_2.nii.gz", _box_label(2), nudged)
    check_msd(MSDConfig(root=msd))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_image(msd: Path, bad):
    path = msd / "imagesTr" / "case_0.nii.gz"
    image = _image(0, _box_label(0))
    image[3, 3, 3] = bad
    _save(path, image)
    _expect_error(MSDConfig(root=msd), path.resolve(), r"holds 1 non-finite voxel\(s\)")


def test_label_without_selected_structure(msd: Path):
    path = msd / "labelsTr" / "case_1.nii.gz"
    _save(path, np.where(_box_label(1) == 2, 0, _box_label(1)).astype(np.uint8))
    _expect_error(MSDConfig(root=msd, label="tumour"), path.resolve(), "no voxel has label 2")


@pytest.mark.parametrize("escape", ["../outside.nii.gz", "./imagesTr/../../outside.nii.gz", "absolute"])
def test_path_leaving_the_root(msd: Path, escape):
    outside = msd.parent / "outside.nii.gz"
    _save(outside, _image(0, _box_label(0)))
    given = str(outside) if escape == "absolute" else escape
    _edit_json(msd, lambda raw: raw["training"][1].update(image=given))
    expected = "is absolute" if escape == "absolute" else "leaves the dataset root"
    _expect_error(MSDConfig(root=msd), msd / "dataset.json", expected)


def test_symlink_out_of_the_root(msd: Path):
    outside = msd.parent / "outside.nii.gz"
    _save(outside, _image(0, _box_label(0)))
    (msd / "imagesTr" / "link.nii.gz").symlink_to(outside)
    _edit_json(msd, lambda raw: raw["training"][0].update(image="./imagesTr/link.nii.gz"))
    _expect_error(MSDConfig(root=msd), msd / "dataset.json", "leaves the dataset root")


def test_unknown_label_name_suggests(msd: Path):
    _expect_error(MSDConfig(root=msd, label="splen"), msd / "dataset.json", "did you mean 'spleen'")


def test_label_value_not_listed(msd: Path):
    _expect_error(MSDConfig(root=msd, label=5), msd / "dataset.json", r"accepted: 1 \(spleen\), 2 \(tumour\)")
    _expect_error(MSDConfig(root=msd, label=0), msd / "dataset.json", "not a foreground label")


def test_missing_root_names_it(tmp_path: Path):
    _expect_error(MSDConfig(root=tmp_path / "nope"), tmp_path / "nope", "dataset root folder not found")


def test_label_values_not_declared_in_dataset_json_are_refused(msd: Path):
    """A label file holding a value dataset.json does not name is a mislabelled case, not background."""
    label = _box_label(2)
    label[0, 0, 0] = 7
    _save(msd / "labelsTr" / "case_2.nii.gz", label)
    for fn in (check_msd, build_msd):
        with pytest.raises(SegstudyError, match=r"case_2.nii.gz: label value\(s\) 7 not declared in dataset.json"):
            fn(MSDConfig(root=msd, split=QUARTERS))


# --- channels: every case alike, and as dataset.json declares ---------------------------------


def _two_channels(path: Path) -> None:
    image = np.asarray(nib.load(path).dataobj)
    _save(path, np.stack([image, -image], axis=-1))


def test_cases_with_different_channel_counts_are_refused(msd: Path):
    """One 2-channel case among 1-channel ones would fail every trial that meets it (the network is
    built for the first case's channels): refused by the check validate runs, naming both."""
    _two_channels(msd / "imagesTr" / "case_2.nii.gz")
    path = (msd / "imagesTr" / "case_2.nii.gz").resolve()
    _expect_error(MSDConfig(root=msd), path, r"2 channel\(s\), but case_\d.nii.gz has 1; every case")


@pytest.mark.parametrize("key", ["modality", "channel_names"])
def test_channels_must_match_dataset_json(msd: Path, key):
    _edit_json(msd, lambda raw: raw.update({key: {"0": "T2", "1": "ADC"}}))
    images = (msd / "imagesTr").resolve()  # check and build meet the cases in different orders
    _expect_error(MSDConfig(root=msd), images, r"case_\d.nii.gz: 1 channel\(s\), but .*dataset.json declares 2 \(T2, ADC\)")
    for i in range(4):
        _two_channels(msd / "imagesTr" / f"case_{i}.nii.gz")
    assert check_msd(MSDConfig(root=msd)) is None


def test_malformed_modality_table(msd: Path):
    _edit_json(msd, lambda raw: raw.update({"modality": {"1": "CT"}}))
    _expect_error(MSDConfig(root=msd), msd / "dataset.json", "'modality' must map channel indices 0..N-1 to names")


# --- NIfTI headers decide allocations: checked before reading ---------------------------------


def with_claimed_dims(path: Path, dims: list[int]) -> None:
    """Rewrite the header's dim field (the shape every reader allocates) of a gzipped NIfTI."""
    raw = bytearray(gzip.decompress(path.read_bytes()))
    for i, value in enumerate(dims):
        raw[40 + 2 * i : 42 + 2 * i] = int(value).to_bytes(2, "little", signed=True)
    path.write_bytes(gzip.compress(bytes(raw)))


@pytest.mark.parametrize(
    ("dims", "match"),
    [([3, 3000, 3000, 3000], r"the header claims 3000 x 3000 x 3000 = 2.7e\+10 voxels \(100.6 GiB as float32\); "
                              r"the limit is 1073741824 voxels \(4 GiB\)"),
     ([3, 0, 24, 12], r"the header claims shape 0 x 24 x 12; every dimension must be at least 1"),
     ([3, -24, 24, 12], r"the header claims shape -24 x 24 x 12")],
)
def test_header_sizes_are_checked_before_any_allocation(msd: Path, dims, match):
    path = msd / "imagesTr" / "case_1.nii.gz"
    with_claimed_dims(path, dims)
    _expect_error(MSDConfig(root=msd), path.resolve(), match)


def test_non_finite_label_map_is_named_as_such(msd: Path):
    path = msd / "labelsTr" / "case_1.nii.gz"
    label = _box_label(1).astype(np.float32)
    label[0, 0, 0] = np.nan
    _save(path, label)
    _expect_error(MSDConfig(root=msd), path.resolve(), r"label map holds 1 non-finite voxel\(s\) \(NaN or inf; first at index \(0, 0, 0\)\)")
