"""Input statistics of selected weight matrices, collected with forward pre-hooks while a
caller's ``feed()`` runs calibration batches through the model.

Pure PyTorch: the model's framework only provides ``feed`` (which also makes sure the hooked
modules' forward is actually called: fairseq's attention fast path reads the projection
weights directly, and its adapter turns that path off inside ``feed``). A selected weight that
receives no input raises instead of being pruned from nothing.

Each input is flattened to [tokens, in] and every token counts, padding included (simple, and
a padded position still passes through the layer in the batch). Statistics are float32
running sums, so memory does not grow with the number of batches:

- ``"gram"``: sum of x x^T, [in, in] (SparseGPT's Hessian up to the factor 2 / tokens);
- ``"square"``: sum of x^2 per input feature, [in] (Wanda's squared input norm);
- ``"order"``: none, only the token count and which tensor each module read first (for
  ``forward_groups``), so finding the order costs no memory.
"""
import contextlib

import torch

KINDS = ("gram", "square", "order")


class StopForward(Exception):
    """Raised by the hooks once every module being calibrated has seen the current batch: a
    feed that catches it around each batch skips the rest of that forward (the output layer,
    later layers), most of the cost of SparseGPT's many passes. A feed that does not catch it
    still works: ``collect`` then runs it again without stopping."""


def weight_modules(model: torch.nn.Module, weights: dict) -> dict:
    """{weight name: [modules whose ``.weight`` is that parameter]}; ValueError if none, or if
    the weight is not 2-D (a layer of [out, in] reading inputs of size in)."""
    holders = {}
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.Tensor):
            holders.setdefault(id(weight), []).append(module)
    out = {}
    for name, param in weights.items():
        if param.dim() != 2:
            raise ValueError(f"{name}: calibrated pruning needs a 2-D weight [out, in], got {tuple(param.shape)}")
        modules = [m for m in holders.get(id(param), []) if not isinstance(m, torch.nn.Embedding)]
        if not modules:
            raise ValueError(f"{name}: no module of the model holds this parameter as its .weight")
        out[name] = modules
    return out


class InputStatistics:
    """Running sums of one weight's inputs; ``first_input`` and ``first_call`` (the order of
    the first call within the pass) let a caller find modules that read the same tensor."""

    def __init__(self, kind: str, features: int):
        if kind not in KINDS:
            raise ValueError(f"statistics kind must be one of {', '.join(KINDS)}, got {kind!r}")
        self.kind, self.features = kind, features
        self.total, self.tokens = None, 0
        self.first_input, self.first_call = None, None

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, self.features)
        self.tokens += x.shape[0]
        if self.kind == "order":
            return
        x = x.float()
        value = x.T @ x if self.kind == "gram" else x.square().sum(dim=0)
        self.total = value if self.total is None else self.total.add_(value)

    def mean(self) -> torch.Tensor:
        """The sum over tokens divided by their number (the scale the pruners expect)."""
        return self.total / max(1, self.tokens)


@contextlib.contextmanager
def hooked(modules: dict, kind: str, stop: bool = False):
    """Inside: {name: InputStatistics} filled by every forward call of the named modules.
    With ``stop`` (and one module per weight), StopForward once all have seen a batch."""
    stats, handles, calls, seen = {}, [], [0], set()
    stop = stop and all(len(holders) == 1 for holders in modules.values())

    def hook_for(name, features):
        def hook(module, args):
            if not args or not torch.is_tensor(args[0]) or not args[0].is_floating_point():
                return
            entry = stats[name]
            if entry.first_call is None:
                entry.first_call, entry.first_input = calls[0], args[0]
                calls[0] += 1
            entry.add(args[0])
            if stop:
                seen.add(name)
                if len(seen) == len(stats):
                    seen.clear()
                    raise StopForward
        return hook

    try:
        for name, holders in modules.items():
            features = holders[0].weight.shape[1]
            stats[name] = InputStatistics(kind, features)
            handles += [m.register_forward_pre_hook(hook_for(name, features)) for m in holders]
        yield stats
    finally:
        for handle in handles:
            handle.remove()


def collect(modules: dict, feed, kind: str) -> dict:
    """Run ``feed()`` and return {name: InputStatistics}; ValueError for a weight whose
    module was never called with a floating-point input."""
    try:
        with hooked(modules, kind, stop=True) as stats:
            feed()
    except StopForward:  # this feed does not stop early: run it whole
        with hooked(modules, kind) as stats:
            feed()
    missing = [name for name, entry in stats.items() if entry.tokens == 0]
    if missing:
        raise ValueError(f"calibration saw no input for {len(missing)} weight(s), e.g. {missing[0]}: "
                         f"its module's forward was never called (a fast path reading .weight directly?)")
    return stats


def forward_groups(stats: dict) -> list:
    """Weight names grouped by the input tensor they read, groups in the order of their first
    call (q, k and v of an attention; k and v of every cross-attention, which all read the
    encoder's output). A group is calibrated in one pass: its input already existed when its
    first module read it, so pruning any module after that cannot change it. Assumes each
    module is called once per forward (true of a Transformer)."""
    groups, index = [], {}
    for name in sorted(stats, key=lambda n: stats[n].first_call):
        key = id(stats[name].first_input)  # the tensors are alive here: ids are unique
        if key not in index:
            index[key] = len(groups)
            groups.append([])
        groups[index[key]].append(name)
    for entry in stats.values():
        entry.first_input = None  # drop the reference to the batch
    return groups


@contextlib.contextmanager
def loaded(params: dict, values: dict):
    """Copy ``values`` into the parameters inside the block, then put back what was there."""
    before = {name: params[name].detach().clone() for name in values}
    try:
        with torch.no_grad():
            for name, value in values.items():
                params[name].copy_(value)
        yield
    finally:
        with torch.no_grad():
            for name, value in before.items():
                params[name].copy_(value)
