import pytest


@pytest.fixture(autouse=True)
def restore_hydra_version_base():
    """hydra keeps the version base of the last ``hydra.main``/``initialize`` for the whole process;
    set to 1.3 by a study test, it makes fairseq's own (legacy) ``hydra.experimental`` calls raise
    ImportError in every later test of the same process. Each study test puts it back."""
    from hydra.version import VersionBase
    before = VersionBase.instance().version_base
    yield
    VersionBase.instance().version_base = before
