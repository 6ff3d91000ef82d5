"""What runs the stages: one SGD loop with hooks (:mod:`.trainer`, :mod:`.hooks`; per epoch:
:mod:`.epochs`), its resume checkpoints (:mod:`.resume`), the digest of the package's source that keys every
resumable piece of work (:mod:`.code_version`), seeds and devices (:mod:`.runtime`), torchrun
(:mod:`.distributed`), atomic writes (:mod:`.atomic`), per-image streaming (:mod:`.streaming`), worker
processes (:mod:`.processes`) and the machine checks of ``wsss-pipe doctor`` (:mod:`.environment`)."""
