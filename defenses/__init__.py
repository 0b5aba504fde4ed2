"""Defenses (purifiers and recognizer transforms), registered with @register_defense."""
