"""Portrait nodes: find faces, crop head-and-shoulders, studio backdrop, style grading.

The models (mediapipe's face detector and selfie segmenter) ship inside the mediapipe
wheel; nothing is downloaded at run time.
"""

from __future__ import annotations

import re

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, field_validator

from flowy.engine.spec import NodeContext, Port, node
from flowy.errors import NodeError
from flowy.nodes import style as style_mod
from flowy.nodes import vision


class FaceCropParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    width: int = Field(768, ge=64, le=4096, description="Width of the portrait, pixels.")
    height: int = Field(960, ge=64, le=4096, description="Height of the portrait, pixels.")
    min_score: float = Field(0.5, ge=0.05, le=1.0, description="Face detector confidence.")


class DetectParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min_score: float = Field(0.5, ge=0.05, le=1.0, description="Face detector confidence.")


def _hex_color(value: str) -> tuple[int, int, int]:
    m = re.fullmatch(r"#?([0-9a-fA-F]{6})", value.strip())
    if not m:
        raise ValueError("must be a colour like #8a8d91")
    h = m.group(1)
    return (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16))


class BackdropParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    color: str = Field(
        "#{:02x}{:02x}{:02x}".format(*vision.NEUTRAL_GREY),
        description="Backdrop colour (hex) unless the style names one.",
    )

    @field_validator("color")
    @classmethod
    def _check(cls, v: str) -> str:
        _hex_color(v)
        return v


@node(
    "image.detect_faces",
    title="Detect faces",
    category="image",
    params=DetectParams,
    inputs={"image": Port("image")},
    outputs={
        "faces": Port("json", "Boxes {x, y, width, height, score}, largest first"),
        "count": Port("number"),
    },
)
def detect_faces(ctx: NodeContext, params: DetectParams, image: Image.Image) -> dict[str, object]:
    """Find faces in an image (mediapipe full-range detector)."""
    faces = vision.detect_faces(image, min_score=params.min_score)
    return {"faces": [f.to_dict() for f in faces], "count": len(faces)}


@node(
    "image.face_crop",
    title="Crop to face",
    category="image",
    params=FaceCropParams,
    inputs={"image": Port("image")},
    outputs={"image": Port("image")},
)
def face_crop(ctx: NodeContext, params: FaceCropParams, image: Image.Image) -> dict[str, object]:
    """Crop head and shoulders around the largest face to a portrait frame.

    Fails when the photo has no face.
    """
    faces = vision.detect_faces(image, min_score=params.min_score)
    if not faces:
        raise NodeError("no face found in the photo; use a photo where a face is visible")
    ctx.check_canceled()
    return {
        "image": vision.portrait_crop(image, faces[0], width=params.width, height=params.height)
    }


@node(
    "image.studio_backdrop",
    title="Studio backdrop",
    category="image",
    params=BackdropParams,
    inputs={
        "image": Port("image"),
        "style": Port("text", "May name a backdrop colour", optional=True),
    },
    outputs={"image": Port("image")},
)
def studio_backdrop(
    ctx: NodeContext, params: BackdropParams, image: Image.Image, style: str | None = None
) -> dict[str, object]:
    """Replace the background behind the person with a soft studio backdrop."""
    color = style_mod.parse_style(style).backdrop or _hex_color(params.color)
    mask = vision.person_mask(image)
    ctx.check_canceled()
    backdrop = vision.studio_backdrop(image.size, color)
    return {"image": vision.replace_background(image, mask, backdrop)}


@node(
    "image.style",
    title="Light and colour",
    category="image",
    inputs={
        "image": Port("image"),
        "style": Port("text", "e.g. 'warm, soft light'", optional=True),
    },
    outputs={"image": Port("image")},
)
def style(
    ctx: NodeContext, params: BaseModel, image: Image.Image, style: str | None = None
) -> dict[str, object]:
    """Adjust light and colour by the phrases of a style text it understands
    (studio lighting, soft, dramatic, warm, cool, vivid, muted, black and white, ...)."""
    return {"image": style_mod.apply_style(image, style_mod.parse_style(style))}


NODES = [detect_faces, face_crop, studio_backdrop, style]
