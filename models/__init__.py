"""Face recognizers (pixel-space nn.Modules), registered with @register_recognizer."""
