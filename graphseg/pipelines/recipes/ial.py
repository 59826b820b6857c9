r"""IAL's iterative affinity learning: an EM loop between a unary and a pairwise network.

Following the IAL review (DESIGN §6):

- a **unary network** F gives class probabilities :math:`\alpha_u`; it first learns from the
  seeds (partial cross-entropy);
- a **pairwise network** (here an :class:`~graphseg.nn.AffinityCNN`; the paper uses a spatial
  propagation network) gives a windowed graph W and the transformation G
  (:func:`~graphseg.propagate.ial_refine`): by default the paper's :math:`G = I - D + W`, each
  row of W whose sum exceeds 1 divided by it (the spatial propagation network's normalisation,
  which keeps G non-negative), applied once (``IALConfig.variant``);
- **E-step**: :math:`\alpha_p = G \alpha_u`;
- **M-step**: the pairwise network is trained on confident regions Y mined from
  :math:`\alpha_u` (superpixels ≥ 80% one class, minus the regions whose class the region
  classifier :math:`f^m` — mask pooling over the unary features and a linear layer, trained on
  the mined regions with :math:`L_m`, :class:`~graphseg.nn.unary.RegionClassifier` — predicts
  otherwise) with
  :math:`-Y^\top \log \alpha_p + \lambda \|G - G_s\|^2` over the window entries, G_s the
  superpixel co-membership affinity normalised like G; then F is retrained from its
  initialisation on :math:`\alpha_p` (soft targets, the seeds overriding) with the energy
  term of IAL's objective on a fixed graph:
  :math:`-\sum_p \alpha_{p}^\top \log \alpha_{u} + \mu\, L_{quad}(\alpha_u; W_{ref} / d_{max})`
  (:func:`~graphseg.losses.quadratic_pairwise_loss`), W_ref the RGB kernel graph.

Two choices keep the loop descending (measured on grabcut and voc14, README results):
retraining F from scratch, as self-training rounds do, keeps every round's fit equally sharp
(continuing the previous round's network made α_u sharper round after round), and the energy
term makes the M-step minimise the same energy the rounds are judged by; without it, fitting
α_p alone stalled after two rounds and its energy rose again in the last round on grabcut.

Each image runs its own loop (networks trained from scratch on that image, like the A²GNN
pipeline). From image tags (IAL's own setting) the seeds are the CAMs' confident pixels M'_I and
the unary network starts from them; the probabilities cover the seeded classes. Convergence is
not guaranteed while the graph is learned, so every round reports the energy
:math:`\alpha_u^\top L \alpha_u` per pixel on a fixed reference graph (the RGB kernel graph)
and, given ground truth, the pseudo-label accuracy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphseg import _checks
from graphseg._io import atomic_path, load_state
from graphseg.graph.offsets import window_offsets
from graphseg.graph.superpixel import superpixels
from graphseg.graph.window import WindowGraph, pixel_graph
from graphseg.losses import quadratic_pairwise_loss, seed_cross_entropy
from graphseg.nn.affinity import AffinityCNN
from graphseg.nn.backbone import ResNetBackbone
from graphseg.nn.train import resample_seeds
from graphseg.nn.unary import RegionClassifier, UnaryNet, region_pool
from graphseg.ops.reference import gather_neighbours
from graphseg.pipelines._common import UNKNOWN, image_and_seeds, renumber, upsample, working
from graphseg.pipelines.kinds import WeakInput
from graphseg.pipelines.registry import register_recipe
from graphseg.propagate import ial_refine
from graphseg.propagate.ial import _transform_scale
from graphseg.seeds import mine_confident_regions
from graphseg.seeds.expand import global_regions

__all__ = ["IALConfig", "IALResult", "RoundReport", "ial_em", "reference_energy"]

_POOL_BATCH = 16
"""Images embedded at once when the region classifier's features are pooled."""


@dataclass(frozen=True)
class IALConfig:
    """Settings of the EM loop (one set for every image)."""

    rounds: int = 3
    """EM rounds."""
    size: int = 128
    """Working resolution: the longer image side is resized to this."""
    stride: int = 2
    """Stride of both networks' outputs (the graph's resolution)."""
    unary_steps: int = 120
    pairwise_steps: int = 40
    """Adam steps of each unary fit (from scratch every round) and of each pairwise M-step (the
    pairwise network keeps learning across rounds)."""
    lr: float = 3e-3
    radius: int = 3
    """Window radius of the learned graph."""
    variant: str = "paper"
    """The E-step's transformation (:func:`~graphseg.propagate.ial_refine`): ``"paper"``,
    IAL's :math:`G = I - D + W` (rows of W summing to more than 1 divided by their sum, as the
    spatial propagation network normalises its weights) applied once; ``"scaled"``,
    :math:`G = I - L / d_{max}` applied ten times, the operator of graphseg's earlier releases
    (symmetric, but one step moves little mass, hence the ten steps)."""
    refine_steps: int | None = None
    """Applications of G in the E-step, α_p = G^t α_u (None: 1 for ``"paper"``, 10 for
    ``"scaled"``)."""
    ratio: float = 0.8
    """Share of a superpixel's pixels that makes it a confident region."""
    n_segments: int = 200
    """SLIC superpixels at the working resolution."""
    smoothness: float = 1.0
    """λ of the region smoothness loss ‖G − G_s‖²."""
    region_steps: int = 50
    """Adam steps of the region classifier f^m on each round's mined regions (L_m)."""
    energy_weight: float = 5.0
    """μ of the unary M-step's energy term on the reference graph (0 = fit α_p alone)."""
    seed: int = 0


class RoundReport(NamedTuple):
    """One EM round: the energy of α_u on the reference graph (per pixel), the accuracy of
    argmax α_u and α_p against the ground truth (None without it), and the confident regions'
    share of the pixels."""

    round: int
    energy: float
    unary_accuracy: float | None
    refined_accuracy: float | None
    confident_share: float


@dataclass
class IALResult:
    """The pseudo-labels (argmax α_p) of the last round at image resolution, its probabilities,
    the labels of every round run here, and the per-round reports."""

    labels: Tensor
    probs: Tensor
    round_labels: list[Tensor] = field(default_factory=list)
    reports: list[RoundReport] = field(default_factory=list)


def reference_energy(probs: Tensor, graph: WindowGraph) -> float:
    r"""The energy :math:`\frac{1}{N} \sum_c \alpha_c^\top L \alpha_c` of ``(B, C, H, W)``
    probabilities on a fixed graph, :math:`L = D - W` of its symmetrised weights (self loops
    cancel)."""
    graph = graph.symmetrize().without_self_loops()
    degree = graph.degree().unsqueeze(1)
    quadratic = probs * (degree * probs - graph._aggregate(probs))
    return float(quadratic.sum() / (probs.shape[0] * probs.shape[2] * probs.shape[3]))


def _accuracy(labels: Tensor, truth: Tensor | None) -> float | None:
    if truth is None:
        return None
    scored = truth != UNKNOWN
    return float((labels[scored] == truth[scored]).float().mean()) if scored.any() else None


def _comembership(regions: Tensor, offsets: Tensor) -> Tensor:
    """G_s on window entries: 1 / |S| between pixels of one superpixel S, 0 otherwise,
    ``(B, K, h, w)`` — the row-stochastic co-membership affinity restricted to the window."""
    node, count = global_regions(regions)
    size = torch.bincount(node.reshape(-1), minlength=count).to(torch.float32)
    same = gather_neighbours(node[:, None].float(), offsets) == node[:, None].float()
    return same.float() / size[node][:, None]


def _refine_steps(config: IALConfig) -> int:
    if config.refine_steps is not None:
        return config.refine_steps
    return 1 if config.variant == "paper" else 10


def _refine(pairwise: AffinityCNN, image: Tensor, unary: Tensor, config: IALConfig
            ) -> tuple[Tensor, WindowGraph]:
    graph = pairwise.to_graph(image, radius=config.radius, threshold=None)
    refined = ial_refine(graph, unary, variant=config.variant, num_steps=_refine_steps(config))
    return refined, graph


def _mine(unary: UnaryNet, image: Tensor, alpha_u: Tensor, regions: Tensor,
          config: IALConfig) -> Tensor:
    """Confident regions: superpixels ≥ ``ratio`` one class of argmax α_u, minus those whose
    class the region classifier f^m, trained on them with L_m, predicts otherwise."""
    candidates = mine_confident_regions(alpha_u, regions, ratio=config.ratio)
    node, count = global_regions(regions)
    labels = torch.full((count,), UNKNOWN, dtype=torch.int64).scatter_(
        0, node.reshape(-1), candidates.reshape(-1))
    if not bool((labels != UNKNOWN).any()):
        return candidates
    with torch.no_grad():
        # pooled a few images at a time: a folder's feature maps need not fit in memory at once
        # (region ids are shifted image by image, so the pieces concatenate in order)
        pooled = torch.cat([region_pool(unary.embed(image[start : start + _POOL_BATCH]),
                                        regions[start : start + _POOL_BATCH])
                            for start in range(0, len(image), _POOL_BATCH)])
    classifier = RegionClassifier(pooled.shape[1], alpha_u.shape[1]).fit_pooled(
        pooled, labels, steps=config.region_steps, lr=config.lr)
    with torch.no_grad():
        classified = classifier.linear(pooled).argmax(1)[node]
    return mine_confident_regions(alpha_u, regions, ratio=config.ratio, classified=classified)


def _fresh_unary(classes: int, config: IALConfig) -> UnaryNet:
    """The unary network at its initialisation (the same one every round)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return UnaryNet(classes, stride=config.stride)


def _unary_loss(logits: Tensor, targets: Tensor,
                energy: tuple[WindowGraph, float] | None = None) -> Tensor:
    """Seeds ``(B, h, w)`` (partial cross-entropy) or soft targets ``(B, C, h, w)`` (the
    expected log-likelihood under α_p: EM's M-step), plus ``weight * L_quad(α_u; graph)`` when
    ``energy = (graph, weight)`` is given."""
    if targets.dim() == 4:
        loss = -(targets * logits.log_softmax(1)).sum(1).mean()
    else:
        loss = seed_cross_entropy(logits, targets, variant="paper")
    if energy is not None and energy[1] > 0:
        loss = loss + energy[1] * quadratic_pairwise_loss(logits.softmax(1), energy[0])
    return loss


def _fit_unary(model: UnaryNet, image: Tensor, targets: Tensor, steps: int, lr: float,
               energy: tuple[WindowGraph, float] | None = None) -> None:
    """``steps`` Adam steps of :func:`_unary_loss` on one image."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        loss = _unary_loss(model(image), targets, energy)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def _pairwise_loss(model: AffinityCNN, image: Tensor, unary: Tensor, confident: Tensor,
                   target: Tensor, config) -> Tensor:
    r"""IAL's pairwise M-step loss: :math:`-Y^\top \log \alpha_p` over the confident
    pixels plus ``smoothness`` times ‖G − G_s‖² over the window entries."""
    refined, graph = _refine(model, image, unary, config)
    log_refined = refined.clamp_min(1e-8).log()
    picked = log_refined.gather(1, confident.clamp(max=refined.shape[1] - 1)[:, None])[:, 0]
    known = confident != UNKNOWN
    fit = -picked[known].mean() if bool(known.any()) else picked.sum() * 0
    # G's window entries, normalised as ial_refine's transformation normalises them
    graph, scale = _transform_scale(graph, config.variant)
    smooth = (graph.weight / scale[:, None] - target).square().sum(1).mean()
    return fit + config.smoothness * smooth


def _fit_pairwise(model: AffinityCNN, image: Tensor, unary: Tensor, confident: Tensor,
                  target: Tensor, config: IALConfig) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    model.train()
    for _ in range(config.pairwise_steps):
        loss = _pairwise_loss(model, image, unary, confident, target, config)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def _pairwise_network(stride: int) -> AffinityCNN:
    """IAL's pairwise network: a small affinity CNN (the paper uses a spatial propagation
    network), its graph at ``stride``."""
    return AffinityCNN(ResNetBackbone(widths=(16, 16, 32), stem_width=16, stride=stride),
                       reductions=(16, 16, 16))


def _reference_graphs(small: Tensor, grid: tuple[int, int], radius: int
                      ) -> tuple[WindowGraph, WindowGraph]:
    """The RGB kernel graph of each image at the networks' grid (no self loops), and the
    same divided by each image's largest degree (the energy term's graph)."""
    reference = pixel_graph(F.interpolate(small, size=grid, mode="bilinear",
                                          align_corners=False), radius=radius)
    reference = reference.without_self_loops()
    largest = reference.degree().amax(dim=(1, 2)).clamp_min(1e-30)
    return reference, reference._with(reference.weight / largest[:, None, None, None], None)


def _save(path: Path, round_index: int, unary: nn.Module, pairwise: nn.Module,
          reports: list[RoundReport]) -> None:
    state = {"round": torch.tensor(round_index),
             "unary": unary.state_dict(), "pairwise": pairwise.state_dict(),
             "reports": torch.tensor([[r.energy, -1.0 if r.unary_accuracy is None
                                       else r.unary_accuracy,
                                       -1.0 if r.refined_accuracy is None
                                       else r.refined_accuracy, r.confident_share]
                                      for r in reports])}
    with atomic_path(path) as temporary:
        torch.save(state, temporary)


def ial_em(image, seeds: Tensor, *, num_classes: int | None = None,
           config: IALConfig | None = None, truth: Tensor | None = None,
           checkpoint: str | os.PathLike | None = None) -> IALResult:
    """Runs IAL's EM loop on one image.

    Args:
        image: one image: ``(3, H, W)`` / ``(1, 3, H, W)`` float in [0, 1], or any image
            form of docs/images.md.
        seeds: ``(H, W)`` or ``(1, H, W)`` int64 seeds, 255 = unknown.
        num_classes: C (default: largest seed + 1).
        config: :class:`IALConfig`.
        truth: optional ``(H, W)`` ground truth (255 = not scored) for the reports.
        checkpoint: optional file; the networks and reports are saved there after every round
            (tensors only, loadable with ``weights_only=True``) and a run resumes from it.

    Returns:
        :class:`IALResult` with the last round's α_p labels and probabilities at image
        resolution and one :class:`RoundReport` per round (round 0: after the first unary fit).
    """
    config = IALConfig() if config is None else config
    _checks.check_positive("rounds", config.rounds, integer=True)
    _checks.check_choice("variant", config.variant, ("paper", "scaled"))
    if config.refine_steps is not None:
        _checks.check_positive("refine_steps", config.refine_steps, integer=True)
    _checks.check_positive("energy_weight", config.energy_weight, allow_zero=True)
    image, seeds, classes = image_and_seeds(image, seeds, num_classes)
    height, width = image.shape[2:]
    small = working(image, config.size)
    grid = tuple(-(-s // config.stride) for s in small.shape[2:])
    grid_seeds = resample_seeds(seeds, grid)
    grid_truth = None if truth is None else resample_seeds(
        _checks.as_label_batch(truth, "truth"), grid)
    regions = resample_seeds(superpixels(small, n_segments=config.n_segments), grid)
    reference, scaled_reference = _reference_graphs(small, grid, config.radius)
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        torch.manual_seed(config.seed)
        pairwise = _pairwise_network(config.stride)
        unary = _fresh_unary(classes, config)
        reports: list[RoundReport] = []
        start = 0
        path = None if checkpoint is None else Path(checkpoint)
        if path is not None and path.exists():
            what = "checkpoint of ial_em"
            state = load_state(path, what)
            try:
                unary.load_state_dict(state["unary"])
                pairwise.load_state_dict(state["pairwise"])
                reports = [RoundReport(i, float(row[0]), None if row[1] < 0 else float(row[1]),
                                       None if row[2] < 0 else float(row[2]), float(row[3]))
                           for i, row in enumerate(state["reports"])]
                start = int(state["round"]) + 1
            except (KeyError, RuntimeError, TypeError, IndexError) as error:
                raise ValueError(f"{path} is not a {what} of this configuration: "
                                 f"{type(error).__name__}: {error}") from None
        else:
            _fit_unary(unary, small, grid_seeds, config.unary_steps, config.lr)
        target = _comembership(regions, window_offsets(config.radius, "disk"))
        refined = None
        round_labels = []
        for round_index in range(start, config.rounds + 1):
            with torch.no_grad():
                logits = unary(small)
                alpha_u = logits.softmax(1)
                refined, _ = _refine(pairwise, small, alpha_u, config)
            round_labels.append(upsample(refined, (height, width)).argmax(1)[0])
            confident = _mine(unary, small, alpha_u, regions, config)
            confident = torch.where(grid_seeds != UNKNOWN, grid_seeds, confident)
            reports.append(RoundReport(
                round_index, reference_energy(alpha_u, reference),
                _accuracy(alpha_u.argmax(1), grid_truth), _accuracy(refined.argmax(1), grid_truth),
                float((confident != UNKNOWN).float().mean())))
            if round_index == config.rounds:
                break
            _fit_pairwise(pairwise, small, alpha_u, confident, target, config)
            with torch.no_grad():
                refined, _ = _refine(pairwise, small, alpha_u, config)
            seeded = (grid_seeds != UNKNOWN)[:, None]
            one_hot = F.one_hot(grid_seeds.clamp(max=classes - 1), classes).movedim(-1, 1)
            soft = torch.where(seeded, one_hot.to(refined.dtype), refined)
            unary = _fresh_unary(classes, config)
            _fit_unary(unary, small, soft, config.unary_steps, config.lr,
                       (scaled_reference, config.energy_weight))
            if path is not None:
                _save(path, round_index, unary, pairwise, reports)
    probs = upsample(refined, (height, width))
    return IALResult(probs.argmax(1)[0], probs[0], round_labels, reports)



@register_recipe("ial", kinds=("boxes", "points", "scribbles", "tags"), config=IALConfig,
                 summary="IAL's EM loop: a unary and a pairwise network trained on the image, "
                         "alternating α_p = G α_u and refits; from tags the unary network "
                         "starts from the CAMs' confident seeds")
def ial(image: Tensor, inputs: WeakInput, config: IALConfig, *, model=None,
        details: dict | None = None) -> Tensor:
    # the loop runs over the channels that hold seeds: every channel for boxes, points and
    # scribbles; for tags the classes of the CAMs' confident seeds M'_I, from which the unary
    # network starts (untagged classes have no seed and stay at 0)
    present, local = renumber(inputs.local)
    probs = torch.zeros(1, len(inputs.classes), *image.shape[2:])
    if len(present) == 1:
        probs[:, present] = 1.0
        return probs
    result = ial_em(image, local, num_classes=len(present), config=config)
    probs[:, present] = result.probs[None]
    if details is not None:
        details["ial_reports"] = result.reports
    return probs
