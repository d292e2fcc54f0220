"""VRM: variational reward models.

Importing ``vrm`` registers the exported model with transformers' Auto classes, so
``AutoModelForSequenceClassification.from_pretrained(export_dir)`` works without ``trust_remote_code``.
"""

from transformers import AutoConfig, AutoModelForSequenceClassification

from vrm.models.modeling_vrm import VRMConfig, VRMForSequenceClassification

AutoConfig.register(VRMConfig.model_type, VRMConfig, exist_ok=True)
AutoModelForSequenceClassification.register(VRMConfig, VRMForSequenceClassification, exist_ok=True)


def __getattr__(name: str):
    if name == "RewardScorer":
        from vrm.scoring.scorer import RewardScorer

        return RewardScorer
    raise AttributeError(f"module 'vrm' has no attribute {name!r}")


__all__ = ["VRMConfig", "VRMForSequenceClassification", "RewardScorer"]
__version__ = "0.1.0"
