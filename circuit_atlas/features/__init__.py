"""What features mean: automatic descriptions read off their weights."""

from .describe import decoder_logits, describe_node, promoted_tokens

__all__ = ["decoder_logits", "promoted_tokens", "describe_node"]
