"""The instruction-edit families ComfyUI runs, and how each one takes the image to edit (pure: no ComfyUI).

Three routes exist in ComfyUI 0.8, and each family uses one of them:

* **channel concat** (InstructPix2Pix, CosXL Edit): ``concat_latent_image`` is concatenated to the noisy
  latent's channels; without it the model sees a zero image.
* **width concat** (HiDream-E1): ``concat_latent_image`` is placed beside the noisy latent along the width;
  without it the sequence is the noise alone.
* **reference latents** (Flux Kontext, Flux.2, Qwen-Image-Edit, OmniGen2): ``reference_latents`` (a list,
  one latent per reference image, as core ``ReferenceLatent`` appends them) become tokens after the noise.

Whatever the route, the three guidance branches are the same: *full* = positive with the image,
*image-only* = negative with the image, *unconditional* = negative with every image key removed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Optional

from ..vocabulary import IMAGE_KEY, REFERENCE_KEY, REFERENCE_METHOD_KEY, with_appended, with_values


class ImageRoute(str, enum.Enum):
    CHANNEL_CONCAT = "channel concat"
    WIDTH_CONCAT = "width concat"
    REFERENCE = "reference latents"


@dataclass(frozen=True)
class Family:
    """An edit family: its route, its transformer patch, what else of it guidance must know."""

    name: str
    route: ImageRoute
    patch: int = 1  # latent cells per token side
    vae_factor: int = 8  # pixels per latent cell
    image_in_text: bool = False  # the image is also encoded into the text tokens (Qwen-Image-Edit)
    several_references: bool = False  # the model attends to more than one reference image

    @property
    def image_keys(self) -> tuple[str, ...]:
        """The conditioning keys that carry the image: removed for the unconditional branch."""
        if self.route is ImageRoute.REFERENCE:
            return (REFERENCE_KEY, REFERENCE_METHOD_KEY)
        return (IMAGE_KEY,)

    @property
    def cell(self) -> int:
        """Pixels per token side: the size image sides are fitted to, so no token straddles the edge."""
        return self.vae_factor * self.patch

    def attach(self, conditioning: list, latent: Any) -> list:
        """A copy of ``conditioning`` carrying ``latent`` the way this family reads it."""
        if self.route is ImageRoute.REFERENCE:
            return with_appended(conditioning, REFERENCE_KEY, [latent])
        return with_values(conditioning, {IMAGE_KEY: latent})

    def has_image(self, extras: dict) -> bool:
        if self.route is ImageRoute.REFERENCE:
            return bool(extras.get(REFERENCE_KEY))
        return extras.get(IMAGE_KEY) is not None

    def images(self, extras: dict) -> list:
        """The image latents one conditioning entry carries (several references, or the one concat image)."""
        if self.route is ImageRoute.REFERENCE:
            return list(extras.get(REFERENCE_KEY) or [])
        image = extras.get(IMAGE_KEY)
        return [] if image is None else [image]


INSTRUCT_PIX2PIX = Family("InstructPix2Pix (SD1.5 / SDXL / CosXL Edit)", ImageRoute.CHANNEL_CONCAT)
HIDREAM_E1 = Family("HiDream-E1", ImageRoute.WIDTH_CONCAT, patch=2)
FLUX_KONTEXT = Family("Flux.1 Kontext", ImageRoute.REFERENCE, patch=2, several_references=True)
FLUX2 = Family("Flux.2", ImageRoute.REFERENCE, patch=1, vae_factor=16, several_references=True)
QWEN_IMAGE_EDIT = Family("Qwen-Image-Edit", ImageRoute.REFERENCE, patch=2, image_in_text=True, several_references=True)
OMNIGEN2 = Family("OmniGen2", ImageRoute.REFERENCE, patch=2, several_references=True)

FAMILIES: tuple[Family, ...] = (INSTRUCT_PIX2PIX, HIDREAM_E1, FLUX_KONTEXT, FLUX2, QWEN_IMAGE_EDIT, OMNIGEN2)


def carried_route(conditioning: list) -> Optional[ImageRoute]:
    """Which kind of image key a CONDITIONING carries (concat image first), or None."""
    if any(extras.get(IMAGE_KEY) is not None for _, extras in conditioning):
        return ImageRoute.CHANNEL_CONCAT
    if any(extras.get(REFERENCE_KEY) for _, extras in conditioning):
        return ImageRoute.REFERENCE
    return None
