import io

import numpy as np
import pytest
from PIL import Image

from lifecycle.core.images import (
    ImageDecodeError,
    decode_image,
    load_array,
    read_header,
)
from lifecycle.models import to_model_input


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
    "data, fragment",
    [
        (b"", "empty"),
        (b"hello, I am text", "not a recognised image"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", "not a recognised image"),
    ],
)
def test_non_images_are_refused(data, fragment):
    with pytest.raises(ImageDecodeError, match=fragment):
        decode_image(data)


def test_truncated_image_is_refused():
    data = encode(gradient(200, 200), "JPEG")
    with pytest.raises(ImageDecodeError, match="truncated or corrupt"):
        decode_image(data[: len(data) // 3])


def test_pixel_cap_is_checked_before_decoding():
    data = encode(Image.new("L", (2000, 2000)))
    assert read_header(data)[:2] == (2000, 2000)
    with pytest.raises(ImageDecodeError, match="over the limit"):
        decode_image(data, max_pixels=1_000_000)


def test_load_array_and_model_input_shapes():
    array = load_array(encode(gradient()), 16)
    assert array.shape == (16, 16, 3) and array.dtype == np.uint8
    batch = to_model_input(np.stack([array, array]), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert batch.shape == (2, 3, 16, 16)
    assert float(batch.min()) >= -1.0 and float(batch.max()) <= 1.0
