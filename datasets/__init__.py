"""Face-pair datasets, registered with @register_dataset: one file (or folder) each."""
