"""Shut a gloo/NCCL process group down before the interpreter exits.

fairseq-train never destroys its process group; a rank that exits while the group's
background threads still run can die with ``terminate called without an active exception``
(SIGABRT) after training has finished, which a launcher must report as a failure.
"""
import atexit


def _destroy_process_group():
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def register():
    atexit.register(_destroy_process_group)
