"""The training loop, per-pattern evaluation, metrics, device and seeding."""
