"""API prompts, in pure Python: workflow formats, the node titles the tools address, prompt checks, and
the typed overrides a run applies."""
