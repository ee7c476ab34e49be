"""The encode-text stage: class texts encoded once by the frozen CLIP text tower.

Public API: :func:`run` with :class:`EncodeTextConfig`; :func:`load_text_cache` and
:func:`check_text_cache_matches` for the stages that read the cache.
"""

from sage_cli.encode_text.cache import TextCache, check_text_cache_matches, check_text_cache_prepared, load_text_cache
from sage_cli.encode_text.core import (
    EncodeTextConfig,
    EncodeTextResult,
    compute_class_embeddings,
    encode_texts,
    run,
)
from sage_cli.encode_text.llm import LLMConfig

__all__ = [
    "EncodeTextConfig",
    "EncodeTextResult",
    "LLMConfig",
    "TextCache",
    "check_text_cache_matches",
    "check_text_cache_prepared",
    "compute_class_embeddings",
    "encode_texts",
    "load_text_cache",
    "run",
]
