"""The headless tools of ComfyUI-Instruct: run workflows without the browser (one, or a batch), and
check or fetch the model files they need. See ARCHITECTURE.md for the subpackages."""
