"""The training engine: one SGD loop with hooks (:mod:`.trainer`), its resume checkpoints (:mod:`.resume`)
and the digest of the package's source that keys every resumable piece of work (:mod:`.code_version`)."""
