"""Can: grasp the can from above, carry it over the bin wall, drop it into its
compartment of the target bin, and lift the hand away (success needs the hand
clear of the can)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from envs.data.demonstrators.base import Scripter, gripper_yaw

# The can's compartment of the target bin is robosuite's PickPlace quadrant x in (0.1, 0.295),
# y in (0.28, 0.525) (bin2_pos (0.1, 0.28, 0.8), bin_size (0.39, 0.49)), can below 0.9 m. Its centre,
# target_bin_placements[3] = (0.1975, 0.4025), is at the edge of the Panda's reach with a can in hand,
# so the operator aims nearer the robot, still 5 cm inside the walls.
TARGET_XY = np.array([0.16, 0.36])
CARRY_Z = 1.0  # clears the bins' walls with the can hanging below the hand
DROP_Z = 0.93  # hand height when releasing: the can's bottom a few centimetres above the bin floor


def script(s: Scripter) -> Iterator[np.ndarray]:
    can = lambda: np.asarray(s.obs["Can_pos"], float)  # noqa: E731
    rot = s.yaw_rotation(gripper_yaw(s))  # the can is round: keep the hand's yaw, just point it down
    offset = s.rng.uniform(-1, 1, 3) * np.array([s.op.grasp_offset, s.op.grasp_offset, 0.0])
    yield from s.move(lambda: can() + offset + [0.0, 0.0, s.op.approach_height], rot, tol=0.015, via=True)
    yield from s.move(lambda: can() + offset + [0.0, 0.0, 0.01], rot, tol=0.01, speed=0.5)
    yield from s.grasp()
    yield from s.move(lambda: s.eef() * [1, 1, 0] + [0.0, 0.0, CARRY_Z], rot, tol=0.03)
    jitter = s.rng.uniform(-0.03, 0.03, 2)
    yield from s.move(np.r_[TARGET_XY + jitter, CARRY_Z], rot, tol=0.03, via=True)
    yield from s.move(np.r_[TARGET_XY + jitter, DROP_Z], rot, tol=0.03, speed=0.5)
    yield from s.release()
    yield from s.move(lambda: s.eef() * [1, 1, 0] + [0.0, 0.0, CARRY_Z + 0.05], rot, tol=0.03)
    yield from s.hold(10)
