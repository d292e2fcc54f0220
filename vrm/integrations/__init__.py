"""Adapters for RLHF clients that cannot hand a reward model one rendered conversation (see ``docs/clients.md``)."""
