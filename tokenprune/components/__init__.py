"""Reusable Scheduler, Scorer and Reducer building blocks shared by several strategies.

They name what they compute, never a method: PyramidDrop is `StageScheduler` +
`QueryAttentionScorer` + `TopKDrop`; FastV is the same with a single stage.
"""

from .reducers import TopKDrop
from .schedulers import StageScheduler
from .scorers import QueryAttentionScorer
from .bipartite import BipartiteMerge
from .merge import SimilarityMerge
from .rate import ConstantRateScheduler
from .received import ReceivedAttentionScorer
from .null import NullScorer

__all__ = ["StageScheduler", "QueryAttentionScorer", "TopKDrop"]
__all__ += ["SimilarityMerge", "BipartiteMerge", "ConstantRateScheduler", "ReceivedAttentionScorer", "NullScorer"]
