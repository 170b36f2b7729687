"""Replays of simulator episodes as animated GIFs: units, health and shield bars, shots, step number."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

SCALE = 20  # pixels per map cell
ALLY_COLOUR = (40, 110, 220)
ENEMY_COLOUR = (215, 50, 45)
GROUND = (235, 228, 205)
BLOCKED = (90, 90, 90)


def _background(env) -> Image.Image:
    grid = env.pathing_grid  # [x, y]
    h, w = grid.shape[1], grid.shape[0]
    img = np.empty((h, w, 3), dtype=np.uint8)
    img[:] = BLOCKED
    img[grid.T[::-1]] = GROUND  # image rows run top (high y) to bottom
    return Image.fromarray(img).resize((w * SCALE, h * SCALE), Image.NEAREST)


def render_frame(env, frame: dict, background: Image.Image | None = None) -> Image.Image:
    """Draw one snapshot (``x``, ``y``, ``health``, ``shield``, ``fired_at``, ``step``) of ``env``."""
    img = (background or _background(env)).copy()
    draw = ImageDraw.Draw(img)
    height = img.size[1]
    radius = env.static[0]
    n_agents = env.n_agents

    def px(u):
        return frame["x"][u] * SCALE, height - frame["y"][u] * SCALE

    for u, t in enumerate(frame["fired_at"]):
        if t >= 0:
            draw.line([px(u), px(t)], fill=(255, 200, 0), width=2)
    for u in range(len(frame["x"])):
        cx, cy = px(u)
        r = radius[u] * SCALE
        alive = frame["health"][u] > 0
        colour = (ALLY_COLOUR if u < n_agents else ENEMY_COLOUR) if alive else (150, 150, 150)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour, outline=(0, 0, 0))
        if not alive:
            continue
        label = str(u if u < n_agents else u - n_agents)
        draw.text((cx - 3, cy - 6), label, fill=(255, 255, 255))
        bar_w = max(2 * r, 14)
        frac = frame["health"][u] / env.health_max[u]
        draw.rectangle([cx - bar_w / 2, cy - r - 6, cx - bar_w / 2 + bar_w * frac, cy - r - 3],
                       fill=(40, 190, 60))
        if env.shield_max[u] > 0:
            sfrac = frame["shield"][u] / env.shield_max[u]
            draw.rectangle([cx - bar_w / 2, cy - r - 10, cx - bar_w / 2 + bar_w * sfrac, cy - r - 7],
                           fill=(60, 200, 230))
    draw.text((6, 6), f"{env.map_name}  step {frame['step']}", fill=(0, 0, 0))
    return img


def render_episode_gif(env, frames: list[dict], path: str, seconds_per_step: float = 0.25) -> None:
    """Write ``frames`` (one snapshot per agent step) as an animated GIF at ``path``."""
    if not frames:
        raise ValueError("No frames to write: run an episode first.")
    background = _background(env)
    images = [render_frame(env, f, background) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], loop=0,
                   duration=int(seconds_per_step * 1000))
