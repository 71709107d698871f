"""dpominer: mine a model's own repetition loops into DPO pairs, and train them away."""

__version__ = "0.1.0"
