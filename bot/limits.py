"""Limits on what users may ask for (SPEC §6), shared by the parser, the options and the engine."""

from __future__ import annotations

PROMPT_MAX = 1000
COUNT_MIN, COUNT_MAX = 1, 4
SEED_MIN, SEED_MAX = 0, 4_294_967_295
STEPS_MIN, STEPS_MAX = 1, 150
GUIDANCE_MIN, GUIDANCE_MAX = 0.0, 30.0
STRENGTH_MIN, STRENGTH_MAX = 0.05, 1.0
ASPECT_MAX_RATIO = 4.0
ASPECT_SIDE_MAX = 10_000
MAX_PIXELS = 4_200_000
UPLOAD_MAX_BYTES = 10 * 1024 * 1024
UPLOAD_MAX_SIDE = 4096
UPLOAD_TYPES = ("PNG", "JPEG", "WEBP")
MULTI_PROMPT_PARTS_MAX = 8
LORAS_MAX = 5  # LoRAs in one prompt
LORA_WEIGHT_MIN, LORA_WEIGHT_MAX = -5.0, 5.0
# Pictures one person may have Atelier post publicly again (`U<n>`, `/recall`, `Open…`) in a
# minute: each is a full-size upload into a channel.
PUBLIC_POSTS_PER_MINUTE = 10

ASPECT_CHOICES = ("1:1", "4:3", "3:4", "3:2", "2:3", "16:9", "9:16", "21:9")
