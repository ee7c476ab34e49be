"""Model surgery and the classifier: a PEFT module in open_clip's image tower plus a head.

Public API: :func:`build_classifier` (of a :class:`~sage_cli.schema.ModelConfig`), :class:`SageClassifier`,
:func:`compute_default_bottleneck`. The PEFT modules live in :mod:`sage_cli.model.peft`
(:data:`PEFT_MODULES`), the heads in :mod:`sage_cli.model.head` (:data:`HEADS`), the one
trainable-parameter protocol in :mod:`sage_cli.model.protocol`. The pieces (:class:`SGAdapter`,
:class:`CosineHead`, :func:`inject_adapters`, :func:`build_guidance_tokens`) are exported for
reuse and tests.
"""

from sage_cli.model.adapters import GuidanceBank, SGAdapter
from sage_cli.model.classifier import SageClassifier, build_classifier
from sage_cli.model.config import compute_default_bottleneck
from sage_cli.model.guidance import build_guidance_tokens, compute_kmeans_centroids
from sage_cli.model.head import HEADS, CosineHead
from sage_cli.model.peft import PEFT_MODULES
from sage_cli.model.protocol import AdapterModule
from sage_cli.model.surgery import ParallelAdapterMLP, inject_adapters, iter_adapter_parameters

__all__ = [
    "HEADS",
    "PEFT_MODULES",
    "AdapterModule",
    "CosineHead",
    "GuidanceBank",
    "ParallelAdapterMLP",
    "SGAdapter",
    "SageClassifier",
    "build_classifier",
    "build_guidance_tokens",
    "compute_default_bottleneck",
    "compute_kmeans_centroids",
    "inject_adapters",
    "iter_adapter_parameters",
]
