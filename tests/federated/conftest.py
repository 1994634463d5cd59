import pytest
import yaml

from server.settings import ServerSettings

TINY_EXPERIMENT = {
    "data": {
        "source": "synthetic",
        "classes": ["benign", "malignant"],
        "image_size": 32,
        "augment": False,
        "synthetic": {"modality": "mammography", "num_sites": 3, "images_per_site": 16, "image_size": 32, "seed": 0},
    },
    "model": {"preset": "tiny", "patch_size": 8, "depth": 1, "seg_feature_size": 4,
              "detection": {"feature_size": 4, "stride": 8}},
    "train": {"batch_size": 8, "lr": 0.001, "progress": False},
    "federated": {"rounds": 2, "min_train_nodes": 2, "min_evaluate_nodes": 2, "min_available_nodes": 2,
                  "local_steps": 2},
}


@pytest.fixture(scope="session")
def synthetic_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("synthetic-cache")


@pytest.fixture
def experiment_file(tmp_path, synthetic_cache):
    def write(**sections):
        data = {k: dict(v) if isinstance(v, dict) else v for k, v in TINY_EXPERIMENT.items()}
        data["data"] = {**data["data"], "synthetic": {**data["data"]["synthetic"], "cache_dir": str(synthetic_cache)}}
        for section, values in sections.items():
            data[section] = {**data.get(section, {}), **values}
        path = tmp_path / "experiment.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    return write


def settings_for(experiment, out_dir, resume=False, run_name="run"):
    return ServerSettings.from_run_config(
        {"experiment": str(experiment), "output-dir": str(out_dir), "run-name": run_name, "resume": resume}
    )


def site_nodes(n=3):
    return [{"partition-id": i, "num-partitions": n} for i in range(n)]
