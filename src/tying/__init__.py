"""tying: parameter tying and parameter sharing for PyTorch.

Hard ties (one Parameter under several names, recorded so they never silently break), soft ties
(norm penalties between models), mixture priors (soft weight sharing), layers that share across
positions, and the experiments that measure what each buys.

>>> import torch.nn as nn, tying
>>> enc = nn.ModuleList(nn.Linear(16, 16) for _ in range(12))
>>> _ = tying.tie(enc, {"*": "0"})          # ALBERT-style: 12 layers, one set of weights
>>> tying.footprint(enc).sharing_ratio
12.0
"""

from . import data, experiments
from .checkpoint import load as load
from .checkpoint import save as save
from .compress import Compressed as Compressed
from .compress import compress as compress
from .errors import SystemPackageMissing as SystemPackageMissing
from .errors import TieError as TieError
from .footprint import Footprint as Footprint
from .footprint import footprint as footprint
from .hard import TieGroup as TieGroup
from .hard import TieRecord as TieRecord
from .hard import layer_sharing_order as layer_sharing_order
from .hard import retie as retie
from .hard import share as share
from .hard import tie as tie
from .hard import tie_layers as tie_layers
from .hard import ties as ties
from .hard import untie as untie
from .hard import verify as verify
from .materialize import materialize as materialize
from .mixture import MixturePrior as MixturePrior
from .soft import SoftTie as SoftTie
from .soft import fisher_diagonal as fisher_diagonal

__version__ = "0.1.0"

__all__ = [
    "Compressed",
    "Footprint",
    "MixturePrior",
    "SoftTie",
    "SystemPackageMissing",
    "TieError",
    "TieGroup",
    "TieRecord",
    "compress",
    "data",
    "experiments",
    "fisher_diagonal",
    "footprint",
    "layer_sharing_order",
    "load",
    "materialize",
    "retie",
    "save",
    "share",
    "tie",
    "tie_layers",
    "ties",
    "untie",
    "verify",
]
