"""params.yaml: the single source of settings, one section per stage, validated on load.

An unknown key, a wrong type or an out-of-range value is a :class:`ConfigError` whose one-line message
names the key; nothing is written before parameters validate. The sections are defined by topic in this
package's modules; this module names them all.
"""
from stages.config.base import Section
from stages.config.data import BackboneParams, DataParams, PathsParams, SyntheticParams
from stages.config.loading import _set_dotted, load_params, merge_tree, parse_override, read_tree
from stages.config.methods import validate_method_options
from stages.config.params import Params, RecipeInfo
from stages.config.readout import CamParams, CrfParams, EvalCamParams, EvalSegParams, InspectParams, OverlaysParams
from stages.config.single import RLOSS_CROP, RLOSS_SIGMA_XY, EvalSingleParams, ScribblesParams, SingleParams
from stages.config.training import (RecamParams, ResumableParams, SegTrainingParams, TrainClsParams, TrainingParams,
                                    TrainSegParams)

__all__ = [
    "BackboneParams", "CamParams", "CrfParams", "DataParams", "EvalCamParams", "EvalSegParams",
    "EvalSingleParams", "InspectParams", "OverlaysParams", "Params", "PathsParams",
    "RLOSS_CROP", "RLOSS_SIGMA_XY", "RecamParams", "RecipeInfo", "ResumableParams", "ScribblesParams", "SegTrainingParams", "Section", "SingleParams", "SyntheticParams", "TrainClsParams",
    "TrainSegParams", "TrainingParams", "_set_dotted", "load_params", "merge_tree",
    "parse_override", "read_tree", "validate_method_options",
]
