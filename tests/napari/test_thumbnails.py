"""Thumbnails and class colours: plain functions, no Qt."""

import numpy as np
import pytest

from napari_ktal._napari.palette import (
    THEME_BACKGROUNDS,
    UNLABELED,
    _palette,
    class_color,
    class_colors,
    contrast_ratio,
    srgb_to_lab,
    text_color_on,
)
from napari_ktal._napari.thumbnails import (
    ThumbnailCache,
    ThumbnailChunk,
    ThumbSettings,
    thumbnail,
    thumbnail_job,
)
from napari_ktal._napari.volume_view import gap_pixels, mosaic, view_data
from napari_ktal.core.loop.session import MAX_KEYED_CLASSES
from napari_ktal.core.progress import RunContext

MIN_DELTA_E = 20.0  # CIE76: clearly different colours side by side (tab10's closest pair: 27.7)


def _blob(box=32, dark=True):
    z, y, x = np.mgrid[:box, :box, :box] - box / 2
    v = np.exp(-(x**2 + y**2 + z**2) / 20.0).astype(np.float32)
    return -v if dark else v  # protein is dark in raw data


def test_a_thumbnail_shows_the_particle_bright_in_both_modes():
    rng = np.random.default_rng(0)
    v = _blob() + 0.05 * rng.normal(size=(32, 32, 32)).astype(np.float32)
    for mode in ("projection", "slice"):
        img = thumbnail(v, ThumbSettings(mode=mode))
        assert img.shape == (32, 32) and img.dtype == np.uint8
        assert img[16, 16] > 200 and img[2, 2] < 80
    assert not np.array_equal(thumbnail(v, ThumbSettings("projection")), thumbnail(v, ThumbSettings("slice")))
    flat = thumbnail(np.zeros((16, 16, 16), np.float32))
    assert flat.shape == (16, 16)  # a constant volume does not divide by zero


def test_thumbnail_job_delivers_chunks_and_stops_when_asked():
    class Pool:
        def read(self, idx):
            return np.stack([_blob(16) * (1 + i) for i in idx])

    got = []
    settings = ThumbSettings("slice", 0.0, False)
    assert thumbnail_job(Pool(), range(5), settings, RunContext(got.append), chunk=2) == settings
    assert [sorted(c.images) for c in got] == [[0, 1], [2, 3], [4]]
    cache = ThumbnailCache()
    for c in got:
        cache.add(c)
    assert cache.missing(settings, [4, 5, 5, 6]) == [5, 6] and cache.get(settings, 3) is not None
    assert cache.get(ThumbSettings(), 3) is None  # another setting: not made yet
    import pytest

    from napari_ktal.core.errors import Cancelled
    with pytest.raises(Cancelled):
        thumbnail_job(Pool(), range(5), settings, RunContext(should_stop=lambda: True))
    assert isinstance(got[0], ThumbnailChunk)


def test_the_panels_mosaic_is_the_projection_and_three_slices():
    v = _blob()
    data = view_data(v)
    img = mosaic(data)
    g = gap_pixels(32)
    assert img.shape == (64 + g, 64 + g) and img.dtype == np.float32
    assert img.min() >= 0 and img.max() <= 1 and np.all(img[:, 32:32 + g] == 0)  # the gap
    out = np.full_like(img, 7.0)
    assert mosaic(data, out=out) is out and np.array_equal(out, img)  # in place, same numbers


def test_one_palette_for_any_number_of_classes():
    many = [class_color(k) for k in range(70)]
    assert len(set(many)) == 70 and all(c.startswith("#") and len(c) == 7 for c in many)
    assert class_colors(["a", "b"]) == {"a": many[0], "b": many[1]}
    assert class_color(-1) == UNLABELED
    assert text_color_on("#ffffff") == "#000000" and text_color_on("#1f77b4") == "#ffffff"


def _lab(colors: list[str]) -> np.ndarray:
    """CIELAB by scikit-image (napari's dependency): a second opinion on the palette's own conversion."""
    from skimage.color import rgb2lab

    rgb = np.array([[int(c[i:i + 2], 16) / 255 for i in (1, 3, 5)] for c in colors])
    return rgb2lab(rgb[None])[0]


def test_the_31_keyed_classes_differ_pairwise_and_from_unlabeled_and_the_themes():
    """The old palette (tab10, then golden-angle hues) had classes 9 and 19 at Delta E 2 and 11/12 close
    to 2/10; a palette for many categories keeps every pair of the 31 keyed classes apart."""
    colors = [class_color(k) for k in range(MAX_KEYED_CLASSES)]
    lab = _lab(colors)
    distance = np.linalg.norm(lab[:, None] - lab[None], axis=-1)
    np.fill_diagonal(distance, np.inf)
    i, j = np.unravel_index(np.argmin(distance), distance.shape)
    assert distance[i, j] > MIN_DELTA_E, f"classes {i + 1} and {j + 1}: {colors[i]} {colors[j]}"
    others = _lab([UNLABELED, *THEME_BACKGROUNDS])
    assert np.linalg.norm(lab[:, None] - others[None], axis=-1).min() > MIN_DELTA_E
    np.testing.assert_allclose(srgb_to_lab(np.array([[0.2, 0.5, 0.9], [1, 1, 1]])),
                               _lab(["#3380e6", "#ffffff"]), atol=0.5)
    assert [class_color(k) for k in range(5)] == list(_palette(256)[:5])  # more classes: the first keep theirs


def test_text_on_every_class_colour_meets_wcag_aa():
    """Black or white text on a class colour (the gallery's label chips): the old brightness rule put white
    on bright green at 1.5:1."""
    ratios = [contrast_ratio(text_color_on(class_color(k)), class_color(k)) for k in range(MAX_KEYED_CLASSES)]
    assert min(ratios) >= 4.5
    assert contrast_ratio("#000000", "#ffffff") == pytest.approx(21.0)
    assert contrast_ratio("#777777", "#777777") == 1.0
