"""Model surgery and the classifier: SG-Adapters in open_clip's image tower plus a cosine head.

Public API: :class:`AdapterConfig`, :func:`build_classifier`, :class:`SageClassifier`,
:func:`compute_default_bottleneck`. The pieces (:class:`SGAdapter`, :class:`CosineHead`,
:func:`inject_adapters`, :func:`build_guidance_tokens`) are exported for reuse and tests.
"""

from sage_cli.model.adapters import GuidanceBank, SGAdapter
from sage_cli.model.classifier import SageClassifier, build_classifier
from sage_cli.model.config import METHODS, AdapterConfig, compute_default_bottleneck
from sage_cli.model.guidance import build_guidance_tokens, compute_kmeans_centroids
from sage_cli.model.head import CosineHead
from sage_cli.model.surgery import ParallelAdapterMLP, inject_adapters, iter_adapter_parameters

__all__ = [
    "METHODS",
    "AdapterConfig",
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
