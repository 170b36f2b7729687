"""Stacked layers equal K separate torch modules; networks, mixer and registries."""
import math

import pytest
import torch
from torch import nn

from alg_helpers import make_cfg
from modules import agents, critics, discriminators, lookup, mixers
from modules.activations import tanh, tanh_via_sigmoid
from modules.ln_rnn import LayerNormRNN
from modules.stacked import (StackedGRU, StackedLayerNorm, StackedLinear, _GRUSequenceFunction,
                             clip_grad_norm_per_stack)

K, M = 4, 11


def test_stacked_linear_equals_k_linears():
    torch.manual_seed(0)
    stacked = StackedLinear(K, 6, 5)
    linears = [nn.Linear(6, 5) for _ in range(K)]
    with torch.no_grad():
        for k, lin in enumerate(linears):
            stacked.weight[k] = lin.weight.t()
            stacked.bias[k] = lin.bias
    x = torch.randn(K, 3, M, 6)
    expected = torch.stack([lin(x[k]) for k, lin in enumerate(linears)])
    torch.testing.assert_close(stacked(x), expected)


def test_stacked_linear_init_matches_reference_schemes():
    torch.manual_seed(0)
    default = StackedLinear(K, 64, 32)
    bound = 1 / math.sqrt(64)
    assert default.weight.abs().max() <= bound and default.bias.abs().max() <= bound
    assert default.weight.std() > 0.5 * bound / math.sqrt(3)  # spread over the range, not constant
    ortho = StackedLinear(K, 64, 32, init_gain=0.01)
    for k in range(K):
        w = ortho.weight[k].t()  # [out, in] as nn.Linear: orthonormal rows scaled by the gain
        torch.testing.assert_close(w @ w.t(), 0.01**2 * torch.eye(32), atol=1e-7, rtol=1e-5)
    assert torch.count_nonzero(ortho.bias) == 0
    assert not torch.equal(ortho.weight[0], ortho.weight[1])  # each agent its own draw


def test_stacked_layer_norm_equals_k_layer_norms():
    torch.manual_seed(0)
    stacked = StackedLayerNorm(K, 8)
    norms = [nn.LayerNorm(8) for _ in range(K)]
    with torch.no_grad():
        for k, ln in enumerate(norms):
            ln.weight.normal_()
            ln.bias.normal_()
            stacked.weight[k] = ln.weight
            stacked.bias[k] = ln.bias
    x = torch.randn(K, 2, M, 8) * 3 + 1
    torch.testing.assert_close(stacked(x), torch.stack([ln(x[k]) for k, ln in enumerate(norms)]))


@pytest.mark.parametrize("t_len", [1, 6])
def test_stacked_gru_equals_k_gru_cells(t_len):
    torch.manual_seed(0)
    stacked = StackedGRU(K, 5, 7)
    cells = [nn.GRUCell(5, 7) for _ in range(K)]
    with torch.no_grad():
        for k, cell in enumerate(cells):
            stacked.weight_ih[k] = cell.weight_ih.t()
            stacked.weight_hh[k] = cell.weight_hh.t()
            stacked.bias_ih[k] = cell.bias_ih
            stacked.bias_hh[k] = cell.bias_hh
    x, h0 = torch.randn(K, t_len, M, 5), torch.randn(K, M, 7)
    expected = []
    for k, cell in enumerate(cells):
        h, seq = h0[k], []
        for t in range(t_len):
            h = cell(x[k, t], h)
            seq.append(h)
        expected.append(torch.stack(seq))
    torch.testing.assert_close(stacked(x, h0), torch.stack(expected))


def test_gru_cell_backward_matches_autograd():
    torch.manual_seed(0)
    gru = StackedGRU(2, 3, 4).double()
    x, h0 = torch.randn(2, 3, 5, 3, dtype=torch.double), torch.randn(2, 5, 4, dtype=torch.double)
    assert torch.autograd.gradcheck(lambda x, h: gru(x, h), (x.requires_grad_(), h0.requires_grad_()))
    # and the parameter gradients equal those of K nn.GRUCells
    cells = [nn.GRUCell(3, 4).double() for _ in range(2)]
    with torch.no_grad():
        for k, cell in enumerate(cells):
            cell.weight_ih.copy_(gru.weight_ih[k].t())
            cell.weight_hh.copy_(gru.weight_hh[k].t())
            cell.bias_ih.copy_(gru.bias_ih[k])
            cell.bias_hh.copy_(gru.bias_hh[k])
    gru(x, h0).pow(2).sum().backward()
    for k, cell in enumerate(cells):
        h = h0[k].detach()
        loss = 0
        for t in range(3):
            h = cell(x[k, t].detach(), h)
            loss = loss + h.pow(2).sum()
        loss.backward()
        torch.testing.assert_close(gru.weight_hh.grad[k], cell.weight_hh.grad.t())
        torch.testing.assert_close(gru.weight_ih.grad[k], cell.weight_ih.grad.t())
        torch.testing.assert_close(gru.bias_hh.grad[k], cell.bias_hh.grad)


def test_gru_sequence_backward_matches_autograd_for_every_input():
    """The whole-sequence node's gradients for the input projections, h0, W_hh and b_hh (gradcheck), also
    when only some stacks run."""
    torch.manual_seed(1)
    gi, h0 = torch.randn(3, 5, 4, 3 * 2, dtype=torch.double), torch.randn(3, 4, 2, dtype=torch.double)
    w, b = torch.randn(3, 2, 3 * 2, dtype=torch.double), torch.randn(3, 3 * 2, dtype=torch.double)
    inputs = tuple(y.requires_grad_() for y in (gi, h0, w, b))
    assert torch.autograd.gradcheck(_GRUSequenceFunction.apply, inputs)
    gru = StackedGRU(3, 3, 4).double()
    x = torch.randn(1, 4, 2, 3, dtype=torch.double)
    gru(x, torch.zeros(1, 2, 4, dtype=torch.double), stacks=slice(1, 2)).pow(2).sum().backward()
    assert gru.weight_hh.grad[1].abs().sum() > 0
    assert gru.weight_hh.grad[0].eq(0).all() and gru.weight_hh.grad[2].eq(0).all()


def test_fast_tanh_equals_torch_tanh_in_value_and_gradient():
    x = torch.cat([torch.linspace(-30, 30, 20001), torch.tensor([0.0, -0.0, 1e-8, -1e-8, float("inf"), -float("inf")])])
    torch.testing.assert_close(tanh_via_sigmoid(x), torch.tanh(x), atol=3e-7, rtol=0)
    x.requires_grad_(True)
    weights = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    (grad,) = torch.autograd.grad((tanh(x) * weights).sum(), x)
    (expected,) = torch.autograd.grad((torch.tanh(x) * weights).sum(), x)
    torch.testing.assert_close(grad, expected, atol=1e-6, rtol=0)
    out = torch.empty(3)
    assert tanh_via_sigmoid(torch.zeros(3), out=out) is out and out.abs().max() == 0


def test_clip_grad_norm_per_stack_equals_separate_clipping():
    torch.manual_seed(0)
    layer = StackedLinear(K, 6, 5)
    scale = torch.tensor([0.01, 1.0, 5.0, 30.0]).view(K, 1, 1, 1)  # per-network gradient norms ~1 to ~2000
    (layer(torch.randn(K, 1, M, 6)) * scale).sum().backward()
    expected = []
    for k in range(K):
        w, b = layer.weight.grad[k].clone().requires_grad_(), layer.bias.grad[k].clone().requires_grad_()
        w.grad, b.grad = w.detach().clone(), b.detach().clone()
        norm = nn.utils.clip_grad_norm_([w, b], 10.0)
        expected.append((norm, w.grad, b.grad))
    norms = clip_grad_norm_per_stack(layer.parameters(), 10.0)
    for k, (norm, wg, bg) in enumerate(expected):
        torch.testing.assert_close(norms[k], norm)
        torch.testing.assert_close(layer.weight.grad[k], wg)
        torch.testing.assert_close(layer.bias.grad[k], bg)
    assert norms[0] < 10 < norms[-1]  # both regimes exercised


def _copy_linear(stacked: StackedLinear, k: int, lin: nn.Linear) -> None:
    lin.weight.copy_(stacked.weight[k].t())
    lin.bias.copy_(stacked.bias[k])


def _copy_norm(stacked: StackedLayerNorm, k: int, ln: nn.LayerNorm) -> None:
    ln.weight.copy_(stacked.weight[k])
    ln.bias.copy_(stacked.bias[k])


@torch.no_grad()
def test_layer_norm_rnn_equals_separate_unfused_torch_networks():
    """The stacked net (LayerNorms fused into the following linear maps) computes, for each agent, the
    reference network built from plain torch modules."""
    torch.manual_seed(0)
    net = LayerNormRNN(3, 10, 4, 16, head_gain=0.5)
    for p in net.parameters():  # move LayerNorm affines and biases away from their trivial init
        p.add_(0.1 * torch.randn_like(p))
    x, h0 = torch.randn(3, 5, 7, 10), torch.randn(3, 7, 16)
    out, hidden = net(x, h0)
    for k in range(3):
        ln_in, ln1, ln2, ln_out = (nn.LayerNorm(d) for d in (10, 16, 16, 16))
        fc1, fc2, head, gru = nn.Linear(10, 16), nn.Linear(16, 16), nn.Linear(16, 4), nn.GRUCell(16, 16)
        for stacked, mod in ((net.norm_in, ln_in), (net.norm1, ln1), (net.norm2, ln2), (net.norm_out, ln_out)):
            _copy_norm(stacked, k, mod)
        for stacked, mod in ((net.fc1, fc1), (net.fc2, fc2), (net.head, head)):
            _copy_linear(stacked, k, mod)
        gru.weight_ih.copy_(net.rnn.weight_ih[k].t())
        gru.weight_hh.copy_(net.rnn.weight_hh[k].t())
        gru.bias_ih.copy_(net.rnn.bias_ih[k])
        gru.bias_hh.copy_(net.rnn.bias_hh[k])
        h = h0[k]
        for t in range(5):
            z = ln2(torch.relu(fc2(ln1(torch.relu(fc1(ln_in(x[k, t])))))))
            h = gru(z, h)
            torch.testing.assert_close(hidden[k, t], h)
            torch.testing.assert_close(out[k, t], head(ln_out(h)))


def test_layer_norm_rnn_shapes_and_reference_init():
    torch.manual_seed(0)
    net = LayerNormRNN(3, 10, 4, 16, head_gain=0.01)
    out, hidden = net(torch.randn(3, 5, 2, 10), torch.zeros(3, 2, 16))
    assert out.shape == (3, 5, 2, 4) and hidden.shape == (3, 5, 2, 16)
    for k in range(3):
        w = net.head.weight[k].t()
        torch.testing.assert_close(w @ w.t(), 1e-4 * torch.eye(4), atol=1e-8, rtol=1e-4)
        w1 = net.fc1.weight[k].t()  # [16, 10]: more rows than columns, so orthonormal columns (gain sqrt 2)
        torch.testing.assert_close(w1.t() @ w1, 2.0 * torch.eye(10), atol=1e-5, rtol=1e-4)


def test_agent_and_critic_registry_networks():
    cfg = make_cfg("qmix")
    torch.manual_seed(0)
    q, hidden = agents.REGISTRY["rnn"](3, 10, 6, cfg)(torch.randn(3, 4, 2, 10), torch.zeros(3, 2, cfg.hidden_dim))
    assert q.shape == (3, 4, 2, 6) and hidden.shape == (3, 4, 2, cfg.hidden_dim)
    cfg = make_cfg("ippo")
    v, _ = critics.REGISTRY["ln_rnn"](3, 10, cfg)(torch.randn(3, 4, 2, 10), torch.zeros(3, 2, cfg.hidden_dim))
    assert v.shape == (3, 4, 2)
    cfg = make_cfg("ippo_gail")
    logits = discriminators.REGISTRY["mlp"](3, 10, cfg)(torch.randn(3, 7, 10))
    assert logits.shape == (3, 7)


def test_qmix_mixer_is_monotonic_in_every_agent_q():
    cfg = make_cfg("qmix")
    torch.manual_seed(0)
    mixer = mixers.REGISTRY["qmix"](5, 12, cfg)
    qs = (torch.randn(64, 7, 5) * 10).requires_grad_()
    q_tot = mixer(qs, torch.randn(64, 7, 12) * 3)
    assert q_tot.shape == (64, 7)
    (grad,) = torch.autograd.grad(q_tot.sum(), qs)
    assert (grad >= 0).all() and (grad > 0).any()


def test_mixer_rejects_unsupported_hypernet_depth():
    with pytest.raises(ValueError, match="hypernet_layers=3 .* valid choices: 1, 2"):
        mixers.REGISTRY["qmix"](3, 4, make_cfg("qmix", hypernet_layers=3))


def test_lookup_names_the_valid_choices():
    assert lookup(agents.REGISTRY, "rnn", "agent") is agents.REGISTRY["rnn"]
    with pytest.raises(ValueError, match="unknown agent 'rnnn'; valid choices: ln_rnn, rnn"):
        lookup(agents.REGISTRY, "rnnn", "agent")
