"""Models: LeNets, TDNNs and MLPs, and the locally connected twins of the convolutional ones."""

from .lenet import LeNet5 as LeNet5
from .lenet import LeNet5Caffe as LeNet5Caffe
from .mlp import MLP as MLP
from .mlp import LeNet300100 as LeNet300100
from .multitask import CrossStitchNet as CrossStitchNet
from .multitask import HardSharedTrunk as HardSharedTrunk
from .multitask import MultiTaskNet as MultiTaskNet
from .multitask import TaskTowers as TaskTowers
from .tdnn import TDNN as TDNN
from .tdnn import TDNNLayer as TDNNLayer
from .transformer import SharedEncoder as SharedEncoder
from .transformer import TinyGPT as TinyGPT

__all__ = [
    "MLP",
    "TDNN",
    "CrossStitchNet",
    "HardSharedTrunk",
    "LeNet5",
    "LeNet5Caffe",
    "LeNet300100",
    "MultiTaskNet",
    "SharedEncoder",
    "TDNNLayer",
    "TaskTowers",
    "TinyGPT",
]
