"""Targeted dropout for ResNets (CIFAR ResNet-32, Wide ResNet-28-10, ResNet-50) and the
paper's dependence measure.

Built on ``td_fairseq.sparsity`` only: nothing here imports fairseq.
"""
from .errors import DataError
from .data import (CIFAR, DATASETS, Dataset, TensorImages, load_cifar, load_cifar10, load_dataset, load_digits,
                   read_cifar_batch)
from .folder import FolderData, FolderImages, load_folder
from .resnet import ResNet, resnet32
from .wide_resnet import WideResNet
from .bottleneck import BottleneckResNet
from .archs import ARCHS, arch_config, build_network, td_selector, title
from .train import Runtime, TrainConfig, decay_groups, loader_accuracy, step_lr, train
from .evaluate import (accuracy, accuracy_vs_sparsity, prune_sweep, recalibrate_batch_norm, selected_weights,
                       sweep_checkpoints)
from .training_state import build_model, load_checkpoint, make_checkpoint, read_checkpoint
from .experiment import train_resnet
from .dependence import (FlatLoss, analyse, delta_e, dependence_study, hessian, mlp_selector,
                         one_hidden_layer_mlp, plot_heatmaps, quadratic_delta_e, train_and_analyse,
                         weighted_hessian)
from ..sparsity.baselines import regularization_loss  # noqa: F401  (the loop adds it; tests call it)
