"""Interventions: set or scale features (or whole supernodes) and watch the model respond.

from circuit_atlas.interventions import Feature, Supernode, set_to, scale_by, constrained
model.intervene(prompt, [scale_by(texas, 0.0)], mode="frozen_attention")
model.generate(prompt, [set_to((2, 17), 5.0, position=slice(-1, None))], max_new_tokens=10)
"""

from .forward import FREE, FROZEN_ATTENTION, FeatureActivations, Mode, constrained
from .intervene import Generation, InterventionResult, generate, intervene
from .spec import Feature, Intervention, Supernode, scale_by, set_to

__all__ = [
    "Feature", "Supernode", "Intervention", "set_to", "scale_by", "Mode", "FREE", "FROZEN_ATTENTION",
    "constrained", "intervene", "generate", "InterventionResult", "Generation", "FeatureActivations",
]  # fmt: skip
