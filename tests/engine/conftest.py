import pytest

from mtmedformer.config import config_from_dict


@pytest.fixture(scope="session")
def synthetic_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("engine-synthetic-cache")


@pytest.fixture
def tiny_config(tmp_path, synthetic_cache):
    def make(**sections):
        data = {
            "data": {
                "image_size": 32,
                "augment": True,
                "synthetic": {
                    "num_sites": 2,
                    "images_per_site": 12,
                    "image_size": 32,
                    "seed": 0,
                    "cache_dir": str(synthetic_cache),
                },
            },
            "model": {
                "patch_size": 8,
                "depth": 1,
                "seg_feature_size": 4,
                "detection": {"feature_size": 4, "stride": 8},
            },
            "train": {
                "epochs": 2,
                "batch_size": 4,
                "lr": 0.001,
                "warmup_steps": 1,
                "progress": False,
                "output_dir": str(tmp_path / "run"),
            },
        }
        for section, values in sections.items():
            data[section] = {**data.get(section, {}), **values}
        return config_from_dict(data)

    return make
