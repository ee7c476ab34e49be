"""AdaptFormer (LIFT's adapter) and the SG-Adapter, parallel to the MLP of each chosen block."""

from __future__ import annotations

import logging

from torch import nn

from sage_cli.config import option_label
from sage_cli.errors import SageError
from sage_cli.model.adapters import GuidanceBank, SGAdapter
from sage_cli.model.config import compute_default_bottleneck
from sage_cli.model.guidance import build_guidance_tokens
from sage_cli.model.peft import PeftContext, register_peft
from sage_cli.model.protocol import get_parameter_names
from sage_cli.model.surgery import get_vision_blocks, inject_adapters

logger = logging.getLogger(__name__)


def inject_bottleneck_adapters(visual: nn.Module, blocks: list[int], context: PeftContext, guided: bool) -> list[str]:
    cfg = context.config
    guidance = cfg.guidance if guided else None
    heads = guidance.heads if guidance is not None else 1
    bottleneck = cfg.bottleneck or compute_default_bottleneck(context.num_classes, len(get_vision_blocks(visual)))
    if bottleneck % heads:
        raise SageError(f"{option_label('attn_heads')} {heads} must divide the bottleneck size {bottleneck}")
    bank = build_bank(visual, context) if guidance is not None else None
    device = context.class_embeddings.device

    def make_adapter(width: int) -> SGAdapter:
        return SGAdapter(width, bottleneck, bank, heads, cfg.activation, cfg.adapter_init).to(device)

    injected = inject_adapters(visual, make_adapter, blocks)
    routing = f", routed to each image's top {bank.top_k}" if bank is not None and bank.top_k else ""
    routing += f", gated by the frozen zero-shot posterior (scale {bank.gate:g})" if bank is not None and bank.gate else ""
    logger.info("adapters: %d blocks, bottleneck %d, guidance %s%s", len(injected), bottleneck,
                f"{bank.num_tokens} tokens" if bank is not None else "off", routing)
    return get_parameter_names(visual, injected.values())


def build_bank(visual: nn.Module, context: PeftContext) -> GuidanceBank:
    """The guidance tokens shared by every adapter, with the config's top-k routing and gate (if any)."""
    guidance = context.config.guidance
    tokens = build_guidance_tokens(context.class_embeddings, guidance.tokens)
    top_k = guidance.topk or None
    if top_k is not None and top_k > tokens.shape[0]:
        if not guidance.topk_or_all:
            raise SageError(f"{option_label('guidance_topk')} {top_k} exceeds the guidance tokens ({tokens.shape[0]})")
        logger.info("guidance routing: top-%d is all %d tokens here", top_k, tokens.shape[0])
        top_k = tokens.shape[0]
    batch_first = bool(getattr(getattr(visual, "transformer", None), "batch_first", True))
    return GuidanceBank(tokens, top_k, batch_first, gate=guidance.gate or None)


@register_peft("sg-adapter")
def inject_sg_adapters(visual: nn.Module, blocks: list[int], context: PeftContext) -> list[str]:
    """SG-Adapters (with the config's text guidance, if any) parallel to each chosen block's MLP."""
    return inject_bottleneck_adapters(visual, blocks, context, guided=context.config.guidance is not None)


@register_peft("adaptformer")
def inject_adaptformer(visual: nn.Module, blocks: list[int], context: PeftContext) -> list[str]:
    """AdaptFormer bottlenecks (the SG-Adapter without guidance) parallel to each chosen block's MLP."""
    return inject_bottleneck_adapters(visual, blocks, context, guided=False)
