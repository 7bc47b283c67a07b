"""Image data sets for layerfed: readers, one in-memory type, and splits across clients.

Readers return :class:`ImageDataset` (``uint8`` images ``[N, C, H, W]`` with labels); partition functions
return sorted index tensors for :meth:`ImageDataset.subset`. Labels only partition and evaluate: the
self-supervised training never reads them. This package imports only numpy, torch, Pillow and
:mod:`agent.errors`, so it can be used without the rest of the agent.
"""

from agent.data.cifar10 import RestrictedUnpickler, load_cifar10
from agent.data.dataset import ImageDataset
from agent.data.fashion_mnist import (
    DEFAULT_FASHION_MNIST_DIRECTORY,
    FASHION_MNIST_CLASSES,
    load_fashion_mnist,
    read_idx_file,
)
from agent.data.image_folder import IMAGE_EXTENSIONS, load_image_folder
from agent.data.partition import partition_dirichlet, partition_iid
from agent.data.registry import DATASET_NAMES, load_dataset
from agent.data.splits import held_out_split_indices, stratified_limit_indices

__all__ = [
    "DATASET_NAMES",
    "DEFAULT_FASHION_MNIST_DIRECTORY",
    "FASHION_MNIST_CLASSES",
    "IMAGE_EXTENSIONS",
    "ImageDataset",
    "RestrictedUnpickler",
    "held_out_split_indices",
    "load_cifar10",
    "load_dataset",
    "load_fashion_mnist",
    "load_image_folder",
    "partition_dirichlet",
    "partition_iid",
    "read_idx_file",
    "stratified_limit_indices",
]
