"""Model loading, detection, adapter modules and patches (no node classes here)."""
