"""Limits on what users may ask for (SPEC §6), shared by the parser, the options and the engine."""

from __future__ import annotations

from bot.engine.prompting import (  # noqa: F401  (the prompt syntax's own limits, kept with it)
    LORA_WEIGHT_MAX,
    LORA_WEIGHT_MIN,
    LORAS_MAX,
    MULTI_PROMPT_PARTS_MAX,
    PROMPT_CHUNK_TOKENS,
    PROMPT_CHUNKS_MAX,
)

PROMPT_MAX = 1000
COUNT_MIN, COUNT_MAX = 1, 4
SEED_MIN, SEED_MAX = 0, 4_294_967_295
STEPS_MIN, STEPS_MAX = 1, 150
GUIDANCE_MIN, GUIDANCE_MAX = 0.0, 30.0
STRENGTH_MIN, STRENGTH_MAX = 0.05, 1.0
CONTROL_WEIGHT_MIN, CONTROL_WEIGHT_MAX = 0.0, 2.0  # --cw
IMAGE_WEIGHT_MIN, IMAGE_WEIGHT_MAX = 0.0, 3.0  # --iw
STYLE_WEIGHT_MIN, STYLE_WEIGHT_MAX = 0.0, 1000.0  # --sw
BLEND_MIN, BLEND_MAX = 2, 5  # /blend's pictures
ASPECT_MAX_RATIO = 4.0
ASPECT_SIDE_MAX = 10_000
MAX_PIXELS = 4_200_000
UPLOAD_MAX_BYTES = 10 * 1024 * 1024
UPLOAD_MAX_SIDE = 4096
UPLOAD_TYPES = ("PNG", "JPEG", "WEBP")
# Pictures one person may have Atelier post publicly again (`U<n>`, `/recall`, `Open…`) in a
# minute: each is a full-size upload into a channel.
PUBLIC_POSTS_PER_MINUTE = 10

ASPECT_CHOICES = ("1:1", "4:3", "3:4", "3:2", "2:3", "16:9", "9:16", "21:9")
