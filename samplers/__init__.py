"""Guidance: the dual-CFG combination and the guider that evaluates it through ComfyUI."""
