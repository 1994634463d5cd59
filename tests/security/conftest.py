from tests.federated.conftest import experiment_file, synthetic_cache  # noqa: F401 (fixtures shared with them)
