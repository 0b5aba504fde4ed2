"""The plugin examples the README's "Adding a plugin" shows, tested like every plugin."""
