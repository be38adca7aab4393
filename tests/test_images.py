import hashlib
import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lifecycle.core.images import (
    ImageDecodeError,
    check_image,
    decode_image,
    load_array,
    read_header,
    resize_to_array,
)
from lifecycle.features import decode_all
from lifecycle.inference import Predictor
from lifecycle.models import ModelSpec, to_model_input


def encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def gradient(width=40, height=30) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)
    pixels = np.stack([np.tile(x, (height, 1))] * 3, axis=-1)
    pixels[..., 2] = 200
    return Image.fromarray(pixels)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "LA", "1", "I;16", "I"])
def test_every_mode_becomes_rgb(mode):
    source = gradient()
    if mode == "I;16":
        image = Image.fromarray((np.asarray(source.convert("L"), dtype=np.uint16) * 257))
        assert image.mode.startswith("I;16")
        data = encode(image)
    elif mode == "CMYK":
        data = encode(source.convert("CMYK"), "JPEG")
    else:
        data = encode(source.convert(mode), "TIFF" if mode == "I" else "PNG")
    decoded = decode_image(data)
    assert decoded.mode == "RGB" and decoded.size == (40, 30)


def test_transparency_is_composited_on_white():
    image = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    assert np.asarray(decode_image(encode(image)))[0, 0].tolist() == [255, 255, 255]


def test_palette_transparency_is_composited_on_white():
    image = Image.new("P", (8, 8), 0)
    image.putpalette([10, 20, 30] * 256)
    data = encode(image, transparency=0)
    assert np.asarray(decode_image(data))[0, 0].tolist() == [255, 255, 255]


def test_animated_gif_uses_first_frame():
    frames = [Image.new("RGB", (10, 10), color) for color in [(255, 0, 0), (0, 0, 255)]]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    pixel = np.asarray(decode_image(buffer.getvalue()))[0, 0]
    assert pixel[0] > 200 and pixel[2] < 50


def test_exif_orientation_is_applied():
    image = gradient(40, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    decoded = decode_image(encode(image, "JPEG", exif=exif.tobytes()))
    assert decoded.size == (20, 40)


@pytest.mark.parametrize(
    "data, fragment, reason",
    [
        (b"", "empty", "empty_file"),
        (b"hello, I am text", "not a recognised image", "not_an_image"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", "not a recognised image", "not_an_image"),
    ],
)
def test_non_images_are_refused(data, fragment, reason):
    with pytest.raises(ImageDecodeError, match=fragment) as refused:
        decode_image(data)
    assert refused.value.reason == reason


def test_an_empty_file_on_disk_is_empty_not_unrecognised(tmp_path):
    (tmp_path / "cat.1.jpg").write_bytes(b"")
    with pytest.raises(ImageDecodeError) as refused:
        check_image(tmp_path / "cat.1.jpg")
    assert refused.value.reason == "empty_file"


def test_truncated_image_is_refused():
    data = encode(gradient(200, 200), "JPEG")
    with pytest.raises(ImageDecodeError, match="truncated") as refused:
        decode_image(data[: len(data) // 3])
    assert refused.value.reason == "truncated_image"


def test_corrupt_image_data_is_its_own_reason():
    data = bytearray(encode(gradient(64, 64), "GIF"))
    data[len(data) // 2:len(data) // 2 + 40] = bytes(range(40))  # a broken LZW stream behind a good header
    with pytest.raises(ImageDecodeError, match="corrupt") as refused:
        decode_image(bytes(data))
    assert refused.value.reason == "corrupt_image"


@pytest.mark.parametrize("fmt", ["PPM", "ICO", "TGA"])
def test_an_image_of_an_unsupported_format_is_refused_by_name(fmt):
    data = encode(gradient(32, 32), fmt)
    with pytest.raises(ImageDecodeError, match=f"a {fmt} image, not one of the supported formats") as refused:
        read_header(data)
    assert refused.value.reason == "unsupported_format"


def test_pixel_cap_is_checked_before_decoding():
    data = encode(Image.new("L", (2000, 2000)))
    assert read_header(data)[:2] == (2000, 2000)
    with pytest.raises(ImageDecodeError, match="over the limit") as refused:
        decode_image(data, max_pixels=1_000_000)
    assert refused.value.reason == "over_pixel_limit"


def test_load_array_and_model_input_shapes():
    array = load_array(encode(gradient()), 16)
    assert array.shape == (16, 16, 3) and array.dtype == np.uint8
    batch = to_model_input(np.stack([array, array]), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert batch.shape == (2, 3, 16, 16)
    assert float(batch.min()) >= -1.0 and float(batch.max()) <= 1.0


def photo(width: int, height: int, seed: int = 0) -> bytes:
    """A Kaggle-sized JPEG: smooth colour plus noise, so that decoding at reduced scale changes pixels."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    pixels = np.asarray(coarse, dtype=np.int16) + rng.integers(-20, 21, (height, width, 3))
    return encode(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), "JPEG", quality=90)


def test_a_large_jpeg_is_decoded_at_reduced_scale_with_a_margin():
    data = photo(600, 520)
    assert decode_image(data, reduce_to=200).size == (300, 260)  # 1/2: 1/4 would leave sides under 200
    assert decode_image(data, reduce_to=128).size == (150, 130)  # 1/4: both sides still >= 128
    assert decode_image(data, reduce_to=64).size == (75, 65)     # 1/8, the smallest scale there is
    assert decode_image(data).size == (600, 520)
    reduced = load_array(data, 64)  # decodes at least 2 x 64 a side
    assert np.array_equal(reduced, resize_to_array(decode_image(data, reduce_to=128), 64))
    full = resize_to_array(decode_image(data), 64)
    assert not np.array_equal(reduced, full)  # the reduced decode is really used ...
    assert np.abs(reduced.astype(int) - full).mean() < 2.0  # ... and sees nearly the same picture


def test_images_under_twice_the_model_size_decode_exactly_as_at_full_size():
    """Every image of the embedded default data (48-160 px for a 64 px model): outputs unchanged."""
    for size in [(160, 160), (255, 300), (48, 100)]:
        data = photo(*size)
        assert np.array_equal(load_array(data, 64), resize_to_array(decode_image(data), 64))


def test_training_and_serving_see_the_same_pixels_of_a_large_photo(tmp_path):
    data = photo(480, 360, seed=3)
    (tmp_path / "cat.1.jpg").write_bytes(data)
    manifest = pd.DataFrame({"image_path": ["cat.1.jpg"], "sha256": [hashlib.sha256(data).hexdigest()]})
    trained_on = decode_all(manifest, tmp_path, 64)[0]
    predictor = Predictor(model=None, spec=ModelSpec("seed_cnn", ["cat", "dog"], 64), identity=None, device="cpu")
    assert np.array_equal(predictor.preprocess(data), trained_on)                   # /predict gets bytes
    assert np.array_equal(predictor.preprocess(tmp_path / "cat.1.jpg"), trained_on)  # predict reads the file


def test_the_readability_check_fails_where_a_full_decode_fails():
    data = photo(400, 300)
    assert check_image(data) == (400, 300, "RGB", "JPEG")
    for cut in (len(data) // 5, len(data) // 2, len(data) - 40):
        with pytest.raises(ImageDecodeError, match="truncated"):
            decode_image(data[:cut])
        with pytest.raises(ImageDecodeError, match="truncated"):
            check_image(data[:cut])
