"""The model catalogue (:mod:`.catalogue`), the architectures densify defines (:mod:`.archs`),
and weight resolution (:mod:`.weights`). The project's trained weights ship as package data in
``densify/models/data/``. Importing this package (or the catalogue) does not import torch."""
