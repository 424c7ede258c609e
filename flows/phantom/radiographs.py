"""Radiographs drawn from a grade: a knee AP (femur, tibia, fibula) and a hip AP (femoral head in the
acetabulum), 12 bits stored in uint16, with the signs of osteoarthritis a KL-like grade 0-4 implies."""

from __future__ import annotations

import numpy as np

from flows.phantom.drawing import bone_texture, soft


def draw_radiograph(grade: int, side: str, rng: np.random.Generator, size: int = 256,
                    pose: np.random.Generator | None = None) -> np.ndarray:
    """A knee AP radiograph, 12 bits stored in uint16. Grade 0-4 narrows the joint space and
    adds osteophytes (>= 2) and subchondral sclerosis (>= 3). With `pose` (a generator of its own),
    the knee is positioned and exposed as real radiographs are: scale 0.85-1.15, rotation +-8
    degrees, shift +-8% of the field, exposure gain 0.75-1.25 and offset, gamma 0.8-1.25."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    if pose is not None:  # draw in the knee's own frame: coordinates mapped through a random similarity
        x, y = _posed(x, y, size, pose)
    cx = size / 2 + rng.normal(0, 4)
    joint = size * 0.5 + rng.normal(0, 4)
    jsw = [14, 11, 8, 5, 2][grade] * size / 256
    img = 600 + 500 * soft(np.abs(x - cx) - size * 0.36, 12)  # soft tissue
    bone = _knee_bones(x, y, cx, joint, jsw, side, size)
    texture = bone_texture(rng, size)
    img = img + 2200 * bone + 500 * texture * bone
    _knee_degeneration(img, x, y, grade, cx, joint, jsw, size)
    img += rng.normal(0, 40, img.shape)
    if pose is not None:
        img = _exposed(img, pose)
    return np.clip(img, 0, 4095).astype(np.uint16)


def _posed(x: np.ndarray, y: np.ndarray, size: int, pose: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates mapped into the knee's frame through a random similarity (scale, rotation, shift)."""
    scale, angle = pose.uniform(0.85, 1.15), np.deg2rad(pose.uniform(-8, 8))
    tx, ty = pose.uniform(-0.08, 0.08, 2) * size
    c, s_ = np.cos(angle) / scale, np.sin(angle) / scale
    u, v = x - size / 2 - tx, y - size / 2 - ty
    return c * u + s_ * v + size / 2, -s_ * u + c * v + size / 2


def _exposed(img: np.ndarray, pose: np.random.Generator) -> np.ndarray:
    """A random exposure: gain, offset and gamma on the 12-bit range."""
    gain, offset, gamma = pose.uniform(0.75, 1.25), pose.uniform(-300, 300), pose.uniform(0.8, 1.25)
    return 4095 * (np.clip(img * gain + offset, 0, 4095) / 4095) ** gamma


def _knee_bones(x: np.ndarray, y: np.ndarray, cx: float, joint: float, jsw: float, side: str,
                size: int) -> np.ndarray:
    """Femur, tibia and fibula as one soft mask in [0, 1]."""
    # femur: shaft and two condyles, their lower edge at joint - jsw/2
    shaft = soft(np.abs(x - cx) - size * 0.11) * soft(-(joint - size * 0.12 - y))
    condyles = sum(soft(np.hypot((x - (cx + s * size * 0.09)) / 1.25, y - (joint - jsw / 2 - size * 0.09)) - size * 0.09)
                   for s in (-1, 1))
    femur = np.clip(shaft + condyles, 0, 1) * soft(y - (joint - jsw / 2))
    # tibia: plateau and shaft, top edge at joint + jsw/2
    plateau = soft(np.abs(x - cx) - size * 0.2) * soft(-(y - (joint + jsw / 2))) * soft(y - (joint + size * 0.12))
    tshaft = soft(np.abs(x - cx) - size * 0.1) * soft(-(y - (joint + size * 0.1)))
    tibia = np.clip(plateau + tshaft, 0, 1)
    fib_x = cx + (size * 0.22 if side == "L" else -size * 0.22)  # fibula on the lateral side
    fibula = soft(np.abs(x - fib_x) - size * 0.035) * soft(-(y - (joint + size * 0.1)))
    return np.clip(femur + tibia + 0.8 * fibula, 0, 1)


def _knee_degeneration(img: np.ndarray, x: np.ndarray, y: np.ndarray, grade: int, cx: float, joint: float,
                       jsw: float, size: int) -> None:
    """Adds, in place, osteophytes (grade >= 2) and subchondral sclerosis (grade >= 3)."""
    if grade >= 2:  # osteophytes at the four joint margins
        r = (grade - 1) * 2.5 * size / 256
        for sx in (-1, 1):
            for sy in (-1, 1):
                ox, oy = cx + sx * size * 0.2, joint + sy * (jsw / 2 + 3)
                img += 1800 * soft(np.hypot(x - ox, y - oy) - r)
    if grade >= 3:  # sclerosis: a dense band under the plateau
        img += 500 * soft(np.abs(y - (joint + jsw / 2 + 4)) - 3) * soft(np.abs(x - cx) - size * 0.18)


def draw_hip(grade: int, side: str, rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """A hip AP radiograph (the phantom's second anatomy), 12 bits in uint16: the femoral head in the
    acetabulum, neck and shaft towards the lateral side. Grade 0-4 narrows the joint space and adds
    osteophytes (>= 2) and a sclerotic acetabular roof (>= 3)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    lateral = 1 if side == "L" else -1  # image left = patient right, as in an AP view
    hx, hy = size * 0.45 + rng.normal(0, 4), size * 0.42 + rng.normal(0, 4)
    r = size * 0.12
    jsw = [10, 8, 6, 4, 1.5][grade] * size / 256
    img = 700 + 400 * soft(np.abs(y - size / 2) - size * 0.45, 12)
    head = soft(np.hypot(x - hx, y - hy) - r)
    t = np.clip(((x - hx) * lateral * 0.7 + (y - hy) * 0.7) / (size * 0.35), 0, 1)  # neck, down and lateral
    nx, ny = hx + lateral * t * size * 0.245, hy + t * size * 0.245
    neck = soft(np.hypot(x - nx, y - ny) - size * 0.06) * (t > 0) * (t < 1)
    sx = hx + lateral * size * 0.25
    shaft = soft(np.abs(x - sx) - size * 0.08) * soft(-(y - (hy + size * 0.2)))
    femur = np.clip(head + neck + shaft, 0, 1)
    ring = np.hypot(x - hx, y - hy) - (r + jsw)
    acetabulum = soft(np.abs(ring - size * 0.03) - size * 0.03) * (y < hy + r * 0.3)
    pelvis = soft(-(x - hx) * lateral - size * 0.05) * soft(np.abs(y - (hy - size * 0.05)) - size * 0.2)
    bone = np.clip(femur + acetabulum + 0.7 * pelvis, 0, 1)
    texture = bone_texture(rng, size)
    img = img + 2100 * bone + 450 * texture * bone
    if grade >= 2:  # osteophytes at the rim of the acetabulum and the head-neck junction
        rr = (grade - 1) * 2.5 * size / 256
        for ang in (-0.6, 0.9):
            ox, oy = hx + lateral * np.cos(ang) * (r + jsw + 4), hy - np.sin(ang) * (r + jsw + 4)
            img += 1800 * soft(np.hypot(x - ox, y - oy) - rr)
    if grade >= 3:  # sclerosis: a dense acetabular roof
        img += 600 * soft(np.abs(ring - 3) - 3) * (y < hy - r * 0.3)
    img += rng.normal(0, 40, img.shape)
    return np.clip(img, 0, 4095).astype(np.uint16)
