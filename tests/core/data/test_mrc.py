"""Reading and validating subtomograms: napari_ktal.core.data.mrc and labels_csv.

Every MRC file is generated here with mrcfile/numpy; nothing binary is committed.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import mrcfile
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from mrcfile.dtypes import HEADER_DTYPE
from mrcfiles import RNG, noise, poke, write_mrc

from napari_ktal.core.data import mrc as volumes
from napari_ktal.core.data.mrc import (
    VolumeRef,
    find_volumes,
    inspect_mrc,
    iter_volumes,
    normalize,
    read_labels_csv,
    read_volumes,
    voxel_size,
)
from napari_ktal.core.errors import InputError, InputWarning

# ------------------------------------------------------------------------- helpers


def write_csv(path: Path, text: str, bom: bool = False) -> Path:
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    return path


def raises_input_error(match_words: list[str], path: Path, func, *args) -> InputError:
    """Call ``func(*args)``; it must raise InputError naming ``path`` and every word."""
    with pytest.raises(InputError) as caught:
        func(*args)
    message = str(caught.value)
    assert path.name in message, message
    for word in match_words:
        assert word in message, message
    assert "\n" not in message
    return caught.value


# --------------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    ("dtype", "mode"),
    [(np.int8, 0), (np.int16, 1), (np.float32, 2), (np.uint16, 6), (np.float16, 12)],
)
def test_round_trip_each_mode(tmp_path, dtype, mode):
    data = (RNG.standard_normal((8, 8, 8)) * 50 + (100 if dtype == np.uint16 else 0)).astype(dtype)
    path = write_mrc(tmp_path / "sub.mrc", data)

    info = inspect_mrc(path)
    out = read_volumes(path)

    assert (info.path, info.n_volumes, info.box, info.mode) == (path.resolve(), 1, 8, mode)
    assert out.dtype == np.float32 and out.shape == (1, 8, 8, 8)
    np.testing.assert_array_equal(out[0], data.astype(np.float32))


def test_big_endian_float32(tmp_path):
    data = noise(16, 16, 16)
    path = write_mrc(tmp_path / "big.mrc", data.astype(">f4"))
    with mrcfile.open(path, header_only=True) as mrc:
        assert mrc.header.mode.dtype.byteorder == ">"  # the file really is big-endian

    out = read_volumes(path)

    assert inspect_mrc(path).mode == 2
    assert out.dtype == np.float32 and out.dtype.isnative
    np.testing.assert_array_equal(out[0], data)


def test_volume_stack(tmp_path):
    data = noise(3, 8, 8, 8)
    path = write_mrc(tmp_path / "stack.mrcs", data)

    info = inspect_mrc(path)
    refs = find_volumes(path)
    pairs = list(iter_volumes(refs[::-1]))

    assert (info.n_volumes, info.box) == (3, 8)
    np.testing.assert_array_equal(read_volumes(path), data)
    assert refs == [VolumeRef(path.resolve(), k) for k in range(3)]
    assert [ref.frame for ref, _ in pairs] == [2, 1, 0]
    for ref, volume in pairs:
        np.testing.assert_array_equal(volume, data[ref.frame])
    assert refs[1].label_key(tmp_path) == "2@stack.mrcs"


def test_voxel_size_zyx(tmp_path):
    path = write_mrc(tmp_path / "a.mrc", noise(8, 8, 8), voxel_xyz=(1.5, 2.0, 2.5))
    assert voxel_size(path) == pytest.approx((2.5, 2.0, 1.5))
    assert inspect_mrc(path).voxel_size == pytest.approx((2.5, 2.0, 1.5))


def test_unset_voxel_size_is_one_without_warnings(tmp_path):
    path = write_mrc(tmp_path / "a.mrc", noise(8, 8, 8))
    poke(path, "mx", 0)  # cella / mx would divide by zero
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert voxel_size(path) == (1.0, 1.0, 1.0)


def test_label_key(tmp_path):
    ref = VolumeRef((tmp_path / "sub" / "a.mrc").resolve(), None)
    assert ref.label_key(tmp_path) == "sub/a.mrc"
    assert VolumeRef(ref.path, 0).label_key(tmp_path / "sub") == "1@a.mrc"
    with pytest.raises(ValueError):
        VolumeRef(ref.path, -1)


# ------------------------------------------------------------------- bad MRC files


def _random_bytes(p: Path) -> None:
    p.write_bytes(RNG.integers(0, 256, 4096, dtype=np.uint8).tobytes())


def _short_text(p: Path) -> None:
    p.write_text("path,label\nsub_001.mrc,ribosome\n")


def _long_text(p: Path) -> None:
    p.write_text("this is a text file, not a subtomogram\n" * 100)


def _truncated(p: Path) -> None:
    write_mrc(p, noise(16, 16, 16))
    p.write_bytes(p.read_bytes()[:-100])


def _huge_extended_header(p: Path) -> None:
    write_mrc(p, noise(8, 8, 8))
    poke(p, "nsymbt", 2**31 - 1)  # mrcfile would allocate 2 GiB for this


def _field(name: str, value: int, data: np.ndarray | None = None):
    def make(p: Path) -> None:
        write_mrc(p, noise(8, 8, 8) if data is None else data)
        poke(p, name, value)

    return make


def _data(array: np.ndarray):
    return lambda p: write_mrc(p, array)


def _with(value: float) -> np.ndarray:
    array = noise(8, 8, 8)
    array[1, 2, 3] = value
    return array


@pytest.mark.parametrize(
    ("make", "words"),
    [
        pytest.param(_random_bytes, ["not an MRC file"], id="random-bytes"),
        pytest.param(_short_text, ["not an MRC file"], id="short-text"),
        pytest.param(_long_text, ["not an MRC file"], id="long-text"),
        pytest.param(_truncated, ["truncated"], id="truncated"),
        pytest.param(_huge_extended_header, ["truncated"], id="huge-nsymbt"),
        pytest.param(_field("nx", -8), ["corrupt header", "nx=-8"], id="nx-negative"),
        pytest.param(_field("nz", 0), ["corrupt header", "nz=0"], id="nz-zero"),
        pytest.param(_field("ny", 2**30), ["corrupt header", "ny="], id="ny-huge"),
        pytest.param(_field("mode", 99), ["corrupt header", "mode 99"], id="mode-99"),
        pytest.param(_field("mode", 3), ["complex", "mode 3"], id="mode-3-complex-int16"),
        pytest.param(
            _data(noise(8, 8, 8).astype(np.complex64)), ["complex", "mode 4"], id="mode-4-complex64"
        ),
        pytest.param(_data(noise(8, 8, 16)), ["not cubic", "8x8x16"], id="not-cubic"),
        pytest.param(_data(noise(24, 8, 8)), ["not cubic", "ispg=401"], id="stack-without-ispg"),
        pytest.param(_data(noise(12, 12, 12)), ["12", "multiple of 8"], id="side-12"),
        pytest.param(_data(noise(8, 8)), ["2D"], id="2d-image"),
        pytest.param(
            _field("mz", 0, noise(2, 8, 8, 8)), ["corrupt header", "mz=0"], id="stack-mz-zero"
        ),
        pytest.param(
            _field("mz", 5, noise(2, 8, 8, 8)),
            ["corrupt header", "mz=5"],
            id="stack-mz-not-dividing",
        ),
    ],
)
def test_bad_file_raises_input_error(tmp_path, make, words):
    path = tmp_path / "bad.mrc"
    make(path)
    raises_input_error(words, path, inspect_mrc, path)
    raises_input_error(words, path, read_volumes, path)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.mrc"
    raises_input_error(["does not exist"], path, inspect_mrc, path)


@pytest.mark.parametrize(("value", "word"), [(np.nan, "NaN"), (np.inf, "Inf"), (-np.inf, "Inf")])
def test_non_finite_values(tmp_path, value, word):
    path = write_mrc(tmp_path / "nan.mrc", _with(value))
    inspect_mrc(path)  # the header is fine
    raises_input_error([word], path, read_volumes, path)
    raises_input_error([word], path, lambda p: list(iter_volumes(find_volumes(p))), path)


def test_non_finite_names_the_frame(tmp_path):
    data = noise(3, 8, 8, 8)
    data[1, 4, 4, 4] = np.nan
    path = write_mrc(tmp_path / "stack.mrcs", data)
    raises_input_error(["NaN", "frame 2 of 3"], path, read_volumes, path)
    (first,) = iter_volumes([VolumeRef(path.resolve(), 0)])  # frame 1 itself is fine
    np.testing.assert_array_equal(first[1], data[0])


def test_frame_out_of_range(tmp_path):
    path = write_mrc(tmp_path / "stack.mrcs", noise(2, 8, 8, 8))
    raises_input_error(
        ["frame 3", "out of range"],
        path,
        lambda r: list(iter_volumes(r)),
        [VolumeRef(path.resolve(), 2)],
    )


# ---------------------------------------------------------- permissive reading


@pytest.mark.parametrize(
    ("field", "value", "what"),
    [
        ("map", b"\0\0\0\0", "Map ID"),
        ("machst", b"\0\0\0\0", "machine stamp"),
    ],
)
def test_slightly_off_header_is_read_with_one_warning(tmp_path, field, value, what):
    data = noise(8, 8, 8)
    path = write_mrc(tmp_path / "off.mrc", data)
    poke(path, field, value)

    with pytest.warns(InputWarning) as record:
        out = read_volumes(path)

    assert len(record) == 1
    message = str(record[0].message)
    assert path.name in message and what in message
    np.testing.assert_array_equal(out[0], data)
    with pytest.warns(InputWarning):
        ((_, volume),) = iter_volumes(find_volumes(path))
    np.testing.assert_array_equal(volume, data)


def test_wrong_machine_stamp_byte_order_is_fixed_permissively(tmp_path):
    data = noise(8, 8, 8)
    path = write_mrc(tmp_path / "swapped.mrc", data.astype(">f4"))
    poke(path, "machst", b"\x44\x44\x00\x00")  # claims little-endian

    with pytest.warns(InputWarning, match="swapped.mrc.*[Mm]achine stamp"):
        out = read_volumes(path)

    np.testing.assert_array_equal(out[0], data)


def test_trailing_bytes_warn(tmp_path):
    data = noise(8, 8, 8)
    path = write_mrc(tmp_path / "long.mrc", data)
    path.write_bytes(path.read_bytes() + bytes(64))
    with pytest.warns(InputWarning, match="64 bytes"):
        np.testing.assert_array_equal(read_volumes(path)[0], data)


def test_clean_file_gives_no_warning(tmp_path):
    path = write_mrc(tmp_path / "clean.mrc", noise(8, 8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_volumes(path)
        list(iter_volumes(find_volumes(path)))


# ----------------------------------------------------------------------- normalize


def test_normalize():
    volume = noise(8, 8, 8) * 7 + 3
    out = normalize(volume)
    assert out.dtype == np.float32
    assert abs(float(out.mean())) < 1e-5 and abs(float(out.std()) - 1) < 1e-5


def test_normalize_keeps_tiny_but_real_signal():
    out = normalize(noise(8, 8, 8) * 1e-20)
    assert abs(float(out.std()) - 1) < 1e-4


@pytest.mark.parametrize(
    "volume",
    [
        np.zeros((8, 8, 8), np.float32),
        np.full((8, 8, 8), 1234.5, np.float32),
        np.float32(1000) + np.float32(6.1e-5) * (noise(8, 8, 8) > 0),  # one float32 step apart
    ],
)
def test_normalize_constant_volume(tmp_path, volume):
    path = tmp_path / "flat.mrc"
    raises_input_error(["constant"], path, normalize, volume, path)


# ------------------------------------------------------------------ find_volumes


def test_find_volumes_in_folder(tmp_path):
    for name in ["sub_10.mrc", "sub_2.MRC", "sub_1.map", ".hidden.mrc"]:
        write_mrc(tmp_path / name, noise(8, 8, 8))
    (tmp_path / "notes.txt").write_text("not a volume")
    write_mrc(tmp_path / "stack.mrcs", noise(2, 8, 8, 8))
    write_mrc(tmp_path / "nested" / "sub_0.mrc", noise(8, 8, 8))

    refs = find_volumes(tmp_path)

    keys = [r.label_key(tmp_path) for r in refs]
    assert keys == ["1@stack.mrcs", "2@stack.mrcs", "sub_1.map", "sub_2.MRC", "sub_10.mrc"]
    assert all(r.path.is_absolute() for r in refs)
    assert [v.shape for _, v in iter_volumes(refs)] == [(8, 8, 8)] * 5


def test_find_volumes_empty_folder(tmp_path):
    (tmp_path / "readme.txt").write_text("no volumes here")
    error = raises_input_error(
        ["no volume files", ".mrc", ".mrcs", ".map", ".rec"], tmp_path, find_volumes, tmp_path
    )
    assert error.path == tmp_path.resolve()


def test_find_volumes_mixed_boxes(tmp_path):
    write_mrc(tmp_path / "a_1.mrc", noise(8, 8, 8))
    write_mrc(tmp_path / "a_2.mrc", noise(8, 8, 8))
    write_mrc(tmp_path / "a_3.mrc", noise(16, 16, 16))
    raises_input_error(
        ["a_3.mrc", "16", "8", "a_1.mrc"], tmp_path / "a_3.mrc", find_volumes, tmp_path
    )


def test_find_volumes_missing_and_wrong_kind(tmp_path):
    raises_input_error(["does not exist"], tmp_path / "gone", find_volumes, tmp_path / "gone")
    (tmp_path / "x.txt").write_text("hello")
    raises_input_error(["neither"], tmp_path / "x.txt", find_volumes, tmp_path / "x.txt")


# --------------------------------------------------------------------- labels CSV


@pytest.fixture
def dataset(tmp_path) -> Path:
    write_mrc(tmp_path / "a.mrc", noise(8, 8, 8))
    write_mrc(tmp_path / "sub" / "b.mrc", noise(8, 8, 8))
    write_mrc(tmp_path / "stack.mrcs", noise(3, 8, 8, 8))
    return tmp_path


@pytest.mark.parametrize("bom", [False, True])
def test_labels_csv(dataset, bom):
    csv_path = write_csv(
        dataset / "labels.csv",
        "id, Path ,label,score\n1,a.mrc,ribosome,0.9\n\n2,sub/b.mrc,empty,\n"
        f"3,3@stack.mrcs,proteasome,\n4,1@{dataset / 'stack.mrcs'},ribosome,\n",
        bom=bom,
    )
    root = dataset.resolve()

    pairs = read_labels_csv(csv_path)

    assert pairs == [
        (VolumeRef(root / "a.mrc", None), "ribosome"),
        (VolumeRef(root / "sub" / "b.mrc", None), "empty"),
        (VolumeRef(root / "stack.mrcs", 2), "proteasome"),
        (VolumeRef(root / "stack.mrcs", 0), "ribosome"),
    ]
    assert find_volumes(csv_path) == [ref for ref, _ in pairs]


def test_labels_csv_round_trips_label_keys(dataset):
    refs = find_volumes(dataset / "stack.mrcs") + find_volumes(dataset / "sub")
    lines = "".join(f"{ref.label_key(dataset)},x\n" for ref in refs)
    csv_path = write_csv(dataset / "keys.csv", "path,label\n" + lines)
    assert [ref for ref, _ in read_labels_csv(csv_path)] == refs


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("file,class\na.mrc,x\n", ["line 1", "'path' or 'label'", "file, class"]),
        ("path,class\na.mrc,x\n", ["'label'", "found columns: path, class"]),
        ("", ["'path' or 'label'", "none"]),
        ("path,label\n", ["no labelled rows"]),
        ("path,label\na.mrc,\n", ["line 2", "empty label"]),
        ("path,label\na.mrc,x\nmissing.mrc,y\n", ["line 3", "missing.mrc", "does not exist"]),
        ("path,label\n../outside.mrc,x\n", ["line 2", "outside"]),
        ("path,label\nsub/../../outside.mrc,x\n", ["line 2", "outside"]),
        ("path,label\na.mrc,x\nsub/b.mrc,y\n./a.mrc,z\n", ["line 4", "'z'", "'x'", "line 2"]),
        ("path,label\nstack.mrcs,x\n", ["line 2", "stack of 3", "k@file"]),
        ("path,label\n4@stack.mrcs,x\n", ["line 2", "frame 4"]),
        ("path,label\n0@stack.mrcs,x\n", ["line 2", "frame 0"]),
        ("path,label\n2@a.mrc,x\n", ["line 2", "frame 2"]),
        ("path,label\nbad.mrc,x\n", ["line 2", "bad.mrc", "not an MRC file"]),
    ],
)
def test_labels_csv_errors(dataset, text, words):
    write_mrc(dataset.parent / "outside.mrc", noise(8, 8, 8))
    (dataset / "bad.mrc").write_text("not a volume\n" * 100)
    csv_path = write_csv(dataset / "labels.csv", text)
    raises_input_error(words, csv_path, read_labels_csv, csv_path)


def test_labels_csv_absolute_path_outside_tree(dataset):
    outside = write_mrc(dataset.parent / "elsewhere" / "c.mrc", noise(8, 8, 8))
    csv_path = write_csv(dataset / "labels.csv", f"path,label\n{outside},x\n")
    raises_input_error(["line 2", "outside"], csv_path, read_labels_csv, csv_path)


def test_labels_csv_same_label_twice_warns_and_keeps_one(dataset):
    csv_path = write_csv(dataset / "labels.csv", "path,label\na.mrc,x\n1@stack.mrcs,y\n./a.mrc,x\n")
    with pytest.warns(InputWarning, match="line 4 repeats line 2"):
        pairs = read_labels_csv(csv_path)
    assert [label for _, label in pairs] == ["x", "y"]


def test_labels_csv_not_utf8(dataset):
    csv_path = dataset / "labels.csv"
    csv_path.write_bytes("path,label\na.mrc,caf\xe9\n".encode("latin-1"))
    raises_input_error(["UTF-8"], csv_path, read_labels_csv, csv_path)


# ---------------------------------------------------------------- iter_volumes I/O


def test_iter_volumes_opens_each_run_of_a_file_once(dataset, monkeypatch):
    opened: list[str] = []
    real_mmap = mrcfile.mmap

    def counting_mmap(name, *args, **kwargs):
        opened.append(Path(name).name)
        return real_mmap(name, *args, **kwargs)

    monkeypatch.setattr(volumes.mrcfile, "mmap", counting_mmap)
    stack, single = find_volumes(dataset / "stack.mrcs"), find_volumes(dataset / "a.mrc")

    out = list(iter_volumes(stack + single + stack[:1]))

    assert opened == ["stack.mrcs", "a.mrc", "stack.mrcs"]
    assert [ref for ref, _ in out] == stack + single + stack[:1]


# ------------------------------------------------------------------ property test


def _valid_file_bytes(data: np.ndarray, tmp_path: Path) -> bytes:
    return write_mrc(tmp_path / "base.mrc", data).read_bytes()


_INTERESTING = [0, 1, -1, 2, 3, 4, 8, 12, 16, 99, 101, 401, 2**31 - 1, -(2**31)]
_INT_FIELDS = ["nx", "ny", "nz", "mode", "mx", "my", "mz", "ispg", "nsymbt", "mapc"]

mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 223), st.integers(0, 7)),  # 224+: text labels
    st.tuples(st.just("byte"), st.integers(0, 223), st.integers(0, 255)),
    st.tuples(st.just("field"), st.sampled_from(_INT_FIELDS), st.sampled_from(_INTERESTING)),
    st.tuples(st.just("cut"), st.integers(0, 5000), st.just(0)),
)


def _mutate(raw: bytes, ops) -> bytes:
    buf = bytearray(raw)
    for kind, where, value in ops:
        if kind == "flip" and where < len(buf):
            buf[where] ^= 1 << value
        elif kind == "byte" and where < len(buf):
            buf[where] = value
        elif kind == "field":
            dtype, offset = HEADER_DTYPE.fields[where][:2]
            buf[offset : offset + 4] = np.array(value, dtype=dtype).tobytes()
        elif kind == "cut":
            del buf[where:]
    return bytes(buf)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(stack=st.booleans(), ops=st.lists(mutation, min_size=1, max_size=4))
def test_mutated_files_give_data_or_input_error(tmp_path, stack, ops):
    data = noise(2, 8, 8, 8) if stack else noise(8, 8, 8)
    path = tmp_path / "mutant.mrc"
    path.write_bytes(_mutate(_valid_file_bytes(data, tmp_path), ops))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            info = inspect_mrc(path)
            out = read_volumes(path)
        except InputError as error:
            assert path.name in str(error)
            event(f"InputError: {error.problem.split(':')[0]}")
            return
    event("read")
    assert info.box % 8 == 0 and info.box >= 8
    assert out.shape == (info.n_volumes, info.box, info.box, info.box)
    assert out.dtype == np.float32 and np.isfinite(out).all()
