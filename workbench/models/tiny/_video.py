"""Sizes shared by the tiny video denoisers (Wan, CogVideoX, LTX-Video).

A tiny video is 3 latent frames of 8 x 8; with 2 x 2 spatial patches (1 x 1 for LTX-Video,
which packs tokens itself, on a 4 x 4 latent) that is 3 frames of 4 x 4 = 48 video tokens, so a
whole video->video matrix is 48 x 48 and a forward pass takes milliseconds.
"""

from __future__ import annotations

#: Latent frames of a tiny video.
VIDEO_FRAMES = 3
#: Latent height/width of a tiny video (before 2 x 2 patching).
VIDEO_LATENT_SIZE = 8
#: Token grid of every tiny video denoiser: (frames, rows, cols).
VIDEO_TOKEN_GRID = (VIDEO_FRAMES, VIDEO_LATENT_SIZE // 2, VIDEO_LATENT_SIZE // 2)

