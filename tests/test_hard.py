"""Hard ties: making them, finding them, and the guarantees that they survive PyTorch."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

import tying
from tying.models import SharedEncoder, TinyGPT


class AutoEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(6, 3)
        self.dec = nn.Linear(3, 6)

    def forward(self, x):
        return self.dec(torch.tanh(self.enc(x)))


def tied_lm(**kw) -> TinyGPT:
    torch.manual_seed(0)
    return TinyGPT(vocab=50, d_model=16, n_layers=2, n_heads=2, context=8, **kw)


def tied_ae() -> AutoEncoder:
    torch.manual_seed(0)
    ae = AutoEncoder()
    tying.tie(ae, {"dec.weight": "enc.weight"}, transform="T")
    return ae


# --------------------------------------------------------------------------- making ties


def test_parameter_tie_is_one_object_listed_once():
    lm = tied_lm()
    assert lm.head.weight is lm.embed.weight
    names = [n for n, _ in lm.named_parameters()]
    assert "embed.weight" in names and "head.weight" not in names
    (group,) = tying.ties(lm)
    assert group.canonical == "embed.weight"
    assert group.names == ("embed.weight", "head.weight")


def test_tie_discards_target_values_and_takes_source():
    lm = tied_lm(tie_embeddings=False)
    before = lm.embed.weight.detach().clone()
    tying.tie(lm, {"head.weight": "embed.weight"})
    assert torch.equal(lm.head.weight, before)


def test_module_glob_ties_every_layer_to_the_first():
    enc = SharedEncoder(d_model=16, n_layers=4, n_unique=4, n_heads=2)
    made = tying.tie(enc, {"blocks.*": "blocks.0"})
    n_per_block = len(list(enc.blocks[0].parameters()))
    assert len(made) == 3 * n_per_block
    for i in range(1, 4):
        for (_, a), (_, b) in zip(enc.blocks[i].named_parameters(),
                                  enc.blocks[0].named_parameters()):
            assert a is b
    fp = tying.footprint(enc)
    block = sum(p.numel() for p in enc.blocks[0].parameters())
    assert fp.virtual_params - fp.unique_params == 3 * block


def test_wildcards_fill_the_source_from_the_target():
    m = nn.Module()
    m.enc = nn.ModuleList(nn.Linear(4, 4) for _ in range(3))
    m.dec = nn.ModuleList(nn.Linear(4, 4) for _ in range(3))
    tying.tie(m, {"dec.*.weight": "enc.*.weight"})
    assert all(m.dec[i].weight is m.enc[i].weight for i in range(3))
    assert all(m.dec[i].bias is not m.enc[i].bias for i in range(3))


@pytest.mark.parametrize("order,expected", [
    ("sequence", [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]),
    ("cycle", [0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2]),
    ("cycle_rev", [0, 1, 2, 0, 1, 2, 0, 1, 2, 2, 1, 0]),
])
def test_takase_kiyono_orders(order, expected):
    assert tying.layer_sharing_order(12, 3, order) == expected
    enc = SharedEncoder(d_model=8, n_layers=12, n_unique=3, order=order, n_heads=2)
    first = {u: expected.index(u) for u in set(expected)}
    for i, u in enumerate(expected):
        assert enc.blocks[i].qkv.weight is enc.blocks[first[u]].qkv.weight
    assert len({id(b.qkv.weight) for b in enc.blocks}) == 3


def test_transposed_tie_stores_one_tensor_and_gets_the_right_gradient():
    ae = tied_ae()
    assert len(list(ae.parameters())) == 3  # enc.weight, enc.bias, dec.bias
    assert torch.equal(ae.dec.weight, ae.enc.weight.t())
    x = torch.randn(5, 6, dtype=torch.float64)
    ae.double()
    ae(x).pow(2).sum().backward()
    # the same function written by hand: W used as encoder and, transposed, as decoder
    W = ae.enc.weight.detach().clone().requires_grad_()
    out = torch.tanh(x @ W.t() + ae.enc.bias.detach()) @ W + ae.dec.bias.detach()
    out.pow(2).sum().backward()
    torch.testing.assert_close(ae.enc.weight.grad, W.grad)
    (group,) = tying.ties(ae)
    assert group.members == (("enc.weight", None), ("dec.weight", "T"))


def test_share_across_models_and_verify_on_the_target_model():
    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    b = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 3))
    tying.share(a[0], b[0])
    assert b[0].weight is a[0].weight and b[0].bias is a[0].bias
    tying.verify(b)
    b[0].weight = nn.Parameter(b[0].weight.detach().clone())
    with pytest.raises(tying.TieError, match="weight"):
        tying.verify(b)
    assert tying.retie(b) == 1
    assert b[0].weight is a[0].weight


def test_ties_finds_ties_made_by_hand():
    m = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    m[1].weight = m[0].weight
    (group,) = tying.ties(m)
    assert group.names == ("0.weight", "1.weight")
    assert tying.untie(m, "1.weight") == ["1.weight"]
    assert m[1].weight is not m[0].weight and torch.equal(m[1].weight, m[0].weight)


def test_untie_gives_independent_copies():
    lm = tied_lm()
    assert tying.untie(lm) == ["head.weight"]
    assert lm.head.weight is not lm.embed.weight
    assert torch.equal(lm.head.weight, lm.embed.weight)
    ae = tied_ae()
    tying.untie(ae, "dec.weight")
    assert isinstance(ae.dec.weight, nn.Parameter)
    assert torch.equal(ae.dec.weight, ae.enc.weight.t())
    with torch.no_grad():
        ae.dec.weight.add_(1)
    assert not torch.equal(ae.dec.weight, ae.enc.weight.t())
    assert tying.ties(ae) == []


def test_chained_ties_point_at_the_root_source():
    m = nn.ModuleList(nn.Linear(2, 2, bias=False) for _ in range(3))
    tying.tie(m, {"1.weight": "0.weight"})
    (rec,) = tying.tie(m, {"2.weight": "1.weight"})
    assert rec.source == "0.weight"
    assert m[2].weight is m[0].weight


# --------------------------------------------------------------------------- guarantees


@pytest.mark.parametrize("convert", [
    lambda m: m.to(torch.float64), lambda m: m.half(), lambda m: m.double(),
    lambda m: m.bfloat16(), copy.deepcopy,
], ids=["to_float64", "half", "double", "bfloat16", "deepcopy"])
def test_ties_survive_conversions(convert):
    for model in (tied_lm(), tied_ae()):
        model = convert(model)
        groups = tying.verify(model)
        assert len(groups) == 1


def test_state_dict_round_trip_into_a_fresh_model():
    src = tied_lm()
    dst = TinyGPT(vocab=50, d_model=16, n_layers=2, n_heads=2, context=8)
    dst.load_state_dict(src.state_dict())
    tying.verify(dst)
    assert dst.head.weight is dst.embed.weight
    assert torch.equal(dst.embed.weight, src.embed.weight)
    ae, ae2 = tied_ae(), AutoEncoder()
    tying.tie(ae2, {"dec.weight": "enc.weight"}, transform="T")
    ae2.load_state_dict(ae.state_dict())
    tying.verify(ae2)
    torch.testing.assert_close(ae2.dec.weight, ae.dec.weight)


def test_load_state_dict_assign_breaks_identity_verify_sees_it_retie_mends_it():
    src, dst = tied_lm(), tied_lm()
    dst.load_state_dict(src.state_dict(), assign=True)
    with pytest.raises(tying.TieError, match=r"head.weight.*embed.weight.*retie"):
        tying.verify(dst)
    assert tying.retie(dst) == 1
    tying.verify(dst)
    assert torch.equal(dst.head.weight, src.embed.weight)


def test_to_empty_then_retie():
    with torch.device("meta"):
        lm = tied_lm()
    lm.to_empty(device="cpu")
    assert lm.head.weight is not lm.embed.weight  # what PyTorch does on its own
    with pytest.raises(tying.TieError):
        tying.verify(lm)
    tying.retie(lm)
    tying.verify(lm)


def test_meta_construction_then_materialize():
    with torch.device("meta"):
        lm = TinyGPT(vocab=50, d_model=16, n_layers=2, n_heads=2, context=8)
        ae = AutoEncoder()
    tying.tie(ae, {"dec.weight": "enc.weight"}, transform="T")
    for model in (lm, ae):
        tying.materialize(model, "cpu")
        assert all(p.device.type == "cpu" for p in model.parameters())
        assert all(torch.isfinite(p).all() for p in model.parameters())
        tying.verify(model)
    assert lm.head.weight is lm.embed.weight
    assert ae.dec.parametrizations.weight.original is ae.enc.weight


def test_torch_compile_outputs_and_gradients_equal_eager():
    lm = tied_lm()
    idx = torch.randint(0, 50, (2, 8))
    eager_out = lm(idx)
    eager_out.sum().backward()
    eager_grad = lm.embed.weight.grad.clone()
    lm.zero_grad()
    compiled = torch.compile(lm, backend="inductor", dynamic=False)
    out = compiled(idx)
    out.sum().backward()
    torch.testing.assert_close(out, eager_out, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(lm.embed.weight.grad, eager_grad, rtol=1e-4, atol=1e-5)
    tying.verify(lm)


def test_functional_call_treats_tied_names_as_one():
    lm = tied_lm()
    idx = torch.randint(0, 50, (2, 8))
    params = {n: p.detach().clone() for n, p in lm.named_parameters()}  # no 'head.weight'
    params["embed.weight"] = torch.zeros_like(params["embed.weight"])
    out = torch.func.functional_call(lm, params, (idx,))
    assert torch.count_nonzero(out) == 0  # the head read the substituted embedding too
    grads = torch.func.grad(lambda p: torch.func.functional_call(lm, p, (idx,)).sum())(
        {n: p.detach() for n, p in lm.named_parameters()})
    lm(idx).sum().backward()
    torch.testing.assert_close(grads["embed.weight"], lm.embed.weight.grad)


def test_optimizer_step_updates_a_tied_parameter_once():
    lm = tied_lm()
    opt = torch.optim.SGD(lm.parameters(), lr=0.1)
    idx = torch.randint(0, 50, (2, 8))
    lm(idx).sum().backward()
    expected = lm.embed.weight.detach() - 0.1 * lm.embed.weight.grad
    opt.step()
    torch.testing.assert_close(lm.embed.weight.detach(), expected)
    tying.verify(lm, opt)


# --------------------------------------------------------------------------- bad input


def test_shape_mismatch_names_both_parameters_and_shapes():
    m = nn.ModuleDict({"a": nn.Linear(3, 4), "b": nn.Linear(3, 5)})
    with pytest.raises(ValueError, match=r"'b.weight' \(shape \(5, 3\)\).*'a.weight' "
                                         r"\(shape \(4, 3\)\)"):
        tying.tie(m, {"b.weight": "a.weight"})
    assert m.b.weight is not m.a.weight and tying.hard.records(m) == {}


def test_transpose_hint_when_shapes_are_transposed():
    ae = AutoEncoder()
    with pytest.raises(ValueError, match="transform='T'"):
        tying.tie(ae, {"dec.weight": "enc.weight"})


def test_dtype_and_device_mismatch():
    m = nn.ModuleDict({"a": nn.Linear(3, 3), "b": nn.Linear(3, 3).double()})
    with pytest.raises(ValueError, match=r"float64.*float32"):
        tying.tie(m, {"b.weight": "a.weight"})
    with torch.device("meta"):
        other = nn.Linear(3, 3)
    m["c"] = other
    with pytest.raises(ValueError, match="devices differ"):
        tying.tie(m, {"c.weight": "a.weight"})


def test_unknown_name_suggests_close_names():
    lm = tied_lm(tie_embeddings=False)
    with pytest.raises(KeyError, match=r"Did you mean 'head.weight'"):
        tying.tie(lm, {"haed.weight": "embed.weight"})
    with pytest.raises(KeyError, match=r"embed.weight"):
        tying.tie(lm, {"head.weight": "embed.weihgt"})


def test_glob_count_mismatch():
    m = nn.Module()
    m.enc = nn.ModuleList(nn.Linear(4, 4) for _ in range(2))
    m.dec = nn.ModuleList(nn.Linear(4, 4) for _ in range(3))
    with pytest.raises(ValueError, match="different counts"):
        tying.tie(m, {"dec.*.weight": "enc.*.weight"})


def test_self_tie_cycle_and_double_tie_are_refused():
    m = nn.ModuleList(nn.Linear(2, 2, bias=False) for _ in range(3))
    with pytest.raises(tying.TieError, match="itself"):
        tying.tie(m, {"0.weight": "0.weight"})
    tying.tie(m, {"1.weight": "0.weight"})
    with pytest.raises(tying.TieError, match="cycle"):
        tying.tie(m, {"0.weight": "1.weight"})
    with pytest.raises(tying.TieError, match=r"already tied.*untie"):
        tying.tie(m, {"1.weight": "2.weight"})
    tying.verify(m)


def test_invalid_transform_and_module_to_parameter():
    ae = AutoEncoder()
    with pytest.raises(ValueError, match="transform must be"):
        tying.tie(ae, {"dec.weight": "enc.weight"}, transform="transpose2")
    with pytest.raises(KeyError, match="modules to modules"):
        tying.tie(ae, {"dec.weight": "enc"})
    with pytest.raises(TypeError):
        tying.tie(ae, ["dec.weight"])


def test_module_tie_of_different_structure():
    m = nn.ModuleDict({"a": nn.Linear(3, 3), "b": nn.Linear(3, 3, bias=False)})
    with pytest.raises(ValueError, match=r"differ in structure.*bias"):
        tying.tie(m, {"b": "a"})
    with pytest.raises(ValueError, match="differ in structure"):
        tying.share(m.a, m.b)


def test_verify_reports_an_optimizer_created_before_the_tie():
    lm = tied_lm(tie_embeddings=False)
    opt = torch.optim.Adam(lm.parameters())
    tying.tie(lm, {"head.weight": "embed.weight"})
    with pytest.raises(tying.TieError, match=r"optimizer.*before a tie"):
        tying.verify(lm, opt)


def test_failed_tie_call_changes_nothing():
    m = nn.ModuleDict({"a": nn.Linear(3, 3), "b": nn.Linear(3, 3), "c": nn.Linear(4, 3)})
    before = {n: p for n, p in m.named_parameters()}
    with pytest.raises(ValueError):
        tying.tie(m, {"b.weight": "a.weight", "c.weight": "a.weight"})
    assert {n: p for n, p in m.named_parameters()} == before
    assert tying.hard.records(m) == {}


def test_untie_refuses_a_source_alone_but_unties_a_whole_glob():
    m = nn.ModuleList(nn.Linear(2, 2, bias=False) for _ in range(3))
    tying.tie(m, {"*": "0"})
    with pytest.raises(tying.TieError, match="source of the tie"):
        tying.untie(m, "0.weight")
    assert sorted(tying.untie(m, "*.weight")) == ["0.weight", "1.weight", "2.weight"]
    assert len({id(p) for p in m.parameters()}) == 3
    assert tying.ties(m) == [] and tying.hard.records(m) == {}


def test_materialize_allocates_each_shared_tensor_once():
    from tying.materialize import _allocate

    with torch.device("meta"):
        enc = SharedEncoder(d_model=16, n_layers=6, n_unique=1, n_heads=2, vocab=10)
    _allocate(enc, "cpu")
    assert tying.retie(enc) == 0  # nothing was split: no name got its own copy
    ptrs = {p.data_ptr() for _, p in enc.named_parameters(remove_duplicate=False)}
    assert len(ptrs) == len(list(enc.parameters()))
