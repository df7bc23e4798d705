"""Real images degraded as G's failures look, as D's extra fakes: what `round` does to a render, who picks it."""

from __future__ import annotations

import pytest
import torch

from datamodules.shapes import Scene, ShapeObject, render_tensor
from lightning_modules.components.degrade import degrade, gaussian_blur


def star() -> torch.Tensor:
    scene = Scene(objects=(ShapeObject(shape="star", color="white", size="large", position="center"),))
    return render_tensor(scene, 32)[None]


def tip_ink(images: torch.Tensor) -> float:
    """Ink beyond 0.7 of the star's reach from its centre (its five points), from the real star's geometry."""
    real = star().amax(1)[0] + 1
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    cy, cx = float((real * ys).sum() / real.sum()), float((real * xs).sum() / real.sum())
    distance = ((ys - cy) ** 2 + (xs - cx) ** 2).sqrt()
    reach = float(distance[real > 1.0].max())
    return float(((images.amax(1)[0] + 1) * (distance > 0.7 * reach) * (distance <= reach)).sum())


def test_blur_keeps_the_ink_and_softens_the_edge():
    image = torch.zeros(1, 1, 9, 9)
    image[..., 4, 4] = 1.0
    out = gaussian_blur(image, torch.tensor([1.0]))
    assert float(out.sum()) == pytest.approx(1.0, abs=1e-4)  # ink kept far from the border
    assert float(out.max()) < 0.2 and float(out[..., 4, 3]) > 0.05


def halfway(images: torch.Tensor) -> int:
    """Pixels between the background and the object's colour: the edge's width."""
    value = images.amax(1)
    return int(((value > -0.6) & (value < 0.6)).sum())


def test_round_keeps_crisp_edges_and_cuts_the_points():
    """The blur alone softens the star's edges; ``round`` then makes them crisp again, and the star
    loses ink at its points: a rounded, crisp blob, as G's failures look."""
    real = star()
    ink = real.amax(1, keepdim=True) + 1
    blurred = gaussian_blur(ink, torch.tensor([1.2])) - 1
    rounded = degrade(real, "round", (1.2, 1.2), torch.Generator().manual_seed(0))
    assert rounded.shape == real.shape and float(rounded.min()) >= -1 and float(rounded.max()) <= 1
    assert halfway(blurred) > 2 * halfway(real)
    assert halfway(rounded) <= halfway(real) + 4
    assert tip_ink(rounded) < 0.75 * tip_ink(real)


def test_round_keeps_each_objects_colour():
    """Two objects of different brightness: each keeps its own colour where it keeps its ink."""
    scene = Scene(objects=(ShapeObject(shape="square", color="white", size="large", position="left"),
                           ShapeObject(shape="square", color="blue", size="large", position="right")))
    real = render_tensor(scene, 32)[None]
    rounded = degrade(real, "round", (1.0, 1.0), torch.Generator().manual_seed(0))
    for cols in (slice(0, 16), slice(16, 32)):  # left and right half
        core = real[0, :, 12:20, cols].amax(0) > 0.9
        assert torch.allclose(rounded[0, :, 12:20, cols][:, core], real[0, :, 12:20, cols][:, core], atol=0.05)


def test_degrade_is_reproducible_and_refuses_unknown_policies():
    real = star().repeat(3, 1, 1, 1)
    a = degrade(real, "round", (0.7, 1.4), torch.Generator().manual_seed(5))
    b = degrade(real, "round", (0.7, 1.4), torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and not torch.equal(a[0], a[1])  # a sigma per image
    with pytest.raises(ValueError, match="model.degraded_policy"):
        degrade(real, "blur", (0.7, 1.4), torch.Generator())


@pytest.mark.integration
def test_training_with_degraded_reals_logs_their_term(tmp_path):
    """``model.degraded_weight``: D's step judges the degraded reals with the fakes and logs their term."""
    import csv
    import math

    from conftest import compose_train
    from lightning_modules.training import run_training

    cfg = compose_train(tmp_path, ["logger=csv", "model.degraded_weight=1.0", "trainer.max_steps=6",
                                   "trainer.val_check_interval=100", "trainer.log_every_n_steps=1",
                                   "callbacks.model_checkpoint=null"])
    run_training(cfg)
    rows = [r for r in csv.DictReader(open(next(tmp_path.rglob("metrics.csv")))) if r.get("train/d_degraded")]
    assert len(rows) == 3 and all(math.isfinite(float(r["train/d_degraded"])) for r in rows)


def test_the_data_set_picks_the_policy(tmp_path):
    """Shapes renders name ``round``; data without a policy (captions on photos) turn the term off
    whatever the weight; an unknown policy is refused before training."""
    from conftest import compose_train
    from gan_ga_utils.errors import ConfigError
    from lightning_modules.loading import build_module

    cfg = compose_train(tmp_path, [])
    assert cfg.model.degraded_weight == 1.0 and cfg.model.degraded_policy == "round"
    assert build_module(cfg).degraded_weight == 1.0
    assert build_module(compose_train(tmp_path, ["data.degrade_policy=null"])).degraded_weight == 0.0
    with pytest.raises(ConfigError, match="model.degraded_policy"):
        build_module(compose_train(tmp_path, ["data.degrade_policy=blur"]))
    # reversed, zero, not a pair, a bool, infinite: named before the blur sees it
    for bad in ("[1.4,0.7]", "[0,1]", "1.0", "[0.7]", "[true,1.0]", "[0.7,inf]"):
        with pytest.raises(ConfigError, match=r"model\.degraded_sigma=.*two finite numbers > 0, the first at most"):
            build_module(compose_train(tmp_path, [f"model.degraded_sigma={bad}"]))
