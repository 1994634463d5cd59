"""Deterministic synthetic mammography and chest X-ray sets for tests, demos and federated experiments.

``synthetic_manifest(cfg)`` returns the manifest CSV of the set described by a
:class:`~mtmedformer.config.data.SyntheticConfig`, generating and caching it on first use;
``generate_synthetic(cfg, out_dir)`` writes a set into a folder of your choice. The manifest uses
the generic manifest format (see :mod:`mtmedformer.data.synthetic.writer`), so synthetic and real
data go through the same reader.

Modules: :mod:`.mammography` and :mod:`.chest_xray` draw ideal images, :mod:`.sites` simulates each
site's detector and case mix, :mod:`.writer` plans, saves and caches.
"""

from mtmedformer.data.synthetic.writer import (
    GENERATOR_VERSION,
    MANIFEST_NAME,
    classes_of,
    generate_synthetic,
    synthetic_manifest,
    synthetic_set_dir,
)

__all__ = [
    "GENERATOR_VERSION",
    "MANIFEST_NAME",
    "classes_of",
    "generate_synthetic",
    "synthetic_manifest",
    "synthetic_set_dir",
]
