"""Optimise a policy against a reward with TRL's GRPOTrainer and track a gold reward (``vrm-rlhf``)."""
