"""The inspection report: a static, self-contained HTML directory that shows every intermediate artifact of
the pipeline (CAM, random walk, CRF pseudo mask, segmentation prediction) image by image, with per-image
scores computed exactly as the ``eval_*`` stages compute them.

- :mod:`pipeline.report.scores`: per-image label maps, confusions and mIoU; gains between stages.
- :mod:`pipeline.report.assets`: per-image files (thumbnail, view image, compressed arrays for the page).
- :mod:`pipeline.report.page`: the index data (plain JSON) and the HTML/JS/CSS around it.
- :mod:`pipeline.report.panel`: a single-image PNG panel (``wsss-pipe inspect --id ID``).
- :mod:`pipeline.report.cooccurrence`: which labelled classes appear together (also written by ``data``).
"""
