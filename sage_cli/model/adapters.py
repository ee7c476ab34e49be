"""The SG-Adapter: an AdaptFormer bottleneck whose hidden state attends to class-text embeddings.

For the token states X of one vision block (any layout: [B, N, D] or [N, B, D])::

    Q = Down(LN(X))                      # [..., r]
    K = T Wk,  V = T Wv                  # [M, r], computed once per call from the shared tokens T
    H = act(Q + softmax(Q K^T / sqrt(r/h)) V)    # h attention heads
    out = alpha * Up(H)                  # Up zero-initialised: out == 0 at step 0

Without guidance (``guidance=None``) H = act(Q): plain AdaptFormer, LIFT's adapter.
The attention is per token against the same M keys for every image, so tokens are flattened into
one query sequence and fed to ``scaled_dot_product_attention`` with the [M, r] keys/values as is:
no per-image copy of K, V and no [B, N, M] tensor outside the fused kernel.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sage_cli.model.protocol import AdapterModule

_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU}


class GuidanceBank(nn.Module):
    """Holds the guidance tokens T [M, E] (L2-normalised text vectors); shared by every adapter.

    One instance is registered under every adapter, so moving any module that holds it moves the
    one buffer. The buffer is not persistent: it is rebuilt from the class embeddings, never saved.
    """

    def __init__(self, tokens: torch.Tensor) -> None:
        super().__init__()
        if tokens.ndim != 2:
            raise ValueError(f"guidance tokens must be [M, E]; got shape {tuple(tokens.shape)}")
        self.register_buffer("tokens", tokens.detach().clone().float(), persistent=False)

    @property
    def num_tokens(self) -> int:
        return self.tokens.shape[0]

    @property
    def embed_dim(self) -> int:
        return self.tokens.shape[1]


class SGAdapter(AdapterModule):
    """Bottleneck adapter run in parallel to a block's MLP; see the module docstring."""

    def __init__(
        self,
        width: int,
        bottleneck: int,
        guidance: GuidanceBank | None = None,
        heads: int = 1,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        if bottleneck % heads:
            raise ValueError(f"attention heads ({heads}) must divide the bottleneck ({bottleneck})")
        self.bottleneck = bottleneck
        self.heads = heads
        self.norm = nn.LayerNorm(width)
        self.down = nn.Linear(width, bottleneck)
        self.act = _ACTIVATIONS[activation]()
        self.up = nn.Linear(bottleneck, width)
        self.alpha = nn.Parameter(torch.ones(()))
        self.guidance = guidance
        if guidance is not None:
            # No biases: a key bias cancels in the softmax; a value bias duplicates down's bias.
            self.key = nn.Linear(guidance.embed_dim, bottleneck, bias=False)
            self.value = nn.Linear(guidance.embed_dim, bottleneck, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-uniform (a = sqrt(5)) down, zero up and biases; unit-scale Wk, Wv.

        LIFT draws the down-projection from Kaiming-normal with the same a = sqrt(5): the same
        variance, 1 / (3 fan_in). Sage keeps the uniform draw (bounded by 1 / sqrt(fan_in)); see
        docs/methods.md for why.
        """
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        if self.guidance is not None:
            # Rows of T are unit vectors, so N(0, 1) weights give K, V entries of unit variance.
            nn.init.normal_(self.key.weight, std=1.0)
            nn.init.normal_(self.value.weight, std=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.down(self.norm(x))  # [..., r]
        if self.guidance is not None:
            q = q + self.attend(q)
        return self.alpha * self.up(self.act(q))

    def attend(self, q: torch.Tensor) -> torch.Tensor:
        """softmax(Q K^T / sqrt(r/h)) V for every token of ``q`` [..., r] against the M tokens."""
        tokens = self.guidance.tokens.to(self.key.weight.dtype)  # [M, E]
        k = self.key(tokens)  # [M, r], once per call, shared by every image and token
        v = self.value(tokens)  # [M, r]
        head_dim = self.bottleneck // self.heads
        num_tokens = tokens.shape[0]
        q_h = q.reshape(1, -1, self.heads, head_dim).transpose(1, 2)  # [1, h, B*N, r/h]
        k_h = k.to(q.dtype).view(1, num_tokens, self.heads, head_dim).transpose(1, 2)  # [1, h, M, r/h]
        v_h = v.to(q.dtype).view(1, num_tokens, self.heads, head_dim).transpose(1, 2)  # [1, h, M, r/h]
        out = F.scaled_dot_product_attention(q_h, k_h, v_h)  # [1, h, B*N, r/h]
        return out.transpose(1, 2).reshape(q.shape)
