"""TDNN builder, Waibel 1989 preset, the unshared twin."""

import pytest
import torch
import torch.nn.functional as F

from tying.models import TDNN, TDNNLayer
from tying.nn import LocallyConnected1d, Subsample, TimeDelay


def count(m):
    return sum(p.numel() for p in m.parameters())


def test_waibel1989_layout():
    net = TDNN.waibel1989()
    layers = [m for m in net.body if isinstance(m, TimeDelay)]
    assert [(m.in_channels, m.out_channels, m.window) for m in layers] == [(16, 8, 3), (8, 3, 5)]
    assert count(net) == (16 * 8 * 3 + 8) + (8 * 3 * 5 + 3)
    x = torch.randn(4, 16, 15)
    out = net(x)
    assert out.shape == (4, 3)
    feats = net.features(x)
    assert feats.shape == (4, 3, 9)  # 15 − 2 − 4 frames
    torch.testing.assert_close(out, feats.sum(dim=2))  # summed over time


def test_parameters_constant_in_length_twin_grows():
    net = TDNN(1, [TDNNLayer(4, window=5), TDNNLayer(8, window=3, subsample=2)], 10,
               readout="mean")
    n = count(net)
    for t in (20, 40, 80):
        assert net(torch.randn(2, 1, t)).shape == (2, 10)
        assert count(net) == n
    twins = [count(net.unshared_twin(t)) for t in (20, 40, 80)]
    assert twins[0] < twins[1] < twins[2]
    twin = net.unshared_twin(40)
    assert any(isinstance(m, LocallyConnected1d) for m in twin.body)
    assert any(isinstance(m, Subsample) for m in twin.body)
    assert twin(torch.randn(2, 1, 40)).shape == (2, 10)


def test_builder_matches_manual_stack():
    torch.manual_seed(0)
    net = TDNN(3, [(5, 3), (4, (-2, 0, 2)), TDNNLayer(2, window=2, stride=2)], readout="max")
    x = torch.randn(2, 3, 30)
    h = x
    for m in net.body:
        h = m(h)
    torch.testing.assert_close(net(x), h.amax(dim=2))
    assert net.body[1].context == (-2, 0, 2) and net.body[2].stride == 2


def test_trainable_subsample_and_flatten_readout():
    net = TDNN(2, [TDNNLayer(4, window=3, subsample=2, trainable_subsample=True)], 3,
               readout="flatten", input_length=11)
    assert net.out_length == 4
    assert net(torch.randn(5, 2, 11)).shape == (5, 3)
    assert count(net) == (2 * 4 * 3 + 4) + 8 + (16 * 3 + 3)


def test_bad_inputs():
    with pytest.raises(ValueError, match="input_length"):
        TDNN(2, [(3, 3)], shared=False)
    with pytest.raises(ValueError, match=r"layer 1.*input_length=4 is shorter than the context"):
        TDNN(2, [(3, 5), (3, 5)], shared=False, input_length=8)
    with pytest.raises(ValueError, match="readout"):
        TDNN(2, [(3, 3)], readout="avg")
    with pytest.raises(TypeError, match="TDNNLayer"):
        TDNN(2, [3])
    net = TDNN.waibel1989()
    with pytest.raises(ValueError, match=r"\(B, C=16, T\).*\(2, 15, 16\)"):
        net(torch.randn(2, 15, 16))
    with pytest.raises(ValueError, match="shorter than the context"):
        net(torch.randn(2, 16, 5))


def test_pad_gives_edge_frames_full_windows():
    torch.manual_seed(0)
    layers = [TDNNLayer(4, window=5), TDNNLayer(3, window=3, subsample=2)]
    net = TDNN(2, layers, readout="flatten", input_length=12, pad=3)
    plain = TDNN(2, layers, readout="flatten", input_length=18)
    plain.load_state_dict(net.state_dict())          # same parameters: pad adds none
    x = torch.randn(4, 2, 12)
    # padding is exactly running the unpadded stack on a zero-extended sequence
    torch.testing.assert_close(net(x), plain(torch.nn.functional.pad(x, (3, 3))))
    assert net.out_length == (18 - 4 - 2) // 2
    twin = net.unshared_twin()
    assert twin.pad == 3 and twin(x).shape == net(x).shape
    with pytest.raises(ValueError, match="pad must be a non-negative int"):
        TDNN(2, layers, pad=-1)
    with pytest.raises(ValueError, match="or 'same'"):
        TDNN(2, layers, pad="valid")
    with pytest.raises(ValueError, match=r"layer 0 .*must be distinct"):  # named, as without pad
        TDNN(2, [TDNNLayer(3, context=(0, 0))], pad="same")


def test_same_pad_pads_every_layer_by_its_context():
    torch.manual_seed(0)
    layers = [TDNNLayer(4, context=(-2, -1, 0, 1, 2)), TDNNLayer(3, context=(-7, 2)),
              TDNNLayer(5, window=3, stride=2)]
    net = TDNN(2, layers, readout="flatten", input_length=11, pad="same", activation="relu")
    x = torch.randn(3, 2, 11)
    # by hand: each TimeDelay sees its input zero-extended by -min(context) and max(context)
    tds = [m for m in net.body if isinstance(m, TimeDelay)]
    h = tds[0](F.pad(x, (2, 2)))
    h = tds[1](F.pad(h, (7, 2)))
    h = tds[2](F.pad(h, (2, 0)))
    assert h.shape == (3, 5, 6) and net.out_length == 6  # 11 → 11 → 11 → ⌈11 / 2⌉
    torch.testing.assert_close(net.features(x), h)
    twin = net.unshared_twin()  # the same padding in front of every locally connected layer
    assert twin.pad == "same" and twin(x).shape == net(x).shape
    assert twin.body[1].output_length == 11


@pytest.mark.parametrize("context", [(1, 4, 5), (-3, -1), (3,), (0,)])
def test_same_pad_keeps_frames_aligned_for_one_sided_contexts(context):
    """Output frame t reads input frames t + o: a context that does not straddle 0 crops one
    end (negative padding) rather than adding frames that see only zeros."""
    torch.manual_seed(1)
    net = TDNN(2, [TDNNLayer(3, context=context)], readout="flatten", input_length=11,
               pad="same", activation=None)
    x = torch.randn(2, 2, 11)
    td = net.body[1]
    out = net.features(x)
    assert out.shape == (2, 3, 11) and net.out_length == 11
    xp = F.pad(x, (max(0, -min(context)), max(0, max(context))))  # zeros beyond the ends
    off = max(0, -min(context))
    for t in (0, 5, 10):
        want = td.bias + sum(td.weight[:, :, m] @ xp[:, :, off + t + o].T
                             for m, o in enumerate(td.context)).T
        torch.testing.assert_close(out[:, :, t], want)
