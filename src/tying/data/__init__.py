"""Data sets, all offline: sklearn digits (embedded), Fashion-MNIST (Debian package), MNIST-1D."""

from .digits import load_digits
from .domains import rotate, shift_domain, split_domains
from .fashion_mnist import load_fashion_mnist, read_idx
from .mnist1d import load_mnist1d
from .split import Split

__all__ = ["Split", "load_digits", "load_fashion_mnist", "load_mnist1d", "read_idx",
           "rotate", "shift_domain", "split_domains"]
