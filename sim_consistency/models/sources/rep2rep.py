"""Rep2Rep's (thingsvision's) model names -> real architectures and published checkpoints.

:data:`SSL_MODELS` maps every ``source: "ssl"`` name of thingsvision 2.6 to the architecture
its checkpoint was trained with and where that checkpoint is published:

* DINO / DINOv2 / MAE ViTs -> the timm model whose pretrained tag holds the same weights
  (timm converted them from the official releases), loaded from the Hugging Face cache;
* DINO XCiTs -> timm's XCiT architecture (headless) + the DINO release file, translated by
  timm's XCiT ``checkpoint_filter_fn``;
* the ResNet-50 family -> torchvision's ``resnet50`` with ``fc = Identity`` (as thingsvision
  builds it) + the release file: plain torchvision keys (DINO-RN50, Barlow Twins, VICReg) or a
  VISSL checkpoint (SimCLR, MoCo v2, SwAV, PIRL, Jigsaw, RotNet), whose trunk is read from
  ``classy_state_dict.base_model.model.trunk`` with the ``_feature_blocks.`` prefix removed.

URL checkpoints are looked up in the torch hub cache, ``$TORCH_HOME/hub/checkpoints/<name>-
<file>`` (VISSL releases share file names), and in thingsvision's own converted copy
``$TORCH_HOME/vissl/<name>.torch``. Every ssl model uses thingsvision's eval transform: resize
the shorter side to 256 (bilinear), centre-crop 224, ImageNet mean/std. Deviation: DINOv2 runs
at 224 with timm's position embeddings resampled once at load (bicubic), where the hub model
interpolates them at every forward pass; values differ slightly.

:data:`CUSTOM_MODELS` covers ``source: "custom"``: ``OpenCLIP`` (``model_parameters.variant`` /
``dataset``) and ``clip`` (OpenAI CLIP by ``variant``) become open_clip entries;
``Kakaobrain_Align`` and ``DreamSim`` are refused with what they would need.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypedDict

__all__ = ["CUSTOM_MODELS", "SSL_MODELS", "SslModel", "THINGSVISION_TRANSFORM"]


@dataclass(frozen=True)
class SslModel:
    """Where one ssl name's architecture and weights come from.

    Attributes:
        library: ``timm`` or ``torchvision``.
        arch: timm model name (with the weights' tag when timm has them) or torchvision builder.
        url: the published checkpoint, when timm does not host the weights.
        layout: how the checkpoint's keys map onto ``arch``: ``timm`` (timm's own weights),
            ``timm_filter`` (timm's family checkpoint filter), ``torchvision`` (same keys, no
            ``fc``), ``vissl`` (VISSL trunk, ``_feature_blocks.`` prefix removed).
        img_size: input resolution the model runs at (DINOv2: 224, as in thingsvision).
    """

    library: Literal["timm", "torchvision"]
    arch: str
    url: str | None = None
    layout: Literal["timm", "timm_filter", "torchvision", "vissl"] = "timm"
    img_size: int | None = None


_DINO = "https://dl.fbaipublicfiles.com/dino"
_VISSL = "https://dl.fbaipublicfiles.com/vissl/model_zoo"

#: thingsvision's ssl names (2.6) -> architecture + checkpoint.
SSL_MODELS: dict[str, SslModel] = {
    "dino-vit-small-p8": SslModel("timm", "vit_small_patch8_224.dino"),
    "dino-vit-small-p16": SslModel("timm", "vit_small_patch16_224.dino"),
    "dino-vit-base-p8": SslModel("timm", "vit_base_patch8_224.dino"),
    "dino-vit-base-p16": SslModel("timm", "vit_base_patch16_224.dino"),
    "dinov2-vit-small-p14": SslModel("timm", "vit_small_patch14_dinov2.lvd142m", img_size=224),
    "dinov2-vit-base-p14": SslModel("timm", "vit_base_patch14_dinov2.lvd142m", img_size=224),
    "dinov2-vit-large-p14": SslModel("timm", "vit_large_patch14_dinov2.lvd142m", img_size=224),
    "dinov2-vit-giant-p14": SslModel("timm", "vit_giant_patch14_dinov2.lvd142m", img_size=224),
    "mae-vit-base-p16": SslModel("timm", "vit_base_patch16_224.mae"),
    "mae-vit-large-p16": SslModel("timm", "vit_large_patch16_224.mae"),
    "mae-vit-huge-p14": SslModel("timm", "vit_huge_patch14_224.mae"),
    **{
        f"dino-xcit-{size}-p{patch}": SslModel(
            "timm",
            f"xcit_{size.replace('-', '_')}_p{patch}_224",
            f"{_DINO}/dino_xcit_{size.replace('-', '_')}_p{patch}_pretrain/"
            f"dino_xcit_{size.replace('-', '_')}_p{patch}_pretrain.pth",
            layout="timm_filter",
        )
        for size in ("small-12", "medium-24")
        for patch in (8, 16)
    },
    "dino-rn50": SslModel(
        "torchvision",
        "resnet50",
        f"{_DINO}/dino_resnet50_pretrain/dino_resnet50_pretrain.pth",
        layout="torchvision",
    ),
    "barlowtwins-rn50": SslModel(
        "torchvision",
        "resnet50",
        "https://dl.fbaipublicfiles.com/barlowtwins/ljng/resnet50.pth",
        layout="torchvision",
    ),
    "vicreg-rn50": SslModel(
        "torchvision",
        "resnet50",
        "https://dl.fbaipublicfiles.com/vicreg/resnet50.pth",
        layout="torchvision",
    ),
    "simclr-rn50": SslModel(
        "torchvision",
        "resnet50",
        f"{_VISSL}/simclr_rn50_800ep_simclr_8node_resnet_16_07_20.7e8feed1/"
        "model_final_checkpoint_phase799.torch",
        layout="vissl",
    ),
    "mocov2-rn50": SslModel(
        "torchvision",
        "resnet50",
        f"{_VISSL}/moco_v2_1node_lr.03_step_b32_zero_init/model_final_checkpoint_phase199.torch",
        layout="vissl",
    ),
    "jigsaw-rn50": SslModel(
        "torchvision",
        "resnet50",
        f"{_VISSL}/jigsaw_rn50_in1k_ep105_perm2k_jigsaw_8gpu_resnet_17_07_20.db174a43/"
        "model_final_checkpoint_phase104.torch",
        layout="vissl",
    ),
    "rotnet-rn50": SslModel(
        "torchvision",
        "resnet50",
        f"{_VISSL}/rotnet_rn50_in1k_ep105_rotnet_8gpu_resnet_17_07_20.46bada9f/"
        "model_final_checkpoint_phase125.torch",
        layout="vissl",
    ),
    "swav-rn50": SslModel(
        "torchvision",
        "resnet50",
        f"{_VISSL}/swav_in1k_rn50_800ep_swav_8node_resnet_27_07_20.a0a6b676/"
        "model_final_checkpoint_phase799.torch",
        layout="vissl",
    ),
    "pirl-rn50": SslModel(
        "torchvision",
        "resnet50",
        f"{_VISSL}/pirl_jigsaw_4node_pirl_jigsaw_4node_resnet_22_07_20.34377f59/"
        "model_final_checkpoint_phase799.torch",
        layout="vissl",
    ),
}


class ThingsvisionTransform(TypedDict):
    """Settings of thingsvision's default eval transform (resize, centre-crop, normalise)."""

    input_size: int
    resize: int
    mean: list[float]
    std: list[float]
    interpolation: str


#: thingsvision's eval transform of ssl models (``get_default_transformation``).
THINGSVISION_TRANSFORM: ThingsvisionTransform = {
    "input_size": 224,
    "resize": 256,
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "interpolation": "bilinear",
}

#: ``source: "custom"`` names: ``None`` = supported (mapped to open_clip), else why refused.
CUSTOM_MODELS: dict[str, str | None] = {
    "OpenCLIP": None,
    "clip": None,
    "Kakaobrain_Align": (
        "Kakaobrain_Align is not supported: thingsvision builds it from transformers' AlignModel "
        "(kakaobrain/align-base) and takes its 'pooler' output, which this platform does not map "
        "yet. Extract its features with Rep2Rep and import them "
        "(python scripts/import_rep2rep.py features …), or drop the entry."
    ),
    "DreamSim": (
        "DreamSim is not supported: it needs the `dreamsim` package and its ensemble/ViT "
        "checkpoints (downloaded by dreamsim at first use), which are not dependencies of this "
        "platform. Extract its features with Rep2Rep and import them "
        "(python scripts/import_rep2rep.py features …), or drop the entry."
    ),
}
