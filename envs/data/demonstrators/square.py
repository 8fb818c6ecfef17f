"""Square: grasp the square nut by its handle, carry it over the square peg, turn it square to the peg, drop it on.

Geometry from robosuite 1.5.2's models: the nut (assets/objects/square-nut.xml) is a square ring of 0.02275 m inner
half-width with a handle box along its x axis; `SquareNut_pos`/`SquareNut_quat` are the nut body's frame, i.e. the
ring's centre (nut_assembly.py `nut_pos`), not the handle site. The square peg `peg1` (assets/arenas/pegs_arena.xml)
is a fixed 0.032 m square box centred at (0.23, 0.1, 0.85) with half-height 0.1, so its top is at z = 0.95.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from envs.data.demonstrators.base import Scripter, face_yaw, gripper_yaw, quat_to_mat, wrap_angle

PEG_XY = np.array([0.23, 0.1])  # peg1's body pos in pegs_arena.xml (world frame; the arena sits at the origin)
PEG_TOP = 0.95  # peg1 z 0.85 + half-height 0.1
NUT_HALF_THICKNESS = 0.01  # the ring boxes' z half-size in square-nut.xml
HANDLE = np.array([0.06, 0.0, 0.0])  # grasp point on the handle box (x 0.02875..0.07925, ring edge at 0.04375)
GRASP_DEPTH = -0.003  # fingertip height relative to the nut's mid-plane when closing
CLEAR = 0.03  # nut bottom above the peg top while lining up
HANDLE_HEADINGS = (np.pi / 2, np.pi, -np.pi / 2)  # the handle's world yaw when placing: +y, towards the robot, -y
MAX_WRIST_YAW = 2.0  # rules out half-turning the wrist: joint 7 (+-2.9 rad) starts at 0.8 and sits at ~2.4 at yaw -pi/2
INSERT = 0.04  # how far the nut is lowered onto the peg before letting go


def script(s: Scripter) -> Iterator[np.ndarray]:
    centre = lambda: np.asarray(s.obs["SquareNut_pos"], float)  # noqa: E731
    nut_rot = lambda: quat_to_mat(s.obs["SquareNut_quat"])  # noqa: E731
    nut_yaw = lambda: float(np.arctan2(nut_rot()[1, 0], nut_rot()[0, 0]))  # noqa: E731
    yield from s.hold(3)  # the nut is placed 6 cm up and drops to the table in the first steps
    offset = s.rng.uniform(-1, 1, 3) * np.array([s.op.grasp_offset, s.op.grasp_offset, 0.0])
    handle = lambda: centre() + nut_rot() @ HANDLE + offset  # noqa: E731
    # Fingers close along the gripper's y axis, so the gripper's yaw matches the handle's (mod pi).
    rot = s.yaw_rotation(face_yaw(s.obs["SquareNut_quat"], gripper_yaw(s), symmetry=np.pi))
    yield from s.move(lambda: handle() + [0.0, 0.0, s.op.approach_height], rot, tol=0.012, via=True)
    yield from s.move(lambda: handle() + [0.0, 0.0, GRASP_DEPTH], rot, tol=0.006, speed=0.5)
    yield from s.grasp()
    carry_z = PEG_TOP + NUT_HALF_THICKNESS + CLEAR + s.op.approach_height / 2
    yield from s.move(lambda: s.eef() * [1, 1, 0] + [0.0, 0.0, carry_z], rot, tol=0.02)
    # Turn the nut square to the peg (its ring is 4-fold symmetric) by the smallest wrist turn that leaves the
    # handle pointing anywhere but away from the robot (+x, out of the arm's reach), then centre it over the peg.
    turns = [wrap_angle(h - nut_yaw()) for h in HANDLE_HEADINGS]
    turn = min((t for t in turns if abs(gripper_yaw(s) + t) < MAX_WRIST_YAW), key=abs)
    place_rot = s.yaw_rotation(gripper_yaw(s) + turn)
    over = lambda z: lambda: np.append(s.eef()[:2] + PEG_XY - centre()[:2], z)  # noqa: E731
    yield from s.move(over(carry_z), place_rot, tol=0.015, via=True)
    line_up = PEG_TOP + NUT_HALF_THICKNESS + CLEAR
    yield from s.move(over(line_up + s.eef()[2] - centre()[2]), place_rot, tol=0.004, speed=0.4)
    yield from s.move(over(line_up - INSERT + s.eef()[2] - centre()[2]), place_rot, tol=0.006, speed=0.4)
    yield from s.release()
    yield from s.move(s.eef() + [0.0, 0.0, 0.05], tol=0.02)
