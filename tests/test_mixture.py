"""MixturePrior: the fused gradient against the naive autodiff oracle, EM, merging, errors."""

import math

import pytest
import torch
from torch import nn

import tying
from tying.mixture import kmeans_1d, mixture_nll, naive_neg_log_likelihood


def _net(dtype=torch.float64):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(30, 20), nn.ReLU(), nn.Linear(20, 5)).to(dtype)


@pytest.mark.parametrize("chunk", [1, 7, 64, 10_000])
def test_gradient_equals_naive_autodiff_float64(chunk):
    g = torch.Generator().manual_seed(1)
    w = (torch.randn(3, 41, generator=g, dtype=torch.float64) * 0.3).requires_grad_()
    mu = torch.randn(6, generator=g, dtype=torch.float64).requires_grad_()
    ll = (torch.randn(6, generator=g, dtype=torch.float64) + 2).requires_grad_()
    lp = torch.log_softmax(torch.randn(6, generator=g, dtype=torch.float64), 0)
    lp = lp.detach().requires_grad_()
    fast = mixture_nll(w, mu, ll, lp, chunk)
    naive = naive_neg_log_likelihood(w, mu, ll, lp)
    gf = torch.autograd.grad(fast * 1.7, [w, mu, ll, lp])
    gn = torch.autograd.grad(naive * 1.7, [w, mu, ll, lp])
    assert torch.allclose(fast, naive, rtol=1e-12, atol=1e-10)
    for a, b in zip(gf, gn, strict=True):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_far_weights_and_narrow_components_match_naive(dtype):
    # weights hundreds of σ from every component: the fused kernel's stable-exp fallback path
    g = torch.Generator().manual_seed(3)
    w = torch.cat([torch.randn(3000, generator=g, dtype=torch.float64) * 0.05,
                   torch.tensor([2.0, -3.0, 0.9], dtype=torch.float64)])
    mu = torch.linspace(-0.2, 0.2, 9, dtype=torch.float64)
    ll = torch.linspace(6.0, 14.0, 9, dtype=torch.float64)     # σ from 0.05 down to 0.001
    lp = torch.log_softmax(torch.randn(9, generator=g, dtype=torch.float64), 0)
    ins = [t.to(dtype).requires_grad_() for t in (w, mu, ll, lp)]
    ref = [t.clone().requires_grad_() for t in (w, mu, ll, lp)]        # float64 oracle
    fast = mixture_nll(*ins, chunk_size=512)
    naive = naive_neg_log_likelihood(*ref)
    gf = torch.autograd.grad(fast, ins)
    gn = torch.autograd.grad(naive, ref)
    tol = 1e-10 if dtype == torch.float64 else 2e-4
    assert torch.isfinite(fast) and math.isclose(fast.item(), naive.item(), rel_tol=tol)
    for a, b in zip(gf, gn, strict=True):
        scale = b.abs().max().item()
        assert (a.double() - b).abs().max().item() <= tol * scale + 1e-12


def test_prior_matches_naive_through_the_module():
    net = _net()
    prior = tying.MixturePrior(net, 5, include="*.weight", chunk_size=17)
    params = [net[0].weight, net[2].weight, prior.means, prior.log_precisions,
              prior.mixing_logits]
    ga = torch.autograd.grad(prior(), params)
    gb = torch.autograd.grad(prior.naive(), params)
    for a, b in zip(ga, gb, strict=True):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-9)
    assert prior.component_means()[0] == 0
    assert math.isclose(prior.log_mixing().exp().sum().item(), 1.0, rel_tol=1e-12)



@pytest.mark.parametrize("chunk", [5, 64, 1000])
def test_several_tensors_in_one_call_match_naive_float64(chunk):
    # one fused call over tensors of different sizes (some smaller than a chunk, one with
    # weights far from every component: the per-chunk fallback), against the naive oracle
    from tying.mixture import _MixtureNLL

    g = torch.Generator().manual_seed(5)
    ws = [torch.randn(*shape, generator=g, dtype=torch.float64) * 0.1
          for shape in [(3,), (7, 11), (130,), (2, 3, 4)]]
    ws[2][[0, 77]] = torch.tensor([5.0, -4.5], dtype=torch.float64)   # ℓ < −650
    ws = [w.requires_grad_() for w in ws]
    mu = torch.linspace(-0.2, 0.2, 5, dtype=torch.float64).requires_grad_()
    ll = torch.linspace(5.0, 9.0, 5, dtype=torch.float64).requires_grad_()
    lp = torch.log_softmax(torch.randn(5, generator=g, dtype=torch.float64), 0)
    lp = lp.detach().requires_grad_()
    fast = _MixtureNLL.apply(mu, ll, lp, chunk, *ws)
    naive = naive_neg_log_likelihood(torch.cat([w.reshape(-1) for w in ws]), mu, ll, lp)
    gf = torch.autograd.grad(fast * 0.3, [*ws, mu, ll, lp])
    gn = torch.autograd.grad(naive * 0.3, [*ws, mu, ll, lp])
    assert torch.allclose(fast, naive, rtol=1e-12, atol=1e-10)
    for a, b in zip(gf, gn, strict=True):
        assert a.shape == b.shape and torch.allclose(a, b, rtol=1e-10, atol=1e-10)
    with torch.no_grad():                                      # the value-only path
        assert torch.allclose(_MixtureNLL.apply(mu, ll, lp, chunk, *ws), naive, rtol=1e-12)

def test_chunking_invariance_float32():
    net = _net(torch.float32)
    vals = []
    for chunk in (3, 100, 1 << 16):
        prior = tying.MixturePrior(net, 7, chunk_size=chunk)
        net.zero_grad()
        prior().backward()
        vals.append((prior().item(), net[0].weight.grad.clone()))
    for v, g in vals[1:]:
        assert math.isclose(v, vals[0][0], rel_tol=1e-5)
        assert torch.allclose(g, vals[0][1], rtol=1e-4, atol=1e-5)


def test_chunk_memory_does_not_hold_n_by_j():
    # the autograd graph of the fast prior saves only gradients of the sizes of its inputs
    w = torch.randn(50_000, requires_grad=True)
    mu = torch.linspace(-1, 1, 17, requires_grad=True)
    ll = torch.zeros(17, requires_grad=True)
    lp = torch.full((17,), -math.log(17.0), requires_grad=True)
    out = mixture_nll(w, mu, ll, lp, 1024)
    saved = out.grad_fn.saved_tensors
    assert sum(t.numel() for t in saved) == w.numel() + 3 * 17


def test_hyperprior_prevents_variance_collapse():
    torch.manual_seed(0)
    net = nn.Linear(200, 50)
    with torch.no_grad():  # weights sitting exactly on three values: ML variances would -> 0
        net.weight.copy_(torch.tensor([-0.2, 0.0, 0.2])[torch.randint(0, 3, (50, 200))])
    with_prior = tying.MixturePrior(net, 3, include="weight", init="kmeans")
    without = tying.MixturePrior(net, 3, include="weight", init="kmeans", gamma=None,
                                 gamma_zero=None)
    for _ in range(3):
        with_prior.em_step()
        without.em_step()
    assert torch.isfinite(with_prior.precisions()).all()
    assert with_prior.precisions().max() < 1e4          # bounded by α/β-scale
    # without a hyper-prior the variances collapse onto the σ floor, and stay finite there
    assert without.precisions().max().item() == pytest.approx(1 / without.min_std ** 2)
    assert torch.isfinite(without()) and torch.isfinite(without.log_precisions).all()
    floored = tying.MixturePrior(net, 3, include="weight", init="kmeans", gamma=None,
                                 gamma_zero=None, min_std=1e-3)
    for _ in range(3):
        floored.em_step()
    assert floored.precisions().max().item() == pytest.approx(1e6)
    with torch.no_grad():                 # a learning rate can push log λ past the cap ...
        floored.log_precisions.fill_(40.0)
    floored.log_precisions.grad = None
    floored().backward()                  # ... where it has no effect and gets no gradient
    assert floored.precisions().max().item() == pytest.approx(1e6)
    assert torch.equal(floored.log_precisions.grad, torch.zeros(3))
    with pytest.raises(ValueError, match="min_std"):
        tying.MixturePrior(net, 3, min_std=0.0)


def test_em_without_mean_updates_keeps_the_means_it_measures_around():
    g = torch.Generator().manual_seed(0)
    net = nn.Linear(1000, 1, bias=False).double()
    with torch.no_grad():
        net.weight.copy_(0.3 + 0.05 * torch.randn(1, 1000, generator=g, dtype=torch.float64))
    prior = tying.MixturePrior(net, 2, include="weight", pi_zero=0.01, gamma=None)
    with torch.no_grad():
        prior.means.fill_(0.5)            # 0.2 away from the weights' centre
    prior.em_step(update_means=False, update_mixing=False)
    assert prior.means.item() == 0.5
    # the variance is measured around 0.5: spread² + offset² = 0.05² + 0.2²
    var = 1 / prior.precisions()[1].item()
    assert var == pytest.approx(0.05 ** 2 + 0.2 ** 2, rel=0.05)


def test_em_step_recovers_a_mixture():
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([-0.3, 0.0, 0.25])
    w = centers[torch.randint(0, 3, (4000,), generator=g)] + 0.02 * torch.randn(4000, generator=g)
    net = nn.Linear(4000, 1, bias=False).double()
    with torch.no_grad():
        net.weight.copy_(w.view(1, -1))
    prior = tying.MixturePrior(net, 3, include="weight", pi_zero=0.3, gamma=(2.0, 1e-4))
    before = prior().item()
    for _ in range(30):
        prior.em_step()
    assert prior().item() < before
    got = sorted(prior.component_means().tolist())
    assert got == pytest.approx([-0.3, 0.0, 0.25], abs=0.01)


def test_merging_coinciding_components():
    net = nn.Linear(10, 10)
    prior = tying.MixturePrior(net, 4, include="weight")
    with torch.no_grad():
        prior.means.copy_(torch.tensor([0.1, 0.1 + 1e-6, 0.5]))
        prior.log_precisions.fill_(math.log(1e4))
    mu, _, logpi = prior.merged(1e-2)
    assert len(mu) == 3
    assert math.isclose(logpi.exp().sum().item(), 1.0, rel_tol=1e-9)
    prior.merge_()
    assert prior.n_components == 3 and prior.component_means()[0] == 0


def test_kmeans_init_and_kmeans_1d():
    x = torch.cat([torch.full((100,), -1.0), torch.full((50,), 2.0), torch.full((70,), 5.0)])
    c = kmeans_1d(x, 3)
    assert c.tolist() == pytest.approx([-1.0, 2.0, 5.0])
    net = nn.Linear(220, 1, bias=False)
    with torch.no_grad():
        net.weight.copy_(x.view(1, -1))
    by_kmeans = tying.MixturePrior(net, 4, include="weight", init="kmeans")
    assert by_kmeans.component_means()[1:].tolist() == pytest.approx([-1.0, 2.0, 5.0])
    by_range = tying.MixturePrior(net, 4, include="weight", init="range")
    assert by_range.component_means()[1:].tolist() != pytest.approx([-1.0, 2.0, 5.0])


def test_the_prior_owns_only_the_mixture_parameters():
    net = nn.Linear(4, 4)
    prior = tying.MixturePrior(net, 3)
    assert [n for n, _ in prior.named_parameters()] == ["means", "log_precisions",
                                                        "mixing_logits"]
    assert set(prior.state_dict()) == {"means", "log_precisions", "mixing_logits"}
    prior.eval()
    assert net.training                     # the model's mode is not the prior's business


def test_errors():
    net = nn.Linear(4, 4)
    with pytest.raises(ValueError, match="n_components"):
        tying.MixturePrior(net, 1)
    with pytest.raises(TypeError, match="n_components"):
        tying.MixturePrior(net, 3.0)
    with pytest.raises(ValueError, match="pi_zero"):
        tying.MixturePrior(net, 3, pi_zero=1.0)
    with pytest.raises(ValueError, match=r"wieght|weight"):
        tying.MixturePrior(net, 3, include="wieght")
    with pytest.raises(ValueError, match="gamma"):
        tying.MixturePrior(net, 3, gamma=(0.0, 1.0))
    other = nn.Linear(4, 4)
    prior = tying.MixturePrior(net, 3)
    with pytest.raises(ValueError, match="another model"):
        tying.compress(other, prior)
    with pytest.raises(TypeError, match="MixturePrior"):
        tying.compress(net, "prior")


def test_penalty_validates_tau():
    net = nn.Linear(4, 4)
    prior = tying.MixturePrior(net, 3)
    assert math.isclose(prior.penalty(0.5).item(), 0.5 * prior().item(), rel_tol=1e-6)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="tau"):
            prior.penalty(bad)
    with pytest.raises(TypeError, match="tau"):
        prior.penalty("0.1")


def test_penalty_follows_the_warmup_schedule():
    from tying.schedules import LinearWarmup

    net = nn.Linear(4, 4)
    prior = tying.MixturePrior(net, 3, schedule=LinearWarmup(steps=10))
    full = prior().item()
    assert prior.penalty(0.5, step=0).item() == 0
    assert math.isclose(prior.penalty(0.5, step=5).item(), 0.25 * full, rel_tol=1e-6)
    assert math.isclose(prior.penalty(0.5, step=99).item(), 0.5 * full, rel_tol=1e-6)
    with pytest.raises(ValueError, match="step"):
        prior.penalty(0.5)                # a schedule without a step would silently be off


def test_docstring_examples_run():
    import doctest
    import importlib

    module = importlib.import_module("tying.mixture")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
