"""Reusable Scheduler, Scorer and Reducer building blocks shared by several strategies.

They name what they compute, never a method: PyramidDrop is `StageScheduler` +
`QueryAttentionScorer` + `TopKDrop`; FastV is the same with a single stage.
"""

from .attention_scorers import ReceivedAttentionScorer, TextAttentionScorer, TextRaterScorer
from .baselines import ConstantScorer, RandomScorer, StrideDrop
from .dedup import PivotDedupDrop
from .feature_scorers import KeyNormScorer, L2NormScorer
from .top_k import TopKDrop
from .stage_scheduler import StageScheduler
from .query_attention import QueryAttentionScorer
from .bipartite import BipartiteMerge
from .merge import SimilarityMerge
from .null import NullScorer
from .rate import ConstantRateScheduler
from .stagewise import PerStageReducer
from .contextual import ContextualMerge
from .diversity import MaxMinDiversityDrop
from .grid import GridDownsample, GridPool
from .projector import ProjectorShare

__all__ = [
    "StageScheduler",
    "QueryAttentionScorer",
    "TopKDrop",
    "ReceivedAttentionScorer",
    "TextRaterScorer",
    "TextAttentionScorer",
    "L2NormScorer",
    "KeyNormScorer",
    "RandomScorer",
    "ConstantScorer",
    "StrideDrop",
    "PivotDedupDrop",
    "PerStageReducer",
    "SimilarityMerge",
    "BipartiteMerge",
    "ConstantRateScheduler",
    "NullScorer",
    "ContextualMerge",
    "MaxMinDiversityDrop",
    "GridDownsample",
    "GridPool",
    "ProjectorShare",
]
