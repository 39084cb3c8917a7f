"""TIAToolbox's patch predictor over an image, in TIAToolbox's own environment (it pins an older
torch): the peer side of ``scripts/peer_slide_throughput.py``, which runs this file with
``--tiatoolbox PYTHON``. Not importable by densify, and densify is not imported here.

    python3 -m venv /tmp/tiavenv && /tmp/tiavenv/bin/pip install tiatoolbox
    /tmp/tiavenv/bin/python scripts/tia_patch_grid.py REGION.png WEIGHTS.pt --threads 2

TIAToolbox's ``CNNModel("resnet18")`` is torchvision's ResNet-18 trunk (``feat_extract``: its
children up to ``layer4``), a global average pool and a linear ``classifier``: the torchvision state
dict in ``WEIGHTS.pt`` maps onto it key by key. Each patch is normalized with ImageNet's mean and
std (the model's ``preproc_func``); :class:`PatchPredictor` runs in WSI mode on the image
(a virtual slide at its own resolution, no tissue mask) with 224-px patches at stride 32 and
writes the per-patch probabilities to a zarr store in a temporary directory. Prints one JSON line:
patches, seconds (``run`` alone, the model already built), the torch and TIAToolbox versions.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ORDER = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def tia_state(state: dict) -> dict:
    """torchvision ResNet-18 keys -> TIAToolbox ``CNNModel`` keys."""
    out = {}
    for key, value in state.items():
        head, _, rest = key.partition(".")
        out[f"classifier.{rest}" if head == "fc" else
            f"feat_extract.{ORDER.index(head)}.{rest}"] = value
    return out


def normalize(patch: np.ndarray) -> np.ndarray:
    return (patch.astype(np.float32) / 255 - MEAN) / STD


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", type=Path)
    parser.add_argument("weights", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()

    import tiatoolbox
    from tiatoolbox.models import IOPatchPredictorConfig, PatchPredictor
    from tiatoolbox.models.architecture.vanilla import CNNModel

    torch.set_num_threads(args.threads)
    model = CNNModel("resnet18", num_classes=1000)
    model.load_state_dict(tia_state(torch.load(args.weights, weights_only=True)))
    model.preproc_func = normalize
    model.eval()
    ioconfig = IOPatchPredictorConfig(input_resolutions=[{"units": "baseline", "resolution": 1.0}],
                                      patch_input_shape=(224, 224), stride_shape=(32, 32))
    predictor = PatchPredictor(model=model, batch_size=args.batch, device="cpu", verbose=False)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        out = predictor.run([args.image], patch_mode=False, ioconfig=ioconfig,
                            save_dir=Path(tmp) / "out", output_type="zarr",
                            auto_get_mask=False, return_probabilities=True)
        seconds = time.perf_counter() - start
        import zarr

        store = zarr.open(str(next(iter(out.values()))), mode="r")
        probs = np.asarray(store["probabilities"])
        coords = np.asarray(store["coordinates"])
    print(json.dumps({"patches": int(probs.shape[0]), "seconds": round(seconds, 2),
                      "torch": torch.__version__, "tiatoolbox": tiatoolbox.__version__,
                      "first": [int(v) for v in coords[0]], "last": [int(v) for v in coords[-1]]}))


if __name__ == "__main__":
    main()
