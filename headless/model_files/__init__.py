"""The model files a workflow needs: the typed model manifest, which files a prompt names and whether
ComfyUI has them, and fetching the missing ones."""
