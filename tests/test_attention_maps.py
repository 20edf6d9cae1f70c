"""attention_maps(): per attentive layer, the channel and spatial attention it applied; exactly
equivariant (float64) for p4 and p4m models; no change of numerics; the drawing command."""
from __future__ import annotations

import pytest
import torch

import agcnn_zoo as zoo
from agcnn_zoo import nn as gnn
from agcnn_zoo.groups import get_group
from agcnn_zoo.interpret import AttentionMap
from agcnn_zoo.models.allcnnc import FAP4MAllCNNC

TOL = 1e-12


class SmallFAP4MAllCNNC(FAP4MAllCNNC):
    """alpha_F p4m All-CNN-C with 4 / 8 channels (fast in float64)."""
    base_channels = 4
    channel_ratio = 2


class FullAlphaP4M(torch.nn.Module):
    """Full alpha p4m lifting + group convolution (both attentions) + a second group layer."""

    def __init__(self):
        super().__init__()
        g = "p4m"
        self.lift = gnn.AttLiftingConv(2, 3, 3, g, gnn.ResponseChannelAttention(3, 2, g, 1, lifting=True),
                                       gnn.ResponseSpatialAttention(3, 5, g, lifting=True), padding=1)
        self.gconv = gnn.AttGroupConv(3, 2, 3, g, gnn.ResponseChannelAttention(2, 3, g, 1),
                                      gnn.ResponseSpatialAttention(2, 3, g))
        self.ch_only = gnn.AttGroupConv(2, 2, 1, g, channel_attention=gnn.ResponseChannelAttention(2, 2, g, 2))

    def forward(self, x):
        return self.ch_only(torch.relu(self.gconv(torch.relu(self.lift(x)))))


def _models():
    yield "a_p4cnn_rotmnist", lambda: zoo.create_model("a_p4cnn_rotmnist"), (1, 28, 28)
    yield "af_p4cnn_rotmnist", lambda: zoo.create_model("af_p4cnn_rotmnist"), (1, 28, 28)
    yield "coa_p4cnn_rotmnist", lambda: zoo.create_model("coa_p4cnn_rotmnist"), (1, 28, 28)
    yield "af_p4m_allcnnc_small", SmallFAP4MAllCNNC, (3, 32, 32)
    yield "full_alpha_p4m", FullAlphaP4M, (2, 9, 9)


MODELS = {name: (build, size) for name, build, size in _models()}


def _run(name, seed=0):
    build, size = MODELS[name]
    torch.manual_seed(seed)
    model = build().double().eval()
    x = torch.randn(1, *size, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    return model, x


@pytest.mark.parametrize("name", list(MODELS))
def test_maps_rotate_and_permute_with_the_input_exactly(name):
    model, x = _run(name)
    group = get_group("p4m" if "p4m" in name else "p4")
    maps = zoo.attention_maps(model, x)
    assert maps and all(isinstance(m, AttentionMap) for m in maps.values())
    for m in maps.values():
        for t in (m.channel, m.spatial):
            if t is not None:
                assert t.dtype == torch.float64 and 0 < t.min() and t.max() < 1
    elements = [1] if group.order == 4 else [1, 4, 5]    # 90 degrees; mirror; both
    for i in elements:
        moved = zoo.attention_maps(model, group.act_on_plane(x, i))
        assert moved.keys() == maps.keys()
        for layer, m in maps.items():
            expected = m.transformed(i)
            for which in ("channel", "spatial"):
                a, b = getattr(moved[layer], which), getattr(expected, which)
                assert (a is None) == (b is None)
                if a is not None:
                    err = (a - b).abs().max().item()
                    assert err <= TOL, f"{name} {layer} {which} g{i}: {err:.3g}"
        # and the maps are not trivially invariant: the spatial maps move
        spatial = [m.spatial for m in maps.values() if m.spatial is not None]
        assert any((s - m2.spatial).abs().max() > 1e-3
                   for s, m2 in zip(spatial, [moved[k] for k, v in maps.items() if v.spatial is not None]))


def test_every_attentive_layer_is_reported_with_its_shapes():
    model, x = _run("a_p4cnn_rotmnist")
    maps = zoo.attention_maps(model, x)
    assert list(maps) == [f"c{i}" for i in range(1, 8)]
    assert maps["c1"].kind == "full_alpha"
    assert maps["c1"].channel.shape == (1, 10, 4, 1) and maps["c1"].spatial.shape == (1, 10, 4, 26, 26)
    assert maps["c2"].channel.shape == (1, 10, 4, 10, 4)
    assert maps["c2"].spatial.shape == (1, 10, 4, 4, 24, 24)
    model, x = _run("af_p4cnn_rotmnist")
    maps = zoo.attention_maps(model, x)
    assert maps["c1"].kind == "alpha_F" and maps["c1"].spatial.shape == (1, 1, 28, 28)
    assert maps["c2"].channel.shape == (1, 10, 4, 1, 1) and maps["c2"].spatial.shape == (1, 1, 4, 26, 26)
    model, x = _run("coa_p4cnn_rotmnist")
    maps = zoo.attention_maps(model, x)
    assert {m.kind for m in maps.values()} == {"co_attention"}
    assert all(m.channel is None for m in maps.values())
    assert zoo.attention_maps(zoo.create_model("p4cnn_rotmnist").eval(), torch.randn(1, 1, 28, 28)) == {}


@pytest.mark.parametrize("name", ["a_p4cnn_rotmnist", "af_p4cnn_rotmnist"])
def test_recording_changes_no_numerics_and_leaves_no_hooks(name):
    torch.manual_seed(0)
    model = zoo.create_model(name).eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        before = model(x)
        zoo.attention_maps(model, x)
        assert torch.equal(model(x), before)
    assert not any(m._forward_hooks for m in model.modules())


def test_alpha_f_maps_are_the_attention_applied():
    """Rebuild an alpha_F layer's output from its recorded maps: conv(x - beta (alpha x))."""
    torch.manual_seed(0)
    model = zoo.create_model("af_p4cnn_rotmnist").double().eval()
    x = torch.randn(2, 1, 28, 28, dtype=torch.float64)
    inputs = {}
    handle = model.c2.register_forward_hook(lambda m, i, o: inputs.update(x=i[0], y=o))
    maps = zoo.attention_maps(model, x)
    handle.remove()
    m = maps["c2"]
    h = inputs["x"]
    a = m.channel * h
    y = model.c2.conv_fast(h - m.spatial * a)          # the plain group convolution
    torch.testing.assert_close(y, inputs["y"], rtol=0, atol=1e-12)


def test_full_alpha_maps_rebuild_the_layer_output():
    from agcnn_zoo.nn import reference as ref
    torch.manual_seed(0)
    model = FullAlphaP4M().double().eval()
    x = torch.randn(2, 2, 9, 9, dtype=torch.float64)
    maps = zoo.attention_maps(model, x)
    layer = model.lift
    resp, _, _ = ref.full_alpha_terms(layer, x.unsqueeze(2))
    alpha = maps["lift"].channel.unsqueeze(-1)[..., None, None]          # [B, O, n, C, 1, 1, 1]
    beta = maps["lift"].spatial.unsqueeze(3).unsqueeze(3)                # [B, O, n, 1, 1, X, Y]
    y = (resp - beta * alpha * resp).sum(dim=(3, 4)) * layer.scale
    with torch.no_grad():
        torch.testing.assert_close(y, layer(x), rtol=0, atol=1e-12)
    assert maps["ch_only"].spatial is None and maps["ch_only"].channel.shape == (2, 2, 8, 2, 8)


def test_attention_command_draws_a_picture(tmp_path):
    pytest.importorskip("matplotlib")
    from PIL import Image
    from agcnn_zoo.__main__ import main
    digit = torch.zeros(28, 28, dtype=torch.uint8)
    digit[6:22, 12:16] = 255
    Image.fromarray(digit.numpy()).save(tmp_path / "digit.png")
    out = tmp_path / "maps.png"
    assert main(["attention", "af_p4cnn_rotmnist", "--random", "--image", str(tmp_path / "digit.png"),
                 "--out", str(out), "--rotate", "30"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out) as img:
        assert img.size[0] > 600 and img.size[1] > 600
    assert main(["attention", "p4cnn_rotmnist", "--random", "--image", str(tmp_path / "digit.png"),
                 "--out", str(tmp_path / "none.png")]) == 1      # no attentive layer: an error


# ------------------------------------------------------------------------------ the picture
@pytest.mark.parametrize("name", ["a_p4cnn_rotmnist", "af_p4cnn_rotmnist"])
def test_drawn_maps_turn_with_the_users_image(name):
    """The picture shows the maps in the user's frame: turning the user's digit by 90 degrees
    turns every drawn map by 90 degrees and moves its group panels one step (float64, exactly),
    both for digits as MNIST holds them (the weights take them so) and for digits held as the
    authors' files store them, which the model sees transposed (``transpose=True``)."""
    from agcnn_zoo.attention_plot import panels
    model, img = _run(name)
    group = get_group("p4")

    def drawn(image, transposed=True):
        return panels(zoo.attention_maps(model, image.transpose(-2, -1)), transposed)

    def error(before, after):
        worst = 0.0
        for layer, p in before.items():
            q = after[layer]
            s = p["spatial"]
            if s is not None:
                turned = (group.act_on_group_map(s, 1, group_dim=0) if s.shape[0] == group.order
                          else group.act_on_plane(s, 1))
                worst = max(worst, (q["spatial"] - turned).abs().max().item())
            c = p["channel"]
            if c is not None and c.shape[1] == group.order:
                worst = max(worst, (q["channel"] - c[:, group.axis_permutations[1]]).abs().max().item())
        return worst

    turned_img = group.act_on_plane(img, 1)
    natural = lambda image: panels(zoo.attention_maps(model, image), False)  # noqa: E731
    assert error(natural(img), natural(turned_img)) <= TOL
    assert error(drawn(img), drawn(turned_img)) <= TOL
    # drawn in the model's (transposed) frame instead, the maps turn the other way
    assert error(drawn(img, False), drawn(turned_img, False)) > 1e-3


def _grid_images(fig, n_rows, n_cols):
    rows = []
    for r in range(n_rows):
        axes = fig.axes[r * n_cols:(r + 1) * n_cols]
        rows.append([im for ax in axes[1:] for im in ax.images])
    return rows


def test_one_colour_scale_per_layer_and_a_subtitle_naming_the_kind():
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt
    from agcnn_zoo.attention_plot import MIN_SPAN, draw_attention
    g = get_group("p4")
    gen = torch.Generator().manual_seed(0)
    axes = ("batch", "channel", "g", "x", "y")
    flat = AttentionMap("alpha_F", g, 0.498 + 0.0025 * torch.rand(1, 10, 4, 1, 1, generator=gen),
                        0.498 + 0.0025 * torch.rand(1, 1, 4, 6, 6, generator=gen), axes, axes)
    wide = AttentionMap("alpha_F", g, 0.3 + 0.2 * torch.rand(1, 10, 4, 1, 1, generator=gen),
                        0.1 + 0.8 * torch.rand(1, 1, 4, 6, 6, generator=gen), axes, axes)
    fig = draw_attention(torch.zeros(1, 6, 6), torch.zeros(1, 1, 6, 6), {"flat": flat, "wide": wide})
    try:
        flat_row, wide_row = _grid_images(fig, 2, 6)
        assert len(flat_row) == len(wide_row) == 5          # 4 group elements + channel
        lo, hi = flat_row[0].get_clim()
        assert all(im.get_clim() == (lo, hi) for im in flat_row)
        assert hi - lo == pytest.approx(MIN_SPAN) and lo <= 0.498 and hi >= 0.5005
        values = torch.cat([wide.spatial.flatten(), wide.channel.flatten()]).double()
        expected = (values.min().item(), values.max().item())
        assert all(im.get_clim() == pytest.approx(expected) for im in wide_row)
        title = fig._suptitle.get_text()
        assert "alpha_F: attention on each layer's input feature map" in title
        assert "full alpha" not in title and "one colour scale per layer" in title
    finally:
        plt.close(fig)
    full = zoo.attention_maps(*_run("a_p4cnn_rotmnist"))
    fig = draw_attention(torch.zeros(1, 28, 28), torch.zeros(1, 1, 28, 28), full, transposed=True)
    try:
        title = fig._suptitle.get_text()
        assert "full alpha" in title and "averaged over output channels" in title
        assert "alpha_F" not in title and "saw it transposed" in title
    finally:
        plt.close(fig)
