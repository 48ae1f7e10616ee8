"""Image loading and upstream pre/post-processing (liquid_jax.tokenizer.image)."""

import io

import jax
import jax.numpy as jnp
import numpy as np
import PIL.Image
import pytest
import torch

from liquid_jax.tokenizer.image import (ImageError, PAD_FILL, check_aspect_ratio, load_image,
                                        pad_to_square, resize_center_crop, to_model_input, to_uint8)


def _png(img: PIL.Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def test_rgba_is_blended_onto_white_like_upstream():
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (9, 7, 4), dtype=np.uint8)
    img = load_image(_png(PIL.Image.fromarray(rgba, "RGBA")))
    alpha = rgba[..., 3:].astype(np.float64) / 255.0
    expected = ((1 - alpha) * 255 + alpha * rgba[..., :3]).astype(np.uint8)
    assert img.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(img), expected)


def test_opaque_rgba_and_grayscale_convert_plainly():
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, (5, 6, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    np.testing.assert_array_equal(np.asarray(load_image(PIL.Image.fromarray(rgba, "RGBA"))), rgba[..., :3])
    gray = rng.integers(0, 256, (5, 6), dtype=np.uint8)
    out = np.asarray(load_image(_png(PIL.Image.fromarray(gray, "L"))))
    np.testing.assert_array_equal(out, np.repeat(gray[..., None], 3, axis=-1))


def test_palette_with_transparency_becomes_white():
    img = PIL.Image.new("P", (4, 4), 0)
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    img.putpixel((1, 1), 1)
    img.info["transparency"] = 0
    out = np.asarray(load_image(_png(img)))
    assert (out[0, 0] == 255).all() and tuple(out[1, 1]) == (0, 0, 255)


def test_cmyk_uses_pil_conversion():
    rng = np.random.default_rng(2)
    cmyk = PIL.Image.fromarray(rng.integers(0, 256, (8, 8, 4), dtype=np.uint8), "CMYK")
    out = load_image(_png(cmyk, "TIFF"))
    np.testing.assert_array_equal(np.asarray(out), np.asarray(cmyk.convert("RGB")))


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 255, 256, 4095], [30000, 65535, 12345, 512]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    PIL.Image.fromarray(values).save(path)
    out = np.asarray(load_image(str(path)))
    np.testing.assert_array_equal(out[..., 0], (values >> 8).astype(np.uint8))
    assert out.shape == (2, 4, 3)


def test_corrupt_and_missing_files_raise_image_error_naming_the_file(tmp_path):
    data = _png(PIL.Image.new("RGB", (32, 32), (1, 2, 3)))
    bad = tmp_path / "broken.png"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="broken.png"):
        load_image(str(bad))
    with pytest.raises(ImageError, match="caption_42"):
        load_image(b"not an image at all", name="caption_42")
    with pytest.raises(ImageError, match="nowhere.jpg"):
        load_image(str(tmp_path / "nowhere.jpg"))


def test_aspect_ratio_above_two_is_reported():
    check_aspect_ratio(PIL.Image.new("RGB", (200, 100)), "ok.png")
    with pytest.raises(ImageError, match=r"wide.png: aspect ratio 2.50"):
        check_aspect_ratio(PIL.Image.new("RGB", (250, 100)), "wide.png")
    # Preprocessing itself never crashes on extreme shapes.
    assert resize_center_crop(PIL.Image.new("RGB", (1000, 10)), 32).shape == (32, 32, 3)


@pytest.mark.parametrize("size_wh", [(300, 200), (200, 301), (64, 64), (1023, 511)])
def test_resize_center_crop_follows_upstream_geometry(size_wh):
    rng = np.random.default_rng(3)
    w, h = size_wh
    img = PIL.Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    out = resize_center_crop(img, 128)
    s = 128 / min(w, h)
    rw, rh = round(s * w), round(s * h)
    resized = np.asarray(img.resize((rw, rh), PIL.Image.LANCZOS))
    x0, y0 = (rw - 128) // 2, (rh - 128) // 2
    assert out.shape == (128, 128, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, resized[y0:y0 + 128, x0:x0 + 128])


def test_pad_to_square_centres_on_the_mean_colour():
    img = PIL.Image.fromarray(np.full((10, 4, 3), 7, np.uint8))
    out = np.asarray(pad_to_square(img))
    assert out.shape == (10, 10, 3)
    assert (out[:, 3:7] == 7).all()
    assert (out[:, :3] == PAD_FILL).all() and (out[:, 7:] == PAD_FILL).all()
    wide = np.asarray(pad_to_square(PIL.Image.fromarray(np.zeros((3, 8, 3), np.uint8))))
    assert (wide[2:5] == 0).all() and (wide[:2] == PAD_FILL).all() and (wide[5:] == PAD_FILL).all()


def test_model_input_and_uint8_output_match_upstream_torch_arithmetic():
    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, -1)
    expected = torch.from_numpy(pixels / 255.0 * 2 - 1).float().numpy()
    np.testing.assert_array_equal(to_model_input(pixels), expected)

    x = np.random.default_rng(4).uniform(-1.3, 1.3, (64, 64, 3)).astype(np.float32)
    t = (torch.clamp(torch.from_numpy(x), -1.0, 1.0) + 1.0) / 2.0
    np.testing.assert_array_equal(to_uint8(x), (t.numpy() * 255).astype(np.uint8))
    with pytest.raises(TypeError):
        to_model_input(pixels.astype(np.float32))
    # jax arrays, eager or traced (the codec, VQGAN training), get the same values.
    for scale, unscale in ((to_model_input, to_uint8), (jax.jit(to_model_input), jax.jit(to_uint8))):
        np.testing.assert_array_equal(np.asarray(scale(jnp.asarray(pixels))), expected)
        np.testing.assert_array_equal(np.asarray(unscale(jnp.asarray(x))), to_uint8(x))
