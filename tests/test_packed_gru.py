"""The packed GRU and the fused online + target pass of QMIX's agents against the plain layers.

``gru_packed_forward``/``gru_packed_backward`` (``modules.stacked``) and
``RNNAgent.packed_q_with_target`` skip the padding of a batch of episodes and hand-write their backward;
here they must give the padded computation's outputs at every real position and the same gradients, in
float64 so that any difference beyond rounding shows.
"""
import types

import pytest
import torch

from modules.agents.rnn_agent import RNNAgent
from modules.stacked import StackedGRU, gru_packed_backward, gru_packed_forward

K, IN, H, A = 3, 5, 8, 4


def _packing(lengths: list[int], t_len: int):
    """``(t_idx, b_idx, order, batch_sizes)``: the packed rows (time-major, longest first) of sequences with
    ``lengths`` in a padded ``[.., t_len, M, ..]`` layout."""
    lengths = torch.tensor(lengths)
    order = torch.argsort(lengths, descending=True, stable=True)
    live = torch.arange(t_len).unsqueeze(1) < lengths[order]
    t_idx, rank = live.nonzero(as_tuple=True)
    return t_idx, order[rank], order, live.sum(1).tolist()


# lengths of M sequences in a padded batch of T steps: mixed, equal, length 1, and a padding-only last step
CASES = [([7, 3, 5, 1, 7, 2], 7), ([4, 4, 4], 4), ([1], 1), ([3, 1, 2], 4)]


@pytest.mark.parametrize("lengths,t_len", CASES)
@pytest.mark.parametrize("n_grad", [K, 1])
def test_packed_gru_matches_the_stacked_gru(lengths, t_len, n_grad):
    """Forward at every real position, and the backward of the first ``n_grad`` stacks (x, weights, biases)."""
    torch.manual_seed(0)
    gru = StackedGRU(K, IN, H).double()
    m = len(lengths)
    x = torch.randn(K, t_len, m, IN, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(K, m, H, dtype=torch.float64)
    t_idx, b_idx, order, batch_sizes = _packing(lengths, t_len)
    dense = gru(x, h0)                                                         # [K, T, M, H]
    hs, saved = gru_packed_forward(x.detach()[:, t_idx, b_idx], h0[:, order], gru.weight_ih.detach(),
                                   gru.bias_ih.detach(), gru.weight_hh.detach(), gru.bias_hh.detach(), batch_sizes)
    torch.testing.assert_close(hs, dense.detach()[:, t_idx, b_idx], rtol=1e-12, atol=1e-12)

    grad_hs = torch.randn(n_grad, len(t_idx), H, dtype=torch.float64)
    (dense[:n_grad, t_idx, b_idx] * grad_hs).sum().backward()
    grad_x, *grad_params = gru_packed_backward(grad_hs.clone(), saved, batch_sizes)
    torch.testing.assert_close(grad_x, x.grad[:n_grad, t_idx, b_idx], rtol=1e-10, atol=1e-12)
    for name, got in zip(("weight_ih", "bias_ih", "weight_hh", "bias_hh"), grad_params):
        expected = getattr(gru, name).grad[:n_grad]
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12, msg=name)
        assert torch.count_nonzero(getattr(gru, name).grad[n_grad:]) == 0  # the dense loss only reads those stacks


@pytest.mark.parametrize("n_fc", [1, 2, 3])
@pytest.mark.parametrize("lengths,t_len", CASES[:2])
def test_packed_q_with_target_is_both_networks_forward_and_only_the_online_backward(lengths, t_len, n_fc):
    """Also with more FC layers before the GRU (``agent_fc_layers``, the paper's Figure 4)."""
    torch.manual_seed(1)
    cfg = types.SimpleNamespace(hidden_dim=H, agent_fc_layers=n_fc)
    online, target = RNNAgent(K, IN, A, cfg).double(), RNNAgent(K, IN, A, cfg).double()
    m = len(lengths)
    x = torch.randn(K, t_len, m, IN, dtype=torch.float64)
    h0 = torch.randn(K, m, H, dtype=torch.float64)
    t_idx, b_idx, order, batch_sizes = _packing(lengths, t_len)
    q, target_q = online.packed_q_with_target(target, x[:, t_idx, b_idx], h0[:, order], batch_sizes)
    assert q.requires_grad and not target_q.requires_grad
    with torch.no_grad():
        torch.testing.assert_close(target_q, target(x, h0)[0][:, t_idx, b_idx], rtol=1e-12, atol=1e-12)
    weights = torch.randn_like(q)
    (q * weights).sum().backward()
    packed_grads = {name: p.grad.clone() for name, p in online.named_parameters()}
    assert all(p.grad is None for p in target.parameters())
    online.zero_grad()
    dense_q = online(x, h0)[0]
    torch.testing.assert_close(q.detach(), dense_q.detach()[:, t_idx, b_idx], rtol=1e-12, atol=1e-12)
    (dense_q[:, t_idx, b_idx] * weights).sum().backward()
    for name, p in online.named_parameters():
        torch.testing.assert_close(packed_grads[name], p.grad, rtol=1e-10, atol=1e-12, msg=name)
