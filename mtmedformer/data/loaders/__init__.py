"""Native readers of the public data sets' published layouts, each producing ``list[Record]``.

- :func:`load_cbis_ddsm`: CBIS-DDSM (TCIA) case-description CSVs + DICOM tree (masks, pathology).
- :func:`load_rsna`: RSNA Pneumonia Detection stage-2 labels CSV + DICOMs (boxes, labels).
- :func:`load_kermany`: Kermany ChestXRay2017 ``chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}`` (labels).

Each module's docstring documents the exact layout it accepts and how it maps to records.
"""

from mtmedformer.data.loaders.cbis_ddsm import load_cbis_ddsm
from mtmedformer.data.loaders.kermany import load_kermany
from mtmedformer.data.loaders.rsna import load_rsna

__all__ = ["load_cbis_ddsm", "load_kermany", "load_rsna"]
