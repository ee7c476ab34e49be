"""The SG-Adapter: an AdaptFormer bottleneck whose hidden state attends to class-text embeddings.

For the token states X of one vision block (any layout: [B, N, D] or [N, B, D])::

    Q = Down(LN(X))                      # [..., r]
    K = T Wk,  V = T Wv                  # [M, r], computed once per call from the shared tokens T
    H = act(Q + softmax(Q K^T / sqrt(r/h)) V)    # h attention heads
    out = alpha * Up(H)                  # Up zero-initialised: out == 0 at step 0

Without guidance (``guidance=None``) H = act(Q): plain AdaptFormer, LIFT's adapter.
The attention is per token against the same M keys for every image, so every token of every image
is one query of one shared attention: the B x N queries are cut into G equal groups, the batch
dimension of ``scaled_dot_product_attention``, against the [M, r] keys/values expanded (a view, no
copy) to G; no [B, N, M] tensor exists outside the fused kernel. G is sized to fill the device
(:func:`compute_attention_groups`); any G gives the same output, up to the order in which the
backward sums the G groups' shares of dK and dV.

Routed guidance (``GuidanceBank(top_k=k)``, the ``guidance.topk`` option): while the classifier runs an
image batch it sets the bank's per-image token mask [B, M] (the k guidance tokens closest to the
image's frozen zero-shot feature, :meth:`GuidanceBank.routed`), and each token of an image attends
to those k only. Gated guidance (``GuidanceBank(gate=s0)``, the ``guidance.gate`` option) adds each
image's frozen zero-shot log-posterior over the tokens, log_softmax(s0 cos(f0(x), T)) [B, M], to
the attention logits: the image's likely classes are attended more before anything is learned.
With ``record_attention`` an adapter computes the attention explicitly and keeps
it (``last_attention`` [B, h, N, M]: what the output was computed from) for the attention probe.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from sage_cli.model.protocol import AdapterModule

_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU}

# Keys one thread block of flash attention's backward holds (FlashAttention-2 on sm80/sm90 tiles the
# keys by 128 for head widths up to 128; memory-efficient attention by 64-128): the unit of its grid.
KEY_TILE = 128
WAVES = 2  # thread blocks per SM wanted in the backward's grid: one wave leaves SMs idle at its tail


def compute_attention_groups(queries: int, keys: int, heads: int, slots: int, key_tile: int = KEY_TILE) -> int:
    """G: the groups the ``queries`` of the guidance attention are cut into (SDPA's batch dimension).

    The rule: flash attention's backward (the costly half) runs one thread block per (group, head,
    tile of ``key_tile`` keys), so its grid holds G x heads x ceil(keys / key_tile) blocks. With all
    queries in one group (G = 1) and M ~ 1,000 keys that is 8 blocks on a GPU of 132 SMs. G is
    the largest divisor of ``queries`` (groups of equal size, a view of the queries) that does not
    exceed ceil(``slots`` / (heads x ceil(keys / key_tile))), the groups that fill ``slots``
    parallel units (:func:`count_parallel_slots`: WAVES x the SMs on CUDA). More groups than that
    only add work: each group writes its own [M, r] share of dK and dV, summed afterwards. On CPU
    one thread takes a whole (group, head), so ``key_tile`` = keys and ``slots`` = the threads.

    E.g. B x N = 128 x 197 queries, M = 1,000, one head, an H200 (132 SMs, 264 slots): 264 / 8 ->
    33 -> G = 32 groups of 4 images (788 queries), 256 blocks in the backward.
    """
    per_group = heads * max(1, math.ceil(keys / key_tile))
    wanted = max(1, min(queries, math.ceil(slots / per_group)))
    return next(g for g in range(wanted, 0, -1) if queries % g == 0)


@torch.compiler.assume_constant_result
def count_parallel_slots(device_type: str, index: int) -> int:
    """How many thread blocks (CUDA: WAVES x SMs) or threads (CPU) the guidance attention should fill."""
    if device_type == "cuda":
        return WAVES * torch.cuda.get_device_properties(index).multi_processor_count
    return max(1, torch.get_num_threads() if device_type == "cpu" else os.cpu_count() or 1)


def _is_exporting() -> bool:
    """Whether the forward is being traced or exported (TorchScript trace, ONNX, torch.export)."""
    return bool(torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting())


def attend_in_groups(q: torch.Tensor, k_h: torch.Tensor, v_h: torch.Tensor, groups: int) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d)) V of the queries ``q`` [T, r] against ``k_h``, ``v_h`` [1, h, M, d]
    (r = h d), the T queries cut into ``groups`` equal groups (``groups`` divides T): [T, r]."""
    heads, head_dim = k_h.shape[1], k_h.shape[3]
    q_h = q.view(groups, -1, heads, head_dim).transpose(1, 2)  # [G, h, T/G, d]
    out = F.scaled_dot_product_attention(q_h, k_h.expand(groups, -1, -1, -1), v_h.expand(groups, -1, -1, -1))
    return out.transpose(1, 2).reshape(q.shape)  # [T, r]


class GuidanceBank(nn.Module):
    """Holds the guidance tokens T [M, E] (L2-normalised text vectors); shared by every adapter.

    One instance is registered under every adapter, so moving any module that holds it moves the
    one buffer. The buffer is not persistent: it is rebuilt from the class embeddings, never saved.
    """

    def __init__(self, tokens: torch.Tensor, top_k: int | None = None, batch_first: bool = True,
                 gate: float | None = None) -> None:
        super().__init__()
        if gate is not None and not gate > 0:
            raise ValueError(f"the zero-shot gate's scale must be > 0; got {gate}")
        if tokens.ndim != 2:
            raise ValueError(f"guidance tokens must be [M, E]; got shape {tuple(tokens.shape)}")
        if top_k is not None and not 1 <= top_k <= tokens.shape[0]:
            raise ValueError(f"top-k routing needs 1 <= k <= {tokens.shape[0]} guidance tokens; got {top_k}")
        self.register_buffer("tokens", tokens.detach().clone().float(), persistent=False)
        self.top_k = top_k
        self.gate = gate  # s0 of the zero-shot gate; None: not gated
        self.batch_first = batch_first  # the tower's token layout: [B, N, D] (True) or [N, B, D]
        self.mask: torch.Tensor | None = None  # [B, M] bool while a routed batch runs
        self.bias: torch.Tensor | None = None  # [B, M] log p0(m|x) while a gated batch runs
        self.bypass = False  # True: every adapter holding this bank outputs 0 (the frozen tower)

    @property
    def needs_frozen_pass(self) -> bool:
        """Whether each batch first needs the frozen tower's features (routing or gate)."""
        return bool(self.top_k) or bool(self.gate)

    @property
    def num_tokens(self) -> int:
        return self.tokens.shape[0]

    @property
    def embed_dim(self) -> int:
        return self.tokens.shape[1]

    def compute_route(self, frozen_features: torch.Tensor) -> torch.Tensor:
        """[B, M] bool: each image's ``top_k`` tokens by cosine to its frozen feature [B, E].

        With one token per class this is the top-k of the frozen zero-shot prediction.
        """
        scores = F.normalize(frozen_features.float(), dim=-1) @ self.tokens.t()  # [B, M]
        top = scores.topk(self.top_k, dim=-1).indices  # [B, k]
        # a tensor source, not the scalar True: torch.jit.trace has no scatter_ for a bool scalar
        return torch.zeros_like(scores, dtype=torch.bool).scatter_(1, top, torch.ones_like(top, dtype=torch.bool))

    def compute_gate(self, frozen_features: torch.Tensor) -> torch.Tensor:
        """[B, M]: log p0(m|x) = log_softmax(gate * cos(f0(x), T_m)), the frozen zero-shot posterior."""
        scores = F.normalize(frozen_features.float(), dim=-1) @ self.tokens.t()  # [B, M]
        return (self.gate * scores).log_softmax(dim=-1)

    @contextmanager
    def routed(self, frozen_features: torch.Tensor) -> Iterator[None]:
        """Within the block, the adapters attend to each image's top-k tokens only and/or under its gate."""
        self.mask = self.compute_route(frozen_features) if self.top_k else None
        self.bias = self.compute_gate(frozen_features) if self.gate else None
        try:
            yield
        finally:
            self.mask = None
            self.bias = None

    @contextmanager
    def bypassed(self) -> Iterator[None]:
        """Within the block, the adapters holding this bank output 0: the tower is the frozen one."""
        self.bypass = True
        try:
            yield
        finally:
            self.bypass = False


class SGAdapter(AdapterModule):
    """Bottleneck adapter run in parallel to a block's MLP; see the module docstring."""

    def __init__(
        self,
        width: int,
        bottleneck: int,
        guidance: GuidanceBank | None = None,
        heads: int = 1,
        activation: str = "relu",
        init: str = "kaiming-uniform",
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
        self.init = init
        self.guidance = guidance
        self.record_attention = False  # True: keep the attention of each call in last_attention
        self.last_attention: torch.Tensor | None = None  # [B, h, N, M], detached
        if guidance is not None:
            # No biases: a key bias cancels in the softmax; a value bias duplicates down's bias.
            self.key = nn.Linear(guidance.embed_dim, bottleneck, bias=False)
            self.value = nn.Linear(guidance.embed_dim, bottleneck, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming (a = sqrt(5)) down, zero up and biases; unit-scale Wk, Wv.

        ``init`` kaiming-uniform (the default, nn.Linear's draw, bounded by 1 / sqrt(fan_in)) or
        kaiming-normal (LIFT's): the same variance, 1 / (3 fan_in); see docs/methods.md.
        """
        draw = nn.init.kaiming_normal_ if self.init == "kaiming-normal" else nn.init.kaiming_uniform_
        draw(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        if self.guidance is not None:
            # Rows of T are unit vectors, so N(0, 1) weights give K, V entries of unit variance.
            nn.init.normal_(self.key.weight, std=1.0)
            nn.init.normal_(self.value.weight, std=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.guidance is not None and self.guidance.bypass:
            return x.new_zeros(())  # broadcasts: the block adds exactly 0
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
        k_h = k.to(q.dtype).view(1, num_tokens, self.heads, head_dim).transpose(1, 2)  # [1, h, M, r/h]
        v_h = v.to(q.dtype).view(1, num_tokens, self.heads, head_dim).transpose(1, 2)  # [1, h, M, r/h]
        if self.guidance.mask is not None or self.guidance.bias is not None or self.record_attention:
            return self.attend_per_image(q, k_h, v_h)
        queries = q.reshape(-1, self.bottleneck)  # [B*N, r]: every token of every image
        if _is_exporting():  # a traced graph keeps G as a constant: one group fits every batch size
            groups = 1
        else:
            slots = count_parallel_slots(q.device.type, q.device.index or 0)
            groups = compute_attention_groups(queries.shape[0], num_tokens, self.heads, slots,
                                              KEY_TILE if q.is_cuda else num_tokens)
        return attend_in_groups(queries, k_h, v_h, groups).view(q.shape)

    def attend_per_image(self, q: torch.Tensor, k_h: torch.Tensor, v_h: torch.Tensor) -> torch.Tensor:
        """The attention image by image: under the bank's mask [B, M] (routed), its gate, and/or recorded."""
        tokens_first = not self.guidance.batch_first
        q_b = q.transpose(0, 1) if tokens_first else q  # [B, N, r]
        batch, length = q_b.shape[0], q_b.shape[1]
        q_h = q_b.reshape(batch, length, self.heads, -1).transpose(1, 2)  # [B, h, N, r/h]
        mask = self.guidance.mask
        bias = None
        gate = self.guidance.bias
        if mask is not None or gate is not None:
            shape = (mask if mask is not None else gate).shape
            if shape[0] != batch:
                raise ValueError(f"routing mask or gate is for {shape[0]} images, the batch has {batch}")
            bias = torch.zeros(shape, dtype=q.dtype, device=q.device) if gate is None else gate.to(q.dtype).clone()
            if mask is not None:
                bias.masked_fill_(~mask, float("-inf"))
            bias = bias[:, None, None, :]  # [B, 1, 1, M]
        if self.record_attention:
            scores = q_h @ k_h.transpose(-1, -2) / math.sqrt(q_h.shape[-1])  # [B, h, N, M]
            attention = (scores if bias is None else scores + bias).softmax(-1)
            self.last_attention = attention.detach()
            out = attention @ v_h  # [B, h, N, r/h]
        else:
            heads, num_tokens = k_h.shape[1], k_h.shape[2]
            out = F.scaled_dot_product_attention(
                q_h, k_h.expand(batch, heads, num_tokens, -1), v_h.expand(batch, heads, num_tokens, -1),
                attn_mask=bias)
        out = out.transpose(1, 2).reshape(q_b.shape)  # [B, N, r]
        return out.transpose(0, 1) if tokens_first else out
