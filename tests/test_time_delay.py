"""TimeDelay: the seed's equation, its local gradient, Conv1d cross-checks, bad input."""

import pytest
import torch
import torch.nn.functional as F

from tying.nn import TimeDelay

# contiguous, evenly spaced (dilated), uneven on a dense grid, and sparse uneven (matmuls)
CONTEXTS = [(-2, -1, 0), (-3, 0, 3), (-7, 2), (-2, 0, 1), (0,), (1, 4, 5), (-9, 0, 1),
            (-6, -3, 0, 2)]


def seed_equation(x, weight, bias, context, stride):
    """s_{t,i} = Σ_m Σ_j W[i,j,m] · y_{t+o_m,j} + b_i, frame by frame (float64 reference)."""
    t_len = x.shape[2]
    ts = list(range(-min(context), t_len - max(context)))[::stride]
    cols = []
    for t in ts:
        s = sum(x[:, :, t + o] @ weight[:, :, m].T for m, o in enumerate(context))
        cols.append(s + (bias if bias is not None else 0.0))
    return torch.stack(cols, dim=-1)


@pytest.mark.parametrize("context", CONTEXTS)
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_matches_seed_equation(context, stride):
    torch.manual_seed(0)
    layer = TimeDelay(3, 4, context=context, stride=stride, activation=None).double()
    x = torch.randn(2, 3, 21, dtype=torch.float64)
    ref = seed_equation(x, layer.weight, layer.bias, layer.context, stride)
    torch.testing.assert_close(layer(x), ref)
    assert layer(x).shape[2] == layer.output_length(21)


def test_window_is_the_seeds_lagged_sum_with_tanh():
    """Window K: s_t = Σ_{k<K} Σ_j w_{i,j,k} y_{t−k,j} + b_i with w_{·,·,k} = weight[..., K−1−k]."""
    torch.manual_seed(1)
    k_win = 4
    layer = TimeDelay(2, 3, window=k_win).double()
    x = torch.randn(1, 2, 12, dtype=torch.float64)
    w_seed = layer.weight.flip(-1)  # w_seed[..., k] multiplies y_{t−k}
    out = []
    for t in range(k_win - 1, 12):
        s = sum(w_seed[:, :, k] @ x[0, :, t - k] for k in range(k_win)) + layer.bias
        out.append(torch.tanh(s))
    torch.testing.assert_close(layer(x)[0], torch.stack(out, dim=-1))
    assert layer.context == (-3, -2, -1, 0)


@pytest.mark.parametrize("window,stride", [(1, 1), (3, 1), (5, 2), (4, 3)])
def test_equals_conv1d_on_equal_weights(window, stride):
    torch.manual_seed(2)
    layer = TimeDelay(5, 7, window=window, stride=stride, activation=None)
    conv = torch.nn.Conv1d(5, 7, window, stride=stride)
    with torch.no_grad():
        conv.weight.copy_(layer.weight)
        conv.bias.copy_(layer.bias)
    x = torch.randn(3, 5, 30)
    torch.testing.assert_close(layer(x), conv(x))


def test_evenly_spaced_context_equals_dilated_conv1d():
    layer = TimeDelay(4, 6, context=(-3, 0, 3), activation=None)
    conv = torch.nn.Conv1d(4, 6, 3, dilation=3)
    with torch.no_grad():
        conv.weight.copy_(layer.weight)
        conv.bias.copy_(layer.bias)
    x = torch.randn(2, 4, 25)
    torch.testing.assert_close(layer(x), conv(x))


@pytest.mark.parametrize("context", [(-2, 0, 1), (-3, 0, 3)])
def test_stride_computes_only_the_kept_frames(context):
    full = TimeDelay(3, 5, context=context)
    strided = TimeDelay(3, 5, context=context, stride=3)
    strided.load_state_dict(full.state_dict())
    x = torch.randn(2, 3, 40)
    torch.testing.assert_close(strided(x), full(x)[:, :, ::3])


@pytest.mark.parametrize("context", [(-2, -1, 0), (-2, 0, 1), (-9, 0, 1)])
def test_local_gradient_formula(context):
    """∂C/∂w_{i,j,m} = Σ_t ∂C/∂s_{t,i} · y_{t+o_m,j} and ∂C/∂b_i = Σ_t ∂C/∂s_{t,i} (float64)."""
    torch.manual_seed(3)
    layer = TimeDelay(3, 2, context=context).double()
    x = torch.randn(2, 3, 15, dtype=torch.float64)
    g_out = torch.randn(2, 2, layer.output_length(15), dtype=torch.float64)
    (layer(x) * g_out).sum().backward()
    s = layer.pre_activation(x).detach()
    d_s = g_out * (1 - torch.tanh(s) ** 2)  # ∂C/∂s through y = tanh(s)
    base = -min(context)
    t_idx = torch.arange(d_s.shape[2]) + base
    expected = torch.empty_like(layer.weight)
    for m, o in enumerate(layer.context):
        y_shift = x[:, :, t_idx + o]  # y_{t+o_m, j}
        expected[:, :, m] = torch.einsum("bit,bjt->ij", d_s, y_shift)
    torch.testing.assert_close(layer.weight.grad, expected)
    torch.testing.assert_close(layer.bias.grad, d_s.sum(dim=(0, 2)))


@pytest.mark.parametrize("kw", [{"window": 3}, {"context": (-2, 0, 1)},
                                {"context": (-7, 2), "stride": 2},
                                {"context": (-9, 0, 1), "stride": 2}])
def test_gradcheck(kw):
    layer = TimeDelay(2, 3, **kw).double()
    x = torch.randn(2, 2, 12, dtype=torch.float64, requires_grad=True)
    w = layer.weight.detach().clone().requires_grad_()
    b = layer.bias.detach().clone().requires_grad_()
    fn = lambda inp, w, b: torch.func.functional_call(layer, {"weight": w, "bias": b}, (inp,))  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, b))


def _forward_backward(layer, x, g_out):
    x = x.detach().clone().requires_grad_()
    layer.zero_grad(set_to_none=True)
    out = layer(x)
    (out * g_out).sum().backward()
    grads = [x.grad] + [p.grad for p in layer.parameters()]
    return out.detach(), grads


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("context,stride", [((-3, 0, 3), 1), ((-3, 0, 3), 2), ((-7, 2), 1),
                                            ((-2, -1, 0), 3)])
def test_spliced_gemm_and_conv_paths_agree(context, stride, bias):
    """The two implementations (chosen by input width and stride) give the same outputs and
    gradients."""
    torch.manual_seed(4)
    thin = TimeDelay(5, 6, context=context, stride=stride, bias=bias).double()
    assert not thin._conv  # thin input with a gap or a stride: the spliced GEMM
    x = torch.randn(3, 5, 31, dtype=torch.float64)
    g_out = torch.randn(3, 6, thin.output_length(31), dtype=torch.float64)
    out_gemm, grads_gemm = _forward_backward(thin, x, g_out)
    thin._conv = True  # the same layer through F.conv1d and its autograd
    out_conv, grads_conv = _forward_backward(thin, x, g_out)
    torch.testing.assert_close(out_gemm, out_conv)
    for a, b in zip(grads_gemm, grads_conv):
        torch.testing.assert_close(a, b)
    wide = TimeDelay(128, 2, context=context, stride=stride, bias=bias)
    # 128+ input channels at full rate: one dilated Conv1d call; any stride: the GEMM
    assert wide._conv == (stride == 1)


def _dense_weight(layer: TimeDelay) -> torch.Tensor:
    """The layer's weight as a dense F.conv1d window whose missing offsets are zeros."""
    k = layer.context
    w = layer.weight.detach().new_zeros(layer.out_channels, layer.in_channels, k[-1] - k[0] + 1)
    w[:, :, [o - k[0] for o in k]] = layer.weight.detach()
    return w


@pytest.mark.parametrize("grad_layout", ["batch-major", "time-major"])
def test_stacked_gemm_layers_match_dense_convolutions_in_either_gradient_layout(grad_layout):
    """The GEMM path's time-major output feeds the next layer; outputs and every gradient match
    dense convolutions whatever the layout of the gradient that comes back."""
    torch.manual_seed(6)
    net = torch.nn.Sequential(TimeDelay(5, 7, context=(-2, 0, 2), stride=2),
                              TimeDelay(7, 4, context=(-9, 0, 1))).double()
    assert not net[0]._conv and not net[1]._conv
    x = torch.randn(3, 5, 60, dtype=torch.float64)
    g = torch.randn(3, 4, 18, dtype=torch.float64)
    if grad_layout == "time-major":
        g = g.transpose(0, 1).contiguous().transpose(0, 1)
    xa = x.clone().requires_grad_()
    out = net(xa)
    assert not net[0](x).is_contiguous()  # time-major strides
    out.backward(g)
    xb = x.clone().requires_grad_()
    dense = [_dense_weight(layer).requires_grad_() for layer in net]
    biases = [layer.bias.detach().clone().requires_grad_() for layer in net]
    h = xb
    for layer, w, b in zip(net, dense, biases):
        h = torch.tanh(F.conv1d(h, w, b, layer.stride))
    h.backward(g)
    torch.testing.assert_close(out, h)
    torch.testing.assert_close(xa.grad, xb.grad)
    for layer, w, b in zip(net, dense, biases):
        cols = [o - layer.context[0] for o in layer.context]
        torch.testing.assert_close(layer.weight.grad, w.grad[:, :, cols])
        torch.testing.assert_close(layer.bias.grad, b.grad)


def test_gemm_path_output_allows_in_place_ops():
    torch.manual_seed(7)
    layer = TimeDelay(3, 4, context=(-2, 0, 2), stride=2, activation=None).double()
    x = torch.randn(2, 3, 20, dtype=torch.float64, requires_grad=True)
    layer(x).add_(0.5).relu_().sum().backward()  # e.g. nn.ReLU(inplace=True) after it
    grads = [x.grad.clone(), layer.weight.grad.clone()]
    x.grad = None
    layer.zero_grad()
    F.relu(layer(x) + 0.5).sum().backward()
    torch.testing.assert_close(grads, [x.grad, layer.weight.grad])


def test_uneven_context_gradients_match_autograd_of_the_seed_equation():
    torch.manual_seed(5)
    layer = TimeDelay(4, 3, context=(-9, 0, 1), stride=2, activation=None).double()
    x = torch.randn(2, 4, 30, dtype=torch.float64)
    g_out = torch.randn(2, 3, layer.output_length(30), dtype=torch.float64)
    out, grads = _forward_backward(layer, x, g_out)
    xr = x.clone().requires_grad_()
    w = layer.weight.detach().clone().requires_grad_()
    b = layer.bias.detach().clone().requires_grad_()
    ref = seed_equation(xr, w, b, layer.context, 2)
    (ref * g_out).sum().backward()
    torch.testing.assert_close(out, ref.detach())
    for a, r in zip(grads, (xr.grad, w.grad, b.grad)):
        torch.testing.assert_close(a, r)


def test_parameters_do_not_depend_on_length():
    layer = TimeDelay(8, 4, window=3)
    n = sum(p.numel() for p in layer.parameters())
    assert n == 8 * 4 * 3 + 4
    for t in (3, 50, 1000):
        assert layer(torch.randn(1, 8, t)).shape == (1, 4, t - 2)
    assert sum(p.numel() for p in layer.parameters()) == n


def test_activation_options_and_repr():
    x = torch.randn(2, 3, 9)
    lin = TimeDelay(3, 4, window=2, activation=None)
    relu = TimeDelay(3, 4, window=2, activation="relu")
    relu.load_state_dict(lin.state_dict())
    torch.testing.assert_close(relu(x), F.relu(lin(x)))
    custom = TimeDelay(3, 4, window=2, activation=torch.sin)
    custom.load_state_dict(lin.state_dict())
    torch.testing.assert_close(custom(x), torch.sin(lin(x)))
    assert "context=(-1, 0)" in repr(lin) and "activation=tanh" in repr(TimeDelay(3, 4, window=2))
    with pytest.raises(ValueError, match="activation"):
        TimeDelay(3, 4, window=2, activation="swishy")


def test_reset_parameters_and_factory_kwargs():
    layer = TimeDelay(3, 4, window=2, dtype=torch.float64, device="cpu")
    assert layer.weight.dtype == torch.float64
    before = layer.weight.detach().clone()
    layer.reset_parameters()
    assert not torch.equal(before, layer.weight)
    assert layer.weight.abs().max() <= 1 / (3 * 2) ** 0.5


def test_bad_inputs():
    layer = TimeDelay(4, 2, context=(-3, 0, 3))
    with pytest.raises(ValueError, match=r"\(B, C=4, T\).*\(4, 20\)"):
        layer(torch.randn(4, 20))
    with pytest.raises(ValueError, match=r"C=4.*\(2, 5, 20\)"):
        layer(torch.randn(2, 5, 20))
    with pytest.raises(ValueError, match=r"shorter than the context.*7 frames"):
        layer(torch.randn(2, 4, 6))
    with pytest.raises(ValueError, match="distinct"):
        TimeDelay(4, 2, context=(-1, 0, 0))
    with pytest.raises(TypeError, match="integers"):
        TimeDelay(4, 2, context=(-1.5, 0))
    with pytest.raises(ValueError, match="exactly one"):
        TimeDelay(4, 2)
    with pytest.raises(ValueError, match="exactly one"):
        TimeDelay(4, 2, 3, context=(0, 1))
    with pytest.raises(ValueError, match="window must be >= 1"):
        TimeDelay(4, 2, window=0)
    with pytest.raises(ValueError, match="stride"):
        TimeDelay(4, 2, window=2, stride=0)
    with pytest.raises(TypeError, match="stride"):
        TimeDelay(4, 2, window=2, stride=1.5)
    with pytest.raises(TypeError, match="context"):
        TimeDelay(4, 2, context=3)
