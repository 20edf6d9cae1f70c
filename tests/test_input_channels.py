"""Pretrained weights on another channel count (timm's in_chans with pretrained=True): the first
convolution's filters adapted so that equal channels give the published network's answer."""
import pytest
import torch

import agcnn_zoo as zoo
from agcnn_zoo.hub.weight_id import WeightId


@pytest.mark.parametrize("weight_id,channels", [("p4cnn_rotmnist", 3), ("z2cnn_rotmnist", 2),
                                                ("p4m_densenet_pcam", 1)])
def test_adapted_first_filters_give_the_published_answer_on_equal_channels(weight_id, channels,
                                                                           cache):
    published = zoo.create_model(weight_id, pretrained=True)
    adapted = zoo.create_model(weight_id, pretrained=True, in_chans=channels)
    c, h, w = published.pretrained_cfg["input_size"]
    assert adapted.pretrained_cfg["input_size"] == (channels, h, w)
    assert len(adapted.pretrained_cfg["mean"]) == len(adapted.pretrained_cfg["std"]) == channels
    torch.manual_seed(0)
    one = torch.randn(2, 1, h, w)
    with torch.no_grad():
        expected = published(one.expand(2, c, h, w).contiguous())
        got = adapted(one.expand(2, channels, h, w).contiguous())
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)
    # only the first convolution's filters changed
    a, p = adapted.state_dict(), published.state_dict()
    first = f"{published.pretrained_cfg['first_conv']}.weight"
    assert all(torch.equal(a[k], p[k]) for k in p if k != first)


def test_a_first_layer_with_attention_is_refused_before_any_download(cache, monkeypatch):
    from agcnn_zoo import api
    monkeypatch.setattr(api, "load_state_dict", lambda *a, **k: pytest.fail("fetched"))
    for weight_id in ("af_p4m_allcnnc_cifar", "asp_p4cnn_rotmnist", "coa_p4cnn_rotmnist"):
        channels = 1 if zoo.create_model(WeightId.model_of(weight_id)).in_chans == 3 else 3
        with pytest.raises(ValueError, match=f"in_chans={channels} has no exact adaptation"):
            zoo.create_model(weight_id, pretrained=True, in_chans=channels)


def test_timm_loads_pretrained_weights_on_one_channel(cache):
    timm = pytest.importorskip("timm")
    model = timm.create_model("p4m_densenet_pcam", pretrained=True, in_chans=1, num_classes=5)
    assert model.num_classes == 5 and model.pretrained_cfg["input_size"] == (1, 96, 96)
