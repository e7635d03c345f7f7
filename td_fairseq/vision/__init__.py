"""Targeted dropout for CIFAR ResNets and the paper's dependence measure.

Built on ``td_fairseq.sparsity`` only: nothing here imports fairseq.
"""
from .data import DATASETS, DataError, Dataset, load_cifar10, load_dataset, load_digits, read_cifar_batch
from .resnet import ResNet, resnet32, td_selector
from .evaluate import accuracy, accuracy_vs_sparsity, recalibrate_batch_norm, selected_weights, sweep_checkpoints
from .checkpoint import CheckpointError, build_model, fold_views, load_checkpoint, make_checkpoint, save_checkpoint
from .train import BASELINE_DEFAULTS, TrainConfig, regularization_loss, set_num_updates, step_lr, train, train_resnet
from .dependence import (FlatLoss, analyse, delta_e, dependence_study, hessian, mlp_selector,
                         one_hidden_layer_mlp, plot_heatmaps, quadratic_delta_e, train_and_analyse,
                         weighted_hessian)
