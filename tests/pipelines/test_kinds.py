"""The weak kinds with and without class activation maps: the box seeds M_g (thesis Eq. 3.5),
the affinity CNN's seeds of points and scribbles (§3.6.1) and RRM's reliable seeds for tags
(§2.3.1)."""

import pytest
import torch
from scenes import H, W, make_scene

from graphseg.pipelines import LABEL_KEYS, PRESETS, segment
from graphseg.pipelines.affinity import _seed_batches
from graphseg.pipelines.kinds import BoxSeeds, PointSeeds, ScribbleSeeds, TagSeeds, weak_input
from graphseg.propagate import crf
from graphseg.seeds import add_background, fuse_box_seeds, grabcut_seeds, reliable_seeds

U = 255


def scene(i=0):
    image, truth, labels = make_scene(i)
    return torch.from_numpy(image).permute(2, 0, 1).float().div(255)[None], truth, labels


def literal_cam_seeds(cams, classes, fraction=0.4, background=0.8, min_score=0.01):
    """M'_I written out: CAMs max-normalised per tagged class, background (1 − max)^4, argmax;
    per foreground class the pixels strictly above the score of rank int(n·0.6) among its n
    argmax scores above 0.01; background where its score is above 0.8."""
    cams = torch.nn.functional.interpolate(cams[None].float(), size=(H, W), mode="bilinear",
                                           align_corners=False)[0].clamp_min(0)
    maps = []
    for c in range(cams.shape[0]):
        keep = (c + 1) in classes
        maps.append(cams[c] / (cams[c].max() + 1e-5) if keep else torch.zeros(H, W))
    fg = torch.stack(maps)
    probs = torch.cat([(1 - fg.max(0).values).clamp(0, 1).pow(4)[None], fg])
    scores, labels = probs.max(0)
    out = torch.full((H, W), U, dtype=torch.int64)
    for cls in labels.unique().tolist():
        pixels = [(y, x) for y in range(H) for x in range(W) if labels[y, x] == cls]
        if cls == 0:
            for y, x in pixels:
                if scores[y, x] > background:
                    out[y, x] = 0
            continue
        ranked = sorted(float(scores[p]) for p in pixels if scores[p] > min_score)
        rank = int(len(ranked) * (1 - fraction))
        for y, x in pixels:
            if rank >= 1 and float(scores[y, x]) > ranked[rank]:
                out[y, x] = cls
    return out


def test_label_keys_name_cams_as_optional():
    assert LABEL_KEYS["boxes"] == ("boxes", "cams")
    assert LABEL_KEYS["points"] == ("points", "cams")
    assert LABEL_KEYS["scribbles"] == ("scribbles", "cams")
    assert LABEL_KEYS["tags"] == ("tags", "cams")


def test_boxes_without_cams_are_grabcut_seeds():
    image, _, labels = scene()
    inputs = weak_input(image, {"boxes": labels["boxes"]}, weak="boxes", num_classes=2,
                        config=BoxSeeds())
    expected = grabcut_seeds(image, [labels["boxes"]], context=0.1, num_classes=2)
    assert torch.equal(inputs.seeds, expected)
    assert inputs.affinity_seeds is inputs.seeds and inputs.cams is None
    # an optional entry given as None counts as absent
    none = weak_input(image, {"boxes": labels["boxes"], "cams": None}, weak="boxes",
                      num_classes=2, config=BoxSeeds())
    assert torch.equal(none.seeds, expected)
    # the annotation files' boxes are tight: no padding unless the config asks for it
    assert BoxSeeds().padding == 0
    padded = weak_input(image, {"boxes": labels["boxes"]}, weak="boxes", num_classes=2,
                        config=BoxSeeds(padding=5))
    assert torch.equal(padded.seeds, grabcut_seeds(image, [labels["boxes"]], padding=5,
                                                   context=0.1, num_classes=2))


def test_boxes_with_cams_are_confident_seeds_inside_the_fusion():
    image, _, labels = scene()
    m_b = grabcut_seeds(image, [labels["boxes"]], context=0.1, num_classes=2)
    inputs = weak_input(image, {"boxes": labels["boxes"], "cams": labels["cams"]},
                        weak="boxes", num_classes=2, config=BoxSeeds())
    m_g = inputs.seeds
    m_i = add_background(torch.nn.functional.interpolate(
        labels["cams"][None] / labels["cams"].max(), size=(H, W), mode="bilinear",
        align_corners=False).clamp(0, 1)).argmax(1)
    m_f = fuse_box_seeds(m_b, m_i, [labels["boxes"]])
    # M_g ⊆ M_F ⊆ M_B ∪ ...: every label of M_g is M_F's, and M_F's are M_B's
    assert ((m_g == U) | (m_g == m_f)).all() and ((m_f == U) | (m_f == m_b)).all()
    assert int((m_g != U).sum()) < int((m_f != U).sum())
    # M'_I written out decides inside the box: there M_g labels class 1 only where it is
    # confident, and outside the box M_B (background) stays
    confident = literal_cam_seeds(labels["cams"], [1])
    x0, y0, x1, y1 = labels["boxes"][0]["box"]
    inside = torch.zeros(H, W, dtype=torch.bool)
    inside[y0:y1 + 1, x0:x1 + 1] = True
    assert ((m_g[0] == 1) <= (confident == 1)).all()
    assert (m_g[0][~inside] == 0).all()
    assert ((m_g[0] == 1) == ((confident == 1) & (m_b[0] == 1) & inside)).all()
    assert inputs.affinity_seeds is inputs.seeds and inputs.cams is None
    # the grabcut method stays GrabCut's own foreground M_B (unknown: background)
    assert torch.equal(inputs.box_seeds, m_b)
    labels_out = segment(image, {"boxes": labels["boxes"], "cams": labels["cams"]},
                         weak="boxes", method="grabcut", num_classes=2)
    assert torch.equal(labels_out, torch.where(m_b[0] == U, 0, m_b[0]))


def test_boxes_with_cams_checks_their_layout():
    image, _, labels = scene()
    channel_last = labels["cams"].permute(1, 2, 0).contiguous()
    with pytest.raises(ValueError, match=r"labels\['cams'\].*channel-last"):
        weak_input(image, {"boxes": labels["boxes"], "cams": channel_last}, weak="boxes",
                   num_classes=2, config=BoxSeeds())
    with pytest.raises(ValueError, match=r"labels\['boxes'\] classes"):
        weak_input(image, {"boxes": [{"cls": 2, "box": [1, 1, 9, 9]}], "cams": labels["cams"]},
                   weak="boxes", num_classes=None, config=BoxSeeds())


def test_points_train_the_affinity_cnn_on_cam_seeds_alone():
    image, _, labels = scene(1)
    config = PointSeeds(n_segments=300)
    plain = weak_input(image, {"points": labels["points"]}, weak="points", num_classes=2,
                       config=config)
    assert plain.affinity_seeds is plain.seeds
    with_cams = weak_input(image, {"points": labels["points"], "cams": labels["cams"]},
                           weak="points", num_classes=2, config=config)
    assert torch.equal(with_cams.seeds, plain.seeds)  # the per-image recipe keeps M_P
    expected = literal_cam_seeds(labels["cams"], [1])
    assert torch.equal(with_cams.affinity_seeds[0], expected)
    assert set(expected.unique().tolist()) == {0, 1, U}


def test_scribbles_train_the_affinity_cnn_on_the_merge():
    image, _, labels = scene(2)
    config = ScribbleSeeds(n_segments=300)
    plain = weak_input(image, {"scribbles": labels["scribbles"]}, weak="scribbles",
                       num_classes=2, config=config)
    assert plain.affinity_seeds is plain.seeds
    with_cams = weak_input(image, {"scribbles": labels["scribbles"], "cams": labels["cams"]},
                           weak="scribbles", num_classes=2, config=config)
    m_s, merged = with_cams.seeds[0], with_cams.affinity_seeds[0]
    assert torch.equal(m_s, plain.seeds[0])
    m_i = literal_cam_seeds(labels["cams"], [1])
    for y in range(H):
        for x in range(W):
            # M_S where it labels the pixel (it wins a disagreement), M'_I elsewhere
            want = int(m_s[y, x]) if m_s[y, x] != U else int(m_i[y, x])
            assert int(merged[y, x]) == want, (y, x)
    assert int(((m_s == U) & (m_i != U)).sum()) > 0  # the CAMs add seeds


def test_train_affinity_takes_the_affinity_seeds(monkeypatch):
    import graphseg.pipelines.affinity as affinity

    image, _, labels = scene(1)
    sample = {"name": "img1", "image": image[0], "points": labels["points"],
              "cams": labels["cams"]}
    preset = PRESETS["points"].replace(PointSeeds(n_segments=300))
    captured = []
    monkeypatch.setattr(affinity, "resample_seeds",
                        lambda seeds, size: captured.append(seeds) or seeds)
    batches, failures = _seed_batches([sample], "points", 48, preset, False, (0, 1))
    assert not failures and len(batches) == 1
    expected = weak_input(image, {"points": labels["points"], "cams": labels["cams"]},
                          weak="points", num_classes=None, config=preset.seeds)
    assert torch.equal(captured[0], expected.affinity_seeds)
    assert not torch.equal(captured[0], expected.seeds)


def test_tags_rrm_source_is_reliable_seeds_of_cam_and_crf():
    image, _, labels = scene()
    inputs = weak_input(image, {"tags": [1], "cams": labels["cams"]}, weak="tags",
                        num_classes=2, config=TagSeeds(source="rrm"))
    scores = add_background(inputs.cams)
    crf_labels = crf(image, scores / scores.sum(1, keepdim=True), preset="psa").argmax(1)
    assert torch.equal(inputs.seeds, reliable_seeds(scores, crf_labels=crf_labels))
    confidence, cam_labels = scores.max(1)
    for cls in (0, 1):
        values = sorted(confidence[cam_labels == cls].tolist(), reverse=True)
        cut = values[round(0.4 * len(values)) - 1]
        top = sum(v >= cut for v in values)  # the top 40%, with the pixels tied at the cut
        kept = int((inputs.seeds == cls).sum())
        # at most the top 40% of the class's pixels (fewer where the CRF disagrees)
        assert 0 < kept <= top
    labelled = inputs.seeds != U
    assert (crf_labels[labelled] == inputs.seeds[labelled]).all()
    a2gnn = weak_input(image, {"tags": [1], "cams": labels["cams"]}, weak="tags",
                       num_classes=2, config=TagSeeds())
    assert not torch.equal(a2gnn.seeds, inputs.seeds)
    with pytest.raises(ValueError, match=r"TagSeeds.source must be one of \['a2gnn', 'rrm'\]"):
        weak_input(image, {"tags": [1], "cams": labels["cams"]}, weak="tags", num_classes=2,
                   config=TagSeeds(source="seam"))
