"""The image forms of docs/images.md (graphseg._checks.as_image_batch): every row of the table
read as the same picture, every refusal with its message, and the same result from the public
entry points whatever the form; and check_finite on every float dtype and layout."""

import io
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import graphseg
from graphseg import _checks
from graphseg._checks import as_image_batch
from graphseg.data import read_image

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (6, 7, 3), dtype=np.uint8)
GREY = RNG.integers(0, 256, (6, 7), dtype=np.uint8)
EXPECTED_RGB = torch.from_numpy(RGB).permute(2, 0, 1)[None].float() / 255
EXPECTED_GREY = torch.from_numpy(GREY)[None, None].float() / 255


def _rgba(alpha):
    return np.dstack([RGB, np.full(RGB.shape[:2], alpha, np.uint8)])


# -- every accepted row ----------------------------------------------------------------------

RGB_FORMS = {
    "numpy uint8 (H, W, 3)": lambda: RGB,
    "numpy uint8 (H, W, 4), alpha dropped": lambda: _rgba(7),
    "numpy uint16 (H, W, 3)": lambda: RGB.astype(np.uint16) * 257,
    "numpy float64 (scikit-image img_as_float)": lambda: RGB / 255.0,
    "numpy float32": lambda: (RGB / 255.0).astype(np.float32),
    "numpy float16": lambda: (RGB / 255.0).astype(np.float16),
    "numpy read-only (broadcast)": lambda: np.broadcast_to(RGB, RGB.shape),
    "numpy non-contiguous": lambda: np.ascontiguousarray(RGB[:, ::-1])[:, ::-1],
    "OpenCV BGR array after cvtColor": lambda: __import__("cv2").cvtColor(
        RGB[..., ::-1].copy(), __import__("cv2").COLOR_BGR2RGB),
    "PIL RGB": lambda: Image.fromarray(RGB),
    "PIL RGBA": lambda: Image.fromarray(_rgba(200)),
    "PIL P (palette)": lambda: Image.fromarray(RGB).quantize(256,
                                                             method=Image.Quantize.MAXCOVERAGE),
    "PIL YCbCr": lambda: Image.fromarray(RGB).convert("YCbCr"),
    "torch uint8 (3, H, W)": lambda: torch.from_numpy(RGB).permute(2, 0, 1),
    "torch uint8 (1, 3, H, W)": lambda: torch.from_numpy(RGB).permute(2, 0, 1)[None],
    "torch uint16 (3, H, W)": lambda: (torch.from_numpy(RGB).permute(2, 0, 1).int() * 257
                                       ).to(torch.uint16),
    "torch float32 (3, H, W)": lambda: EXPECTED_RGB[0],
    "torch float16": lambda: EXPECTED_RGB.half(),
    "torch bfloat16": lambda: EXPECTED_RGB.bfloat16(),
    "torch (4, H, W), alpha dropped": lambda: torch.cat([EXPECTED_RGB[0],
                                                         torch.ones(1, 6, 7)]),
}
# lossy forms: the error of their dtype or colour conversion
TOLERANCE = {"numpy float16": 1e-3, "torch float16": 1e-3, "torch bfloat16": 4e-3,
             "PIL YCbCr": 0.05}  # a palette of 256 colours holds the 42 pixels exactly


@pytest.mark.parametrize("form", sorted(RGB_FORMS))
def test_every_rgb_form_is_the_same_picture(form):
    image = as_image_batch(RGB_FORMS[form]())
    assert image.shape == (1, 3, 6, 7) and image.dtype == torch.float32
    torch.testing.assert_close(image, EXPECTED_RGB, atol=TOLERANCE.get(form, 1e-6), rtol=0)


GREY_FORMS = {
    "numpy uint8 (H, W)": lambda: GREY,
    "numpy uint8 (H, W, 1)": lambda: GREY[:, :, None],
    "numpy uint16 (H, W)": lambda: GREY.astype(np.uint16) * 257,
    "PIL L": lambda: Image.fromarray(GREY),
    "PIL LA": lambda: Image.fromarray(np.dstack([GREY, GREY // 2])).convert("LA"),
    "PIL I;16": lambda: Image.fromarray(GREY.astype(np.uint16) * 257),
    "PIL I (16-bit data, older Pillow)": lambda: Image.fromarray(GREY.astype(np.int32) * 257),
    "PIL F": lambda: Image.fromarray((GREY / 255.0).astype(np.float32)),
    "torch (H, W)": lambda: EXPECTED_GREY[0, 0],
    "torch uint8 (1, H, W)": lambda: torch.from_numpy(GREY)[None],
}


@pytest.mark.parametrize("form", sorted(GREY_FORMS))
def test_every_grey_form_is_the_same_picture(form):
    image = as_image_batch(GREY_FORMS[form]())
    assert image.shape == (1, 1, 6, 7) and image.dtype == torch.float32
    torch.testing.assert_close(image, EXPECTED_GREY, atol=1e-6, rtol=0)
    colour = as_image_batch(GREY_FORMS[form](), channels=3)
    assert colour.shape == (1, 3, 6, 7) and colour.is_contiguous()
    torch.testing.assert_close(colour, EXPECTED_GREY.expand(1, 3, 6, 7), atol=1e-6, rtol=0)


def test_bool_and_binary_images_are_zero_or_one():
    mask = GREY > 128
    expected = torch.from_numpy(mask)[None, None].float()
    for form in (mask, Image.fromarray(mask), torch.from_numpy(mask)):
        torch.testing.assert_close(as_image_batch(form), expected)


def test_float64_tensors_stay_float64_and_others_become_float32():
    assert as_image_batch(EXPECTED_RGB.double()).dtype == torch.float64
    assert as_image_batch(RGB / 255.0).dtype == torch.float32


def test_interpolation_overshoot_is_clipped():
    image = EXPECTED_RGB.clone()
    image[0, 0, 0, 0], image[0, 1, 0, 0] = -5e-4, 1 + 5e-4
    clipped = as_image_batch(image)
    assert float(clipped.min()) >= 0 and float(clipped.max()) <= 1


# -- refusals --------------------------------------------------------------------------------

@pytest.mark.parametrize(("image", "error", "match"), [
    (RGB.astype(np.float64), ValueError, r"values in \[.*\].*divide by 255"),
    (torch.from_numpy(RGB).permute(2, 0, 1).float(), ValueError, "divide by 255"),
    (RGB.astype(np.float32) * 257, ValueError, "divide by 65535"),
    ((RGB / 255.0 - 0.45) / 0.225, ValueError, "normalised image.*normalize='imagenet'"),
    (np.moveaxis(RGB, -1, 0), ValueError, r"channel-first.*np\.moveaxis"),
    (torch.from_numpy(RGB), ValueError, r"channel-last.*permute\(2, 0, 1\)"),
    (RGB[None], ValueError, r"a batch goes in as a \(B, C, H, W\) torch tensor"),
    (np.zeros((6, 7, 2), np.uint8), ValueError, "must have shape .* C 1, 3 or 4"),
    (torch.rand(2, 6, 7), ValueError, "must have 1, 3 or 4 channels"),
    (torch.rand(6), ValueError, "as a torch tensor must have shape"),
    (RGB.astype(np.int32), TypeError, r"uint8, uint16, bool or float.*astype\(np.uint8\)"),
    (torch.from_numpy(RGB).permute(2, 0, 1).long(), TypeError, "uint8, uint16, bool or float"),
    (Image.fromarray(GREY.astype(np.int32) * 10**6), ValueError, "mode 'I'.*16-bit"),
    ("photo.png", TypeError, "numpy array .*PIL image or a torch tensor"),
    (np.full((6, 7, 3), np.nan), ValueError, "NaN or Inf"),
])
def test_refused_forms_say_what_to_do(image, error, match):
    with pytest.raises(error, match=match):
        as_image_batch(image)


def test_colour_only_functions_name_the_channels():
    with pytest.raises(ValueError, match="needs 3 colour channels"):
        graphseg.pixel_graph(GREY, radius=1, normalize="imagenet")
    # a grey picture is the RGB picture with R = G = B
    assert torch.equal(graphseg.superpixel_graph(GREY, n_segments=6).labels,
                       graphseg.superpixel_graph(np.dstack([GREY] * 3), n_segments=6).labels)


# -- files -----------------------------------------------------------------------------------

def _png(array, mode=None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def test_files_keep_16_bits_and_drop_alpha(tmp_path):
    deep = (np.arange(42, dtype=np.uint16).reshape(6, 7) * 1500)  # up to 61500: above 8 bits
    (tmp_path / "deep.png").write_bytes(_png(deep))
    read = read_image(tmp_path / "deep.png")
    assert read.shape == (3, 6, 7)
    torch.testing.assert_close(read[0], torch.from_numpy(deep.astype(np.float32) / 65535))
    assert float(read.max()) < 0.95  # not clipped to white
    (tmp_path / "rgba.png").write_bytes(_png(_rgba(3)))
    (tmp_path / "rgb.png").write_bytes(_png(RGB))
    torch.testing.assert_close(read_image(tmp_path / "rgba.png"), read_image(tmp_path / "rgb.png"))
    (tmp_path / "grey.png").write_bytes(_png(GREY))
    assert torch.equal(read_image(tmp_path / "grey.png"), EXPECTED_GREY[0].expand(3, 6, 7))


# -- public entry points agree across forms --------------------------------------------------

ENTRY_FORMS = ["numpy uint8 (H, W, 3)", "numpy float64 (scikit-image img_as_float)", "PIL RGB",
               "PIL RGBA", "torch uint8 (3, H, W)", "numpy uint16 (H, W, 3)"]


@pytest.mark.parametrize("form", ENTRY_FORMS)
def test_public_entry_points_give_the_same_result_for_every_form(form):
    image = RGB_FORMS[form]()
    reference = EXPECTED_RGB
    torch.testing.assert_close(graphseg.pixel_graph(image, radius=2).weight,
                               graphseg.pixel_graph(reference, radius=2).weight)
    torch.testing.assert_close(graphseg.random_walker_graph(image).weight,
                               graphseg.random_walker_graph(reference).weight)
    assert torch.equal(graphseg.superpixel_graph(image, n_segments=6).labels,
                       graphseg.superpixel_graph(reference, n_segments=6).labels)
    probs = torch.softmax(torch.randn(1, 2, 6, 7, generator=torch.Generator().manual_seed(0)), 1)
    torch.testing.assert_close(graphseg.crf(image, probs), graphseg.crf(reference, probs))
    from graphseg.pipelines import propagate_image

    seeds = torch.full((6, 7), 255)
    seeds[0, 0], seeds[5, 6] = 0, 1
    torch.testing.assert_close(propagate_image(image, seeds=seeds, method="harmonic"),
                               propagate_image(reference, seeds=seeds, method="harmonic"))


# -- property: any content, any form ---------------------------------------------------------

@settings(max_examples=60, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**31 - 1), height=st.integers(1, 5), width=st.integers(1, 5),
       channels=st.sampled_from([1, 3, 4]),
       form=st.sampled_from(["numpy", "numpy16", "numpy-float", "pil", "tensor", "tensor16",
                             "tensor-float", "tensor-half"]))
def test_any_picture_in_any_form(seed, height, width, channels, form):
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, channels), np.uint8)
    expected = torch.from_numpy(pixels).permute(2, 0, 1)[None, :3].float() / 255
    flat = pixels[:, :, 0] if channels == 1 else pixels
    image = {
        "numpy": lambda: flat,
        "numpy16": lambda: flat.astype(np.uint16) * 257,
        "numpy-float": lambda: flat / 255.0,
        "pil": lambda: Image.fromarray(flat),
        "tensor": lambda: torch.from_numpy(pixels).permute(2, 0, 1),
        "tensor16": lambda: (torch.from_numpy(pixels).permute(2, 0, 1).int() * 257
                             ).to(torch.uint16),
        "tensor-float": lambda: torch.from_numpy(pixels).permute(2, 0, 1).double() / 255,
        "tensor-half": lambda: (torch.from_numpy(pixels).permute(2, 0, 1).float() / 255).half(),
    }[form]()
    read = as_image_batch(image)
    assert read.shape == expected.shape
    assert float(read.min()) >= 0 and float(read.max()) <= 1
    torch.testing.assert_close(read.float(), expected, atol=1e-3 if form == "tensor-half" else 1e-6,
                               rtol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_check_finite_finds_one_bad_value_anywhere(dtype, bad):
    generator = torch.Generator().manual_seed(0)
    values = torch.rand(4, 5, 6, generator=generator).to(dtype)
    _checks.check_finite("values", values)
    _checks.check_finite("values", values[:, ::2].transpose(0, 2))  # any strides
    _checks.check_finite("values", values[:0])  # empty
    _checks.check_finite("labels", torch.full((3,), 7))  # not floating point: not checked
    for place in [(0, 0, 0), (3, 4, 5), (2, 1, 3)]:
        broken = values.clone()
        broken[place] = bad
        with pytest.raises(ValueError, match="values contains NaN or Inf"):
            _checks.check_finite("values", broken)
        with pytest.raises(ValueError, match="values contains NaN or Inf"):
            _checks.check_finite("values", broken.transpose(0, 2))
