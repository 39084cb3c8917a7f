"""Behaviour of densify.image: refusals, conversions, the RGB and (H, W) conventions."""

from __future__ import annotations

import io
import struct

import cv2
import numpy as np
import pytest
import torch
from badfiles import BAD_KEYS, GRAY_VALUE, PALETTE, RGBA_COLOR, make_bad_inputs, smooth_bgr
from PIL import Image, ImageOps

from densify.errors import ImageError
from densify.io.image import (
    IMAGE_SUFFIXES,
    SAMPLE_IMAGES,
    expand_inputs,
    read_array,
    read_image,
    resize,
    sample_image,
    to_tensor,
)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_bad_inputs(tmp_path_factory.mktemp("inputs"))


def _raises_one_line(path, **kwargs) -> str:
    with pytest.raises(ImageError) as info:
        read_image(path, **kwargs)
    message = str(info.value)
    assert path.name in message and "\n" not in message
    return message


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_input_raises_one_line_naming_the_file(inputs, key):
    _raises_one_line(inputs[key])


@pytest.mark.parametrize(("key", "words"), [
    ("missing", "no such file"), ("empty_dir", "directory"), ("zero_byte", "empty"),
    ("not_an_image", "not an image"), ("truncated_jpeg", "truncated JPEG"),
    ("truncated_png", "truncated PNG"), ("bomb_png", "100000x100000"),
])
def test_bad_input_message_names_the_problem(inputs, key, words):
    assert words in _raises_one_line(inputs[key])


def test_opencv_stays_silent_on_bad_inputs(inputs, capfd):
    for key in BAD_KEYS:
        with pytest.raises(ImageError):
            read_image(inputs[key])
    assert capfd.readouterr().err == ""


def test_max_pixels_is_checked_and_can_be_raised(inputs):
    assert "max_pixels=100" in _raises_one_line(inputs["normal_jpeg"], max_pixels=100)
    rgb = read_image(inputs["normal_jpeg"], max_pixels=48 * 64)
    np.testing.assert_array_equal(rgb, cv2.imread(str(inputs["normal_jpeg"]))[..., ::-1])


def test_bomb_without_our_limit_is_still_refused_by_opencv(inputs):
    _raises_one_line(inputs["bomb_png"], max_pixels=None)


def test_bomb_in_other_format_is_refused_from_pillows_header(tmp_path):
    path = tmp_path / "bomb.bmp"  # BITMAPINFOHEADER claiming 100000 x 100000, 24-bit
    info = struct.pack("<IiiHHIIiiII", 40, 100_000, 100_000, 1, 24, 0, 0, 0, 0, 0, 0)
    path.write_bytes(b"BM" + struct.pack("<IHHI", 14 + 40, 0, 0, 14 + 40) + info)
    assert "pixels" in _raises_one_line(path)


@pytest.mark.parametrize("cut", [2, 100])
def test_jpeg_cut_near_its_end_is_truncated(tmp_path, cut):
    data = cv2.imencode(".jpg", smooth_bgr(32, 32))[1].tobytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[:-cut])
    assert "truncated" in _raises_one_line(path)


def test_progressive_jpeg_and_trailing_data_are_accepted(tmp_path):
    params = [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]
    data = cv2.imencode(".jpg", smooth_bgr(32, 40), params)[1].tobytes()
    path = tmp_path / "motion.jpg"
    path.write_bytes(data + b"\x00\x00\x00\x18ftypmp42 appended video")
    expected = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    np.testing.assert_array_equal(read_image(path), expected)  # the trailer changes no pixel
    path.write_bytes(data[: len(data) // 2])
    assert "truncated" in _raises_one_line(path)


def test_bgr_becomes_rgb(tmp_path):
    path = tmp_path / "red.png"
    cv2.imwrite(str(path), np.full((4, 5, 3), (0, 0, 255), np.uint8))  # pure red, BGR order
    rgb = read_image(path)
    assert rgb.shape == (4, 5, 3) and rgb.dtype == np.uint8
    assert (rgb[..., 0] == 255).all() and (rgb[..., 1:] == 0).all()


def test_gray_becomes_three_equal_channels(inputs):
    assert (read_image(inputs["gray_png"]) == GRAY_VALUE).all()


def test_rgba_is_composited_over_white(inputs):
    rgb = read_image(inputs["rgba_png"])
    assert (rgb[:8] == RGBA_COLOR).all()  # opaque: the colour
    assert (rgb[8:] == 255).all()  # transparent: white


def test_gray_alpha_is_composited_over_white(tmp_path):
    path = tmp_path / "la.png"
    Image.new("LA", (3, 2), (100, 128)).save(path)
    expected = round((100 * 128 + 255 * 127) / 255)
    assert (read_image(path) == expected).all()


def test_16_bit_is_scaled_not_truncated(inputs, tmp_path):
    assert (read_image(inputs["png16"]) == (255, 0, 100)).all()
    path = tmp_path / "gray16.tif"
    cv2.imwrite(str(path), np.array([[0, 65535, 257 * 128, 300]], np.uint16))
    assert read_image(path)[0, :, 0].tolist() == [0, 255, 128, 1]


def test_palette_colours_are_preserved(inputs):
    rgb = read_image(inputs["palette_png"])
    assert (rgb[:, :12] == PALETTE[0]).all() and (rgb[:, 12:] == PALETTE[1]).all()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_pillow(tmp_path, orientation):
    image = Image.fromarray(np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3) * 3)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "oriented.png"  # PNG eXIf: lossless, so the comparison is exact
    image.save(path, exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    np.testing.assert_array_equal(read_image(path), expected)


def test_exif_orientation_of_jpeg(tmp_path):
    """Orientation 6 read from a JPEG's APP1 segment: rotated clockwise, pixel for pixel as
    Pillow shows it (decoders may differ by a grey level or two). Mutation caught: orientation 6
    rotated counter-clockwise (the shape, all the old test checked, is the same)."""
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    path = tmp_path / "portrait.jpg"
    Image.fromarray(smooth_bgr(40, 64)).save(path, exif=exif.tobytes(), quality=95)
    rgb = read_image(path).astype(int)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB")).astype(int)
    assert rgb.shape == expected.shape == (64, 40, 3)
    assert np.abs(rgb - expected).max() <= 3
    assert np.abs(rgb - expected[::-1, ::-1]).max() > 100  # the other way round is far off


@pytest.mark.parametrize(("array", "expected"), [
    (np.full((2, 3), 7, np.uint8), 7),
    (np.full((2, 3, 1), 7, np.uint8), 7),
    (np.full((2, 3, 3), 1.0, np.float32), 255),
    (np.full((2, 3, 3), 0.5, np.float64), 128),
    (np.full((2, 3, 3), 65535, np.uint16), 255),
    (np.dstack([np.full((2, 3, 3), 9, np.uint8), np.full((2, 3), 255, np.uint8)]), 9),
    (np.dstack([np.full((2, 3, 3), 9, np.uint8), np.zeros((2, 3), np.uint8)]), 255),
])
def test_read_array_converts(array, expected):
    rgb = read_array(array)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8 and (rgb == expected).all()


def test_read_array_keeps_rgb_order_and_does_not_copy():
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[..., 0] = 200
    assert read_array(rgb) is rgb


@pytest.mark.parametrize(("array", "words"), [
    (np.zeros((3, 32, 32), np.uint8), "transpose(1, 2, 0)"),
    (np.zeros((4, 4, 5), np.uint8), "got shape"),
    (np.zeros((0, 4, 3), np.uint8), "got shape"),
    (np.zeros((2, 2, 2, 3), np.uint8), "got shape"),
    (np.zeros((4, 4, 3), np.int32), "int32"),
    (np.full((4, 4, 3), 255.0, np.float32), "divide"),
    (np.full((4, 4, 3), np.nan, np.float32), "[0, 1]"),
    (torch.zeros(4, 4, 3), "numpy"),
    ([[1, 2], [3, 4]], "list"),
])
def test_read_array_refuses_with_one_line(array, words):
    with pytest.raises(ImageError) as info:
        read_array(array)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_expand_inputs(tmp_path):
    for name in ("b.png", "a.JPG", "c.TiFf", "notes.txt", ".hidden.jpg"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.jpg").write_bytes(b"x")
    single = tmp_path / "notes.txt"
    found = expand_inputs([tmp_path, single])
    assert found == [tmp_path / "a.JPG", tmp_path / "b.png", tmp_path / "c.TiFf", single]
    assert expand_inputs([]) == []


def test_expand_inputs_refuses_empty_directory_and_missing_path(inputs):
    with pytest.raises(ImageError) as info:
        expand_inputs([inputs["empty_dir"]])
    assert inputs["empty_dir"].name in str(info.value)
    assert all(suffix in str(info.value) for suffix in IMAGE_SUFFIXES)
    with pytest.raises(ImageError, match="missing.jpg"):
        expand_inputs([inputs["missing"]])


def test_sample_image():
    """Mutation caught: the sample returned in OpenCV's BGR order (same shape and dtype)."""
    import skimage.data

    assert all(callable(getattr(skimage.data, name, None)) for name in SAMPLE_IMAGES)
    chelsea = sample_image("chelsea")
    assert chelsea.shape == (300, 451, 3) and chelsea.dtype == np.uint8
    np.testing.assert_array_equal(chelsea, skimage.data.chelsea())  # RGB, as skimage gives it
    with pytest.raises(ImageError, match="astronaut, chelsea"):
        sample_image("lena")


def test_resize_takes_height_width():
    image = np.zeros((10, 20, 3), np.uint8)
    assert resize(image, (5, 40)).shape == (5, 40, 3)
    assert resize(np.zeros((10, 20), np.float32), (30, 7)).shape == (30, 7)
    assert resize(np.zeros((10, 20, 1), np.uint8), (3, 4)).shape == (3, 4, 1)
    with pytest.raises(ValueError, match="positive"):
        resize(image, (0, 5))


def test_resize_interpolation_follows_direction():
    stripes = np.tile(np.array([0, 0, 0, 255], np.uint8), (8, 2))  # 8 x 8, one bright column in 4
    small = resize(stripes, (2, 2))  # shrinking: INTER_AREA averages each 4 x 4 block
    assert (small == 64).all()
    ramp = np.array([[0, 100]], np.uint8)
    np.testing.assert_array_equal(
        resize(ramp, (1, 4)), cv2.resize(ramp, (4, 1), interpolation=cv2.INTER_LINEAR))


def test_to_tensor_normalizes():
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[...] = (255, 0, 51)
    t = to_tensor(rgb, mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 0.2))
    assert t.shape == (1, 3, 2, 3) and t.dtype == torch.float32 and t.is_contiguous()
    expected = torch.tensor([(1 - 0.5) / 0.5, (0 - 0.5) / 0.25, (0.2 - 0.5) / 0.2])
    torch.testing.assert_close(t[0, :, 1, 2], expected)


def test_to_tensor_gray_uses_opencv_weights():
    rgb = np.zeros((1, 1, 3), np.uint8)
    rgb[...] = (255, 0, 0)
    t = to_tensor(rgb, mean=(0.0,), std=(1.0,), in_chans=1)
    assert t.shape == (1, 1, 1, 1)
    assert t.item() == pytest.approx(0.299, abs=1e-6)
    assert to_tensor(rgb, mean=(0.0,), std=(1.0,)).shape == (1, 3, 1, 1)  # one value broadcasts


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"mean": (0.5, 0.5), "std": (1, 1, 1)}, "mean has 2"),
    ({"mean": (0.5,) * 3, "std": (1, 0, 1)}, "positive"),
    ({"mean": (0.5,), "std": (1,), "in_chans": 2}, "in_chans"),
])
def test_to_tensor_validates(kwargs, words):
    with pytest.raises(ValueError, match=words):
        to_tensor(np.zeros((2, 2, 3), np.uint8), **kwargs)


def test_image_error_is_a_value_error_on_one_line():
    error = ImageError("a.jpg: bad\nthing;  fix it")
    assert isinstance(error, ValueError) and str(error) == "a.jpg: bad thing; fix it"


def test_pillow_reads_what_badfiles_claims(inputs):
    with Image.open(io.BytesIO(inputs["palette_png"].read_bytes())) as im:
        assert im.mode == "P"
    assert cv2.imread(str(inputs["png16"]), cv2.IMREAD_UNCHANGED).dtype == np.uint16


@pytest.mark.parametrize("suffix", [".bmp", ".tif", ".webp"])
def test_other_formats_read_through_pillow_header(tmp_path, suffix):
    """Pixels, not only shapes. Mutation caught: the BGR→RGB swap applied to JPEG/PNG only."""
    path = tmp_path / f"x{suffix}"
    cv2.imwrite(str(path), smooth_bgr(12, 20))  # lossless in all three (WebP at default)
    np.testing.assert_array_equal(read_image(path), smooth_bgr(12, 20)[..., ::-1])


def test_float_tiff_that_pillow_cannot_identify_is_read_by_opencv(tmp_path):
    path = tmp_path / "float.tif"
    cv2.imwrite(str(path), np.full((4, 6, 3), 0.5, np.float32))
    assert (read_image(path) == 128).all()
    assert "max_pixels" in _raises_one_line(path, max_pixels=10)  # checked after decoding
