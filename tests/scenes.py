"""Generated scenes shared by the pipeline and CLI tests.

Each image is a rectangle of one colour on a background of another, with pixel noise; the box
is the rectangle grown by 3 pixels, the clicks are one in the middle of the rectangle and one
in each corner of the image (background), the scribbles a stroke across the rectangle and a
frame near the image border (background), and the class activation map a Gaussian bump on the
rectangle's centre that fades before its edges (a CAM's usual too-small peak).
"""

import json

import numpy as np
import torch
from PIL import Image

H, W = 40, 48
BACKGROUNDS = [(60, 110, 170), (70, 140, 80), (170, 160, 70)]
FOREGROUNDS = [(160, 90, 70), (150, 80, 130), (80, 120, 160)]
NAMES = [f"img{i}" for i in range(len(BACKGROUNDS))]


def make_scene(i):
    """(H, W, 3) uint8 image, (H, W) uint8 truth and the weak labels of scene ``i``."""
    rng = np.random.default_rng(i)
    x0, y0, x1, y1 = 10 + 2 * i, 8 + i, 35 - i, 29 - i  # inclusive
    truth = np.zeros((H, W), np.uint8)
    truth[y0:y1 + 1, x0:x1 + 1] = 1
    image = np.where(truth[..., None] == 1, np.array(FOREGROUNDS[i]), np.array(BACKGROUNDS[i]))
    image = np.clip(np.rint(image + rng.normal(0, 6, (H, W, 3))), 0, 255).astype(np.uint8)
    corners = [(3, 3), (W - 4, 3), (3, H - 4), (W - 4, H - 4)]
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    ys, xs = np.mgrid[0:H, 0:W]
    bump = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * 7.0**2))
    labels = {
        "boxes": [{"cls": 1, "box": [x0 - 3, y0 - 3, x1 + 3, y1 + 3]}],
        "points": [{"x": cx, "y": cy, "cls": 1}]
        + [{"x": x, "y": y, "cls": 0} for x, y in corners],
        "scribbles": [{"cls": 1, "points": [[x0 + 3, cy], [x1 - 3, cy]]},
                      {"cls": 0, "points": [[2, 2], [W - 3, 2], [W - 3, H - 3], [2, H - 3],
                                            [2, 2]]}],
        "tags": [1],
        "cams": torch.from_numpy(bump[None].astype(np.float32)),
    }
    return image, truth, labels


def write_scene_set(root, count=3):
    """ROOT/images, ROOT/masks, ROOT/cams and ROOT/annotations.json of the first ``count``
    generated scenes."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "cams").mkdir()
    entries = {}
    for i, name in enumerate(NAMES[:count]):
        image, truth, labels = make_scene(i)
        Image.fromarray(image).save(root / "images" / f"{name}.png")
        Image.fromarray(truth, mode="L").save(root / "masks" / f"{name}.png")
        np.save(root / "cams" / f"{name}.npy", labels.pop("cams").numpy())
        entries[name] = {"classes": labels.pop("tags"), **labels}
    (root / "annotations.json").write_text(json.dumps({"num_classes": 2, "images": entries}))
    return root


def write_seed_maps(root):
    """ROOT/seeds/NAME.png (the scribbles drawn as uint8 class ids, 255 = unknown) and
    ROOT/boundaries/NAME.npy (the truth's edges as an IRN boundary map) of a written set."""
    from graphseg.seeds import rasterize_scribbles

    (root / "seeds").mkdir()
    (root / "boundaries").mkdir()
    entries = json.loads((root / "annotations.json").read_text())["images"]
    for i, name in enumerate(entries):
        _, truth, labels = make_scene(i)
        seeds = rasterize_scribbles([labels["scribbles"]], H, W, radius=1)[0]
        Image.fromarray(seeds.numpy().astype(np.uint8), mode="L").save(root / "seeds" /
                                                                       f"{name}.png")
        edges = np.zeros((H, W), np.float32)
        edges[:, 1:] = np.maximum(edges[:, 1:], truth[:, 1:] != truth[:, :-1])
        edges[1:, :] = np.maximum(edges[1:, :], truth[1:, :] != truth[:-1, :])
        np.save(root / "boundaries" / f"{name}.npy", edges)
    return root


def rectangle_scene(i):
    image, truth, labels = make_scene(i)
    return (torch.from_numpy(image).permute(2, 0, 1).float() / 255,
            torch.from_numpy(truth).bool(), labels["boxes"])


def stripes_scene(i):
    """A horse-like shape: an ellipse body on four legs, striped in the background's own two
    colours plus a third, in a box touching it; legs are thin, so GrabCut's colour models
    alone mix them with the background stripes."""
    rng = np.random.default_rng(100 + i)
    h, w = 40, 56
    ys, xs = np.mgrid[0:h, 0:w]
    cx, cy = 28 + (i % 3) - 1, 16 + (i % 2)
    body = ((xs - cx) / 16.0) ** 2 + ((ys - cy) / 8.0) ** 2 <= 1
    legs = np.zeros_like(body)
    for lx in (cx - 12, cx - 6, cx + 6, cx + 12):
        legs |= (np.abs(xs - lx) <= 1) & (ys >= cy) & (ys <= cy + 18)
    truth = body | legs
    background = np.where((xs // 4) % 2 == 0, 0.35, 0.55)[..., None] * np.ones(3)
    foreground = np.array([0.55, 0.4, 0.3])
    image = np.where(truth[..., None], foreground, background)
    image = (image + rng.normal(0, 0.04, image.shape)).clip(0, 1)
    y_idx, x_idx = np.nonzero(truth)
    box = [int(x_idx.min()), int(y_idx.min()), int(x_idx.max()), int(y_idx.max())]
    return (torch.from_numpy(image).permute(2, 0, 1).float(), torch.from_numpy(truth),
            [{"cls": 1, "box": box}])


def corner_scene(i, reaching_out):
    """A red disk on a blue-grey background, its tight box, and a green blob on a corner of the
    box (the corner turns with ``i``): an 11 x 11 blob centred on the corner, reaching out of
    the box (``reaching_out``), or a 4 x 4 one held inside the box's corner, clear of the disk.
    GrabCut takes the blob for background where the window around the box shows green outside
    it, and for the object where it does not (its background model holds no green)."""
    rng = np.random.default_rng(200 + i)
    h, w = 48, 64
    ys, xs = np.mgrid[0:h, 0:w]
    cx, cy, r = 32 + (i % 3) - 1, 24 + (i % 2), 13
    truth = (xs - cx) ** 2 + (ys - cy) ** 2 <= r * r
    y_idx, x_idx = np.nonzero(truth)
    x0, y0, x1, y1 = int(x_idx.min()), int(y_idx.min()), int(x_idx.max()), int(y_idx.max())
    kx, ky = (x0, x1, x0, x1)[i % 4], (y0, y0, y1, y1)[i % 4]
    if reaching_out:
        blob = (np.abs(xs - kx) <= 5) & (np.abs(ys - ky) <= 5)
    else:  # the 4 x 4 pixels inward from the corner
        sx, sy = (1 if kx == x0 else -1), (1 if ky == y0 else -1)
        blob = ((xs - kx) * sx >= 0) & ((xs - kx) * sx <= 3) & ((ys - ky) * sy >= 0) & (
            (ys - ky) * sy <= 3)
    image = np.zeros((h, w, 3)) + np.array([0.3, 0.35, 0.6])
    image[blob & ~truth] = (0.25, 0.7, 0.25)
    image[truth] = (0.8, 0.2, 0.2)
    image = (image + rng.normal(0, 0.04, image.shape)).clip(0, 1)
    return (torch.from_numpy(image).permute(2, 0, 1).float(), torch.from_numpy(truth),
            [{"cls": 1, "box": [x0, y0, x1, y1]}])


def foreground_iou(labels, truth):
    pred = labels == 1
    return float((pred & truth).sum()) / float((pred | truth).sum())
