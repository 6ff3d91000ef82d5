"""Network building blocks shared by every family: the backbones (:mod:`.backbones`) and the registries
that name network classes without importing them (:mod:`.lazy_registry`)."""
