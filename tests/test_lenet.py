"""LeNet-5 (60,840 parameters, C3 table, trainable subsampling), LeNet-5-Caffe, the twins."""

import pytest
import torch
import torch.nn.functional as F

from tying.models import LeNet5, LeNet5Caffe, LeNet300100
from tying.models.lenet import C3_TABLE, PartialConv2d
from tying.nn import LocallyConnected2d, Subsample


def count(m):
    return sum(p.numel() for p in m.parameters())


def test_lenet5_has_the_papers_parameter_count_and_layers():
    net = LeNet5()
    # C1 6·(25+1); S2 2·6; C3 60 kernels·25 + 16; S4 2·16; C5 120·(16·25+1); F6 84·121; RBF 840
    by_layer = {"c1": 156, "s2": 12, "c3": 1516, "s4": 32, "c5": 48120, "f6": 10164, "out": 840}
    for name, n in by_layer.items():
        assert count(getattr(net, name)) == n, name
    assert count(net) == sum(by_layer.values()) == 60840
    assert isinstance(net.s2, Subsample) and net.s2.trainable
    assert net(torch.zeros(3, 1, 32, 32)).shape == (3, 10)


def test_c3_table_is_the_1998_table():
    assert C3_TABLE.shape == (16, 6) and int(C3_TABLE.sum()) == 60
    sizes = C3_TABLE.sum(dim=1).tolist()
    assert sizes == [3] * 6 + [4] * 9 + [6]
    assert C3_TABLE[0].nonzero().flatten().tolist() == [0, 1, 2]
    assert C3_TABLE[12].nonzero().flatten().tolist() == [0, 1, 3, 4]
    assert C3_TABLE[14].nonzero().flatten().tolist() == [0, 2, 3, 5]
    assert sorted(C3_TABLE.sum(dim=0).tolist()) == [10] * 6  # every S2 map feeds 10 C3 maps


def test_partial_conv_equals_masked_conv_and_ignores_unconnected_maps():
    c3 = PartialConv2d(6, 16, 5, C3_TABLE).double()
    x = torch.randn(2, 6, 9, 9, dtype=torch.float64)
    full = c3.full_weight()
    assert torch.all(full[~C3_TABLE] == 0)
    torch.testing.assert_close(c3(x), F.conv2d(x, full, c3.bias))
    x2 = x.clone()
    x2[:, 5] += 1.0  # S2 map 5 does not feed C3 map 0
    torch.testing.assert_close(c3(x2)[:, 0], c3(x)[:, 0])
    assert not torch.allclose(c3(x2)[:, 4], c3(x)[:, 4])


def test_lenet5_twin_is_locally_connected_with_the_same_fields():
    net = LeNet5()
    twin = net.unshared_twin()
    assert isinstance(twin.c1, LocallyConnected2d) and isinstance(twin.c3, LocallyConnected2d)
    assert torch.equal(twin.c3.connections, C3_TABLE)
    expected = (28 * 28 * 156) + 12 + (10 * 10 * 1516) + 32 + 48120 + 10164 + 840
    assert count(twin) == expected
    assert twin(torch.zeros(2, 1, 32, 32)).shape == (2, 10)


def test_lenet5_wrong_size_says_32_and_how_to_pad():
    with pytest.raises(ValueError, match=r"32, 32.*F?\.?pad.*load_digits\(size=32\)"):
        LeNet5()(torch.zeros(2, 1, 28, 28))
    with pytest.raises(ValueError, match="32"):
        LeNet5()(torch.zeros(1, 32, 32))
    with pytest.raises(TypeError):
        LeNet5()([[0.0]])


def test_lenet5caffe_and_twin():
    net = LeNet5Caffe()
    assert count(net) == (20 * 26) + (50 * 20 * 25 + 50) + (800 * 500 + 500) + (500 * 10 + 10)
    assert count(net) == 431080
    twin = net.unshared_twin()
    assert count(twin) == 24 * 24 * 20 * 26 + 8 * 8 * 50 * 501 + 400500 + 5010
    assert twin(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError, match="28, 28"):
        net(torch.zeros(2, 1, 32, 32))
    assert LeNet5Caffe(input_size=32)(torch.zeros(1, 1, 32, 32)).shape == (1, 10)


def test_lenet300100():
    net = LeNet300100()
    assert count(net) == 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError, match="784 features"):
        net(torch.zeros(2, 1, 32, 32))


def test_lenet5_learns_a_small_batch():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread avoids oversubscribing a shared machine
    try:
        _learns_a_small_batch()
    finally:
        torch.set_num_threads(before)


def _learns_a_small_batch():
    torch.manual_seed(0)
    net = LeNet5()
    x = torch.randn(10, 1, 32, 32)
    y = torch.arange(10)
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    first = None
    for _ in range(15):
        loss = F.cross_entropy(net(x), y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
