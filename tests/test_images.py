"""Every image a user may have loads as upright 8-bit RGB; bad files give clear errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cnnlab.errors import ImageError
from cnnlab.images import expand_paths, load_image, to_rgb


def _gradient(w=40, h=30):
    x = np.linspace(0, 255, w, dtype=np.float64)
    y = np.linspace(0, 255, h, dtype=np.float64)
    r = np.tile(x, (h, 1))
    g = np.tile(y[:, None], (1, w))
    b = 255 - r
    return np.stack([r, g, b], -1).round().astype(np.uint8)


@pytest.mark.parametrize("fmt,suffix", [("JPEG", ".jpg"), ("PNG", ".png"), ("GIF", ".gif"), ("BMP", ".bmp"),
                                        ("TIFF", ".tif"), ("WEBP", ".webp")])
def test_formats_load_as_rgb(tmp_path, fmt, suffix):
    arr = _gradient()
    path = tmp_path / f"img{suffix}"
    Image.fromarray(arr).save(path, format=fmt)
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (40, 30)
    if fmt in ("PNG", "BMP", "TIFF"):  # lossless: exact pixels
        assert np.array_equal(np.asarray(img), arr)
    else:  # lossy or palette: close
        assert np.abs(np.asarray(img).astype(int) - arr).mean() < 25


def test_grayscale_and_palette(tmp_path):
    gray = Image.fromarray(np.full((8, 8), 77, np.uint8), mode="L")
    gray.save(tmp_path / "g.png")
    assert np.all(np.asarray(load_image(tmp_path / "g.png")) == 77)
    pal = Image.fromarray(_gradient()).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.save(tmp_path / "p.png")
    out = load_image(tmp_path / "p.png")
    assert out.mode == "RGB" and np.array_equal(np.asarray(out), np.asarray(pal.convert("RGB")))


def test_rgba_and_la_composited_on_white(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200  # red, but...
    rgba[:2, :, 3] = 0  # top half fully transparent
    rgba[2:, :, 3] = 255  # bottom half opaque
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = np.asarray(load_image(tmp_path / "a.png"))
    assert np.all(out[:2] == 255)  # white background shows through
    assert np.all(out[2:] == [200, 0, 0])
    la = np.zeros((4, 4, 2), np.uint8)
    la[..., 0] = 10
    la[..., 1] = 0
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    assert np.all(np.asarray(load_image(tmp_path / "la.png")) == 255)


def test_palette_transparency(tmp_path):
    img = Image.new("P", (4, 4), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.putpixel((0, 0), 1)
    img.info["transparency"] = 0
    img.save(tmp_path / "t.gif", transparency=0)
    out = np.asarray(load_image(tmp_path / "t.gif"))
    assert tuple(out[0, 0]) == (255, 0, 0)
    assert tuple(out[1, 1]) == (255, 255, 255)


def test_cmyk(tmp_path):
    Image.new("CMYK", (5, 5), (0, 255, 255, 0)).save(tmp_path / "c.jpg")  # pure red in CMYK
    out = np.asarray(load_image(tmp_path / "c.jpg")).astype(int)
    assert out.shape == (5, 5, 3)
    assert out[..., 0].mean() > 200 and out[..., 1].mean() < 60 and out[..., 2].mean() < 60


def test_16bit_grayscale_is_scaled_not_clipped(tmp_path):
    arr = np.array([[0, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "d.png")  # a 16-bit PNG
    out = np.asarray(load_image(tmp_path / "d.png"))[0, :, 0]
    assert list(out) == [0, 128, 255]
    Image.fromarray(arr).save(tmp_path / "d.tif")
    assert list(np.asarray(load_image(tmp_path / "d.tif"))[0, :, 0]) == [0, 128, 255]


def _pgm16(path, values):
    """A 16-bit binary PGM (maxval 65535) one row high; Pillow opens these in mode ``I``."""
    data = np.asarray([values], dtype=">u2")
    path.write_bytes(b"P5\n%d 1\n65535\n" % len(values) + data.tobytes())
    return path


def test_dark_16bit_images_keep_their_range(tmp_path):
    dark = [0, 129, 1000, 2000, 3000, 4000]  # at most 4000 of 65535: a dark image
    expected = [0, 1, 4, 8, 12, 16]  # round(v / 257): same fraction of full scale, no clipping
    Image.fromarray(np.array([dark], dtype=np.uint16)).save(tmp_path / "dark.png")  # mode I;16
    assert list(np.asarray(load_image(tmp_path / "dark.png"))[0, :, 0]) == expected
    assert Image.open(_pgm16(tmp_path / "dark.pgm", dark)).mode == "I"
    assert list(np.asarray(load_image(tmp_path / "dark.pgm"))[0, :, 0]) == expected
    # a very dark mode-I image stays dark (it is not read as if it were 8-bit)
    very_dark = np.asarray(load_image(_pgm16(tmp_path / "vd.pgm", [0, 100, 200])))[0, :, 0]
    assert list(very_dark) == [0, 0, 1]
    # values beyond 16 bits (32-bit TIFF) are stretched, not clipped: distinct values stay distinct
    Image.fromarray(np.array([[0, 70000, 140000]], dtype=np.int32)).save(tmp_path / "wide.tif")
    assert list(np.asarray(load_image(tmp_path / "wide.tif"))[0, :, 0]) == [0, 128, 255]


def test_pillow_global_limits_are_restored(tmp_path, monkeypatch):
    from PIL import ImageFile

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000_000)
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    Image.fromarray(_gradient()).save(tmp_path / "ok.png")
    (tmp_path / "bad.png").write_text("not an image")
    load_image(tmp_path / "ok.png")
    with pytest.raises(ImageError):
        load_image(tmp_path / "bad.png")
    assert Image.MAX_IMAGE_PIXELS == 1_000_000_000 and ImageFile.LOAD_TRUNCATED_IMAGES is True


def test_exif_rotation_is_applied(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)  # wide image, left half white
    arr[:, :20] = 255
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    img.save(tmp_path / "r.jpg", exif=exif.tobytes(), quality=95)
    out = load_image(tmp_path / "r.jpg")
    assert out.size == (20, 40)  # shown upright: tall now
    a = np.asarray(out).astype(int)
    assert a[:20].mean() > 200 and a[20:].mean() < 60  # the white half is now on top


def test_first_frame_of_animation(tmp_path):
    frames = [Image.new("RGB", (4, 4), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert tuple(np.asarray(load_image(tmp_path / "anim.gif"))[0, 0]) == (255, 0, 0)


def test_misnamed_files_load_by_content(tmp_path):
    Image.fromarray(_gradient()).save(tmp_path / "really_png.jpg", format="PNG")
    assert load_image(tmp_path / "really_png.jpg").size == (40, 30)


@pytest.mark.parametrize("case,reason", [
    ("missing", "no such file"),
    ("empty", "empty file"),
    ("text", "not an image"),
    ("truncated", "truncated or corrupt"),
    ("folder", "is a folder"),
])
def test_bad_inputs_raise_clear_errors(tmp_path, case, reason):
    path = tmp_path / f"{case}.png"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "text":
        path.write_text("hello, I am not an image\n")
    elif case == "truncated":
        buf = io.BytesIO()
        Image.fromarray(_gradient(200, 200)).save(buf, format="PNG")
        path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    elif case == "folder":
        path.mkdir()
    with pytest.raises(ImageError) as info:
        load_image(path)
    assert reason in str(info.value) and str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_decompression_bomb_is_refused(tmp_path):
    # A tiny file that claims to be 20000x20000 pixels (400 Mpx > Pillow's 89 Mpx guard).
    path = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(path, optimize=True)
    assert path.stat().st_size < 200_000
    with pytest.raises(ImageError, match="too large"):
        load_image(path)


def test_to_rgb_keeps_rgb_untouched():
    img = Image.fromarray(_gradient())
    assert np.array_equal(np.asarray(to_rgb(img)), _gradient())


def test_expand_paths_lists_folder_images(tmp_path):
    for name in ("b.png", "a.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in expand_paths([tmp_path])] == ["a.jpg", "b.png"]
