"""Network building blocks shared by every family: the backbones (:mod:`.backbones`)."""
