"""Lift: line up above the cube, turn to its nearest face, descend, grasp, lift."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from envs.data.demonstrators.base import Scripter, face_yaw, gripper_yaw


def script(s: Scripter) -> Iterator[np.ndarray]:
    cube = lambda: np.asarray(s.obs["cube_pos"], float)  # noqa: E731
    offset = s.rng.uniform(-1, 1, 3) * np.array([s.op.grasp_offset, s.op.grasp_offset, 0.0])
    yaw = face_yaw(s.obs["cube_quat"], gripper_yaw(s))
    rot = s.yaw_rotation(yaw)
    above = lambda: cube() + offset + [0.0, 0.0, s.op.approach_height]  # noqa: E731
    yield from s.move(above, rot, tol=0.015, via=True)
    yield from s.move(lambda: cube() + offset + [0.0, 0.0, -0.005], rot, tol=0.008, speed=0.5)
    yield from s.grasp()
    yield from s.move(lambda: s.eef() * [1, 1, 0] + [0.0, 0.0, 1.05], rot, tol=0.02)
    yield from s.hold(10)
