"""Running one prompt: the ``Runner`` protocol, its in-process and server implementations, the run
sequence they share, and writing a run's images."""
