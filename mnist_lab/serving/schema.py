"""The server's published contract: what ``GET /openapi.json`` says about ``POST /predict`` and
``GET /health``.

Documentation only: the handlers parse the body by hand (orjson + numpy, ~0.2 ms for a JSON
digit) and return orjson-encoded responses, so none of these models validates 784 numbers on
the hot path. The request body schemas are plain JSON Schema (``openapi_extra``); the response
models are pydantic classes that FastAPI turns into ``components/schemas``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

SIDE = 28


class Prediction(BaseModel):
    """The answer of ``POST /predict``."""

    digit: int = Field(ge=0, le=9, description="the most probable digit")
    probabilities: list[float] = Field(
        min_length=10,
        max_length=10,
        description="probability of each digit 0-9 (they sum to 1, rounded to 6 decimals)",
    )
    input: list[list[int]] | None = Field(
        default=None,
        min_length=SIDE,
        max_length=SIDE,
        description="the 28x28 image (0-255, white ink on black) the model saw; only with "
        "?return_input=true",
    )


class ErrorBody(BaseModel):
    """Every refusal (4xx, 503) of this API: one human-readable message."""

    detail: str = Field(description="what was wrong and how to send it instead")


class Health(BaseModel):
    """``GET /health``: the loaded model and the server's own cost."""

    status: str
    model: str = Field(description="the loaded model file (and what it is, when shipped)")
    mean_batch: float | None = Field(description="mean images per forward pass, recent batches")
    cpu_seconds: float = Field(description="the server process's CPU time so far")
    rss_mb: float = Field(description="the server process's resident memory")


def _stroke_example() -> list[list[int]]:
    """A hand-drawn-looking 1: a vertical bar of white ink on black."""
    return [[255 if 4 <= row < 24 and 13 <= col < 16 else 0 for col in range(SIDE)]
            for row in range(SIDE)]  # fmt: skip


STROKE = _stroke_example()
EXAMPLE_PROBABILITIES = [0.0001, 0.9987, 0.0003, 0.0001, 0.0002,
                         0.0001, 0.0001, 0.0002, 0.0001, 0.0001]  # fmt: skip
_ROW = {"type": "array", "minItems": SIDE, "maxItems": SIDE,
        "items": {"type": "number", "minimum": 0, "maximum": 255}}  # fmt: skip
PIXELS_SCHEMA: dict[str, Any] = {
    "title": "Pixels",
    "type": "object",
    "required": ["pixels"],
    "additionalProperties": False,
    "properties": {
        "pixels": {
            "description": "28 rows of 28 numbers 0-255 (grey levels; either ink colour works)",
            "type": "array",
            "minItems": SIDE,
            "maxItems": SIDE,
            "items": _ROW,
        }
    },
}
UPLOAD_SCHEMA: dict[str, Any] = {
    "title": "Upload",
    "type": "object",
    "required": ["file"],
    "properties": {
        "file": {
            "description": "a photo, scan or drawing of one digit (PNG, JPEG, ...; at most 5 MB)",
            "type": "string",
            "format": "binary",
        }
    },
}

ERROR_STATUSES = {
    400: "the body is not a usable image (unreadable, blank, wrong shape or values)",
    413: "the body is over the 5 MB limit, or the image over the pixel limit",
    415: "neither multipart/form-data nor application/json",
    422: "a malformed query parameter (return_input)",
    503: "the model failed on this request's batch",
}


def error_responses(statuses: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorBody, "description": text} for status, text in statuses.items()}


PREDICT_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "one digit: JSON pixels, or an image upload in the multipart field file",
        "content": {
            "application/json": {
                "schema": PIXELS_SCHEMA,
                "examples": {
                    "one": {"summary": "a vertical stroke (a 1)", "value": {"pixels": STROKE}},
                },
            },
            "multipart/form-data": {
                "schema": UPLOAD_SCHEMA,
                "encoding": {"file": {"contentType": "image/png, image/jpeg, image/*"}},
            },
        },
    }
}

PREDICT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": Prediction,
        "description": "the digit and the probability of each",
        "content": {
            "application/json": {
                "example": {
                    "digit": 1,
                    "probabilities": EXAMPLE_PROBABILITIES,
                }
            }
        },
    },
    **error_responses(ERROR_STATUSES),
}
