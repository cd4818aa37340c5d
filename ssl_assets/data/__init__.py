"""Plain functions for reading what lands: file inspection, CSV sidecars, the default dataset."""
