"""Adversarial attacks, registered with @register_attack."""
