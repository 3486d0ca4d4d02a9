"""Edit fidelity: sandbox edits score ok; source-ignoring edits and copies are flagged."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runner.files.fidelity import (
    EditFlag,
    FidelityError,
    FidelityThresholds,
    edit_fidelity,
    edit_score,
    ssim,
)
from runner.sandbox.render import RenderSpec, render_copy, render_edit, render_generation

EXAMPLES = Path(__file__).resolve().parents[2] / "jobs" / "examples" / "sources"
THRESHOLDS = FidelityThresholds()


def _sources() -> list[bytes]:
    """The example photos, and sandbox pictures too small for the sandbox's caption band.

    Two captioned sandbox pictures share that band's structure whatever their prompts (up to
    0.74 between unrelated ones), so a captioned one would be no fair source.
    """
    found = [(EXAMPLES / "mug.png").read_bytes(), (EXAMPLES / "sneaker.jpg").read_bytes()]
    found += [
        render_generation(RenderSpec(prompt=f"a source scene {i}", width=120, height=96))
        for i in range(4)
    ]
    return found


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_sandbox_edits_keep_the_source_and_fresh_pictures_do_not(fmt: str) -> None:
    for i, source in enumerate(_sources()):
        spec = RenderSpec(prompt=f"recolour it {i}", width=320, height=256, fmt=fmt, compression=80)
        edit = edit_fidelity(source, render_edit(spec, source), THRESHOLDS)
        fresh = edit_fidelity(source, render_generation(spec), THRESHOLDS)
        copy = edit_fidelity(source, render_copy(spec, source), THRESHOLDS)
        assert edit.flag is EditFlag.OK, edit
        assert fresh.flag is EditFlag.IGNORED_SOURCE, fresh
        assert copy.flag is EditFlag.UNCHANGED, copy
        assert fresh.score < edit.score < copy.score


def test_a_masked_edit_with_a_small_visible_change_is_not_unchanged() -> None:
    source = (EXAMPLES / "mug.png").read_bytes()
    mask = (EXAMPLES / "mug-mask.png").read_bytes()
    spec = RenderSpec(prompt="gold star logo", width=512, height=512)
    found = edit_fidelity(source, render_edit(spec, source, mask), THRESHOLDS)
    assert found.flag is EditFlag.OK
    assert found.score > 0.9


def test_identical_images_score_one_and_the_source_is_fitted_to_the_output(tmp_path: Path) -> None:
    source = render_generation(RenderSpec(prompt="wide scene", width=600, height=300))
    assert edit_score(source, source) == 1.0
    # A square output of the wide source: compared with its centre crop, not a squashed copy.
    square = render_copy(RenderSpec(prompt="x", width=300, height=300), source)
    path = tmp_path / "square.png"
    path.write_bytes(square)
    assert edit_score(source, path) > 0.99


def test_ssim_of_unrelated_noise_is_near_zero() -> None:
    rng = np.random.default_rng(3)
    a = rng.uniform(0, 255, (64, 64))
    b = rng.uniform(0, 255, (64, 64))
    assert abs(ssim(a, b)) < 0.05
    assert ssim(a, a) == pytest.approx(1.0)


def test_thresholds_flag_scores_and_reject_nonsense() -> None:
    thresholds = FidelityThresholds(ignored_below=0.4, unchanged_above=0.9)
    assert thresholds.flag(0.39) is EditFlag.IGNORED_SOURCE
    assert thresholds.flag(0.4) is EditFlag.OK
    assert thresholds.flag(0.9) is EditFlag.UNCHANGED
    with pytest.raises(ValueError, match="ignored_below < unchanged_above"):
        FidelityThresholds(ignored_below=0.9, unchanged_above=0.5)


def test_missing_or_broken_images_raise_fidelity_error(tmp_path: Path) -> None:
    good = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 20, 30)).save(good, "PNG")
    with pytest.raises(FidelityError, match="source image is missing"):
        edit_score(tmp_path / "gone.png", good.getvalue())
    with pytest.raises(FidelityError, match="output image does not decode"):
        edit_score(good.getvalue(), b"not an image")
