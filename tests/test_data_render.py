"""Chest-like renderings: deterministic, sized, and each label's texture distinct."""

from __future__ import annotations

import numpy as np

from qcxr.data.render import Renderer, Texture, label_textures
from qcxr.labels import CXR19


def test_every_nih_label_has_its_own_texture_then_the_others():
    textures = label_textures(["Lung Opacity", "Effusion", "No Finding"])
    assert list(textures) == [*CXR19, "Lung Opacity"]
    assert len(set(textures.values())) == len(textures)
    assert all(isinstance(t, Texture) for t in textures.values())


def test_render_is_uint8_of_the_size_and_deterministic():
    renderer = Renderer(40, 46, seed=1)
    first = renderer.render(["Mass"], np.random.default_rng(5))
    again = Renderer(40, 46, seed=1).render(["Mass"], np.random.default_rng(5))
    assert first.dtype == np.uint8 and first.shape == (40, 46)
    np.testing.assert_array_equal(first, again)


def test_a_finding_changes_the_image():
    renderer = Renderer(64, 64, seed=0)
    plain = renderer.render([], np.random.default_rng(3), noise=0.0)
    finding = renderer.render(["Nodule"], np.random.default_rng(3), noise=0.0)
    assert np.abs(plain.astype(int) - finding.astype(int)).max() > 10
