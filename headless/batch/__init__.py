"""Many edits in one command: the manifest, the rows as jobs, where they run (in-process, a server pool,
Ray actors), and the results log that makes a batch resumable."""
