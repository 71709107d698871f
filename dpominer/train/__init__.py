"""DPO training: our own loss and (next) a readable loop. No TRL, no transformers.Trainer."""
