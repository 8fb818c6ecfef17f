"""Transport: arm 0 lifts the lid off the start bin and picks up the hammer while arm 1 moves the trash cube from the
target bin to the trash bin; arm 0 then holds the hammer out over the gap, arm 1 takes its free end and lays it in
the target bin.

Geometry from robosuite 1.5.2 (two_arm_transport.py, objects/group/transport.py, objects/composite/): the robots'
bases are at y = -0.81 (robot0) and y = +0.81 (robot1), tables centred at y = -+0.45. The start bin (lid and hammer)
is on robot0's table at x = 0.2, the target bin (with the trash) at x = -0.2 and the trash bin at x = 0.2 on
robot1's. Bins are 0.3 x 0.3 x 0.15 with a 1 cm floor. The hammer lies flat, its handle (body z axis, 0.2 m long,
0.03 m thick) within 30 degrees of the world y axis and its head at either end; `payload_pos` is the handle's centre.
The lid handle is a 0.02 x 0.08 x 0.03 box, long along y.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from envs.data.demonstrators.base import Scripter, face_yaw, fold, gripper_yaw, quat_to_mat

WALL_TOP = 0.145  # bin wall top above `*_bin_pos` (the floor's centre): 0.15 tall, floor half-thickness 0.005
FLOOR_TOP = 0.005  # a bin's floor surface above `*_bin_pos`
CLEAR = 0.06  # margin over the walls for what hangs below the hand
FINGER_REACH = 0.011  # fingertips below the grip site: finger tip body 0.1084 vs eef 0.097 (panda_gripper.xml)
FLOOR_GAP = 0.008  # fingertips kept this far off a bin's floor when grasping (dragging them pushes the hand off)
LID_DROP = np.array([-0.2, -0.45, 0.97])  # hand position to let the lid fall: onto robot0's table beside the start bin
HAMMER_COM = 0.059  # the hammer's centre of mass, along the handle from its centre towards the head (body inertia)
HEAD_REACH = 0.031  # the head reaches past the handle's end (0.1 from its centre) by 2 head half-sizes (hammer.py)
GRIP1 = 0.07  # arm 1 takes the handle this far from its centre on the free end (which ends at 0.1): 13 cm from arm 0
# The bases are 1.62 m apart, and a hand pointing down at base height reaches ~0.8 m out only with the elbow straight,
# where OSC stalls. So arm 0 holds the hammer out 0.71 m (HANDOVER, its hand) and arm 1 pitches its hand towards arm 0
# (REACH_PITCH; the fingers still close across the handle), which brings its wrist 8 cm back (more: wrist joint limit).
HANDOVER = np.array([0.0, -0.1, 1.0])
REACH_PITCH = 0.4
CARRY_CLEAR = 0.1  # hand height over the walls carrying the hammer, which may hang a little tipped from its end


def together(s: Scripter, first: Iterator[np.ndarray], second: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """Run an arm-0 script and an arm-1 script side by side; an arm whose script has ended keeps still."""
    first, second = iter(first), iter(second)
    while True:
        a, b = next(first, None), next(second, None)
        if a is None and b is None:
            return
        act = np.zeros(14)
        act[6::7] = s.grip
        if a is not None:
            act[:7] = a[:7]
        if b is not None:
            act[7:] = b[7:]
        yield act


def holding(s: Scripter, arm: int, steps: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """The other arm's `steps` while `arm` holds its pose firmly (a zero delta would give way to pushes)."""
    here, rot = s.eef(arm), s.eef_rot(arm)
    for act in steps:
        act[7 * arm : 7 * arm + 6] = s.step_towards(here, rot, arm)[7 * arm : 7 * arm + 6]
        yield act


def press(s: Scripter, arm: int, point, rot, tol: float = 0.008, steps: int = 50) -> Iterator[np.ndarray]:
    """Close in on `point()` slowly, aiming past it by the accumulated horizontal error as a person does when the
    hand lags: low down near its base the OSC arm sags up to ~2.5 cm toward it, which a proportional aim never fixes."""
    aim = np.zeros(3)
    for _ in range(steps):
        err = point() - s.eef(arm)
        if np.linalg.norm(err) < tol:
            return
        aim[:2] = np.clip(aim[:2] + 0.1 * err[:2], -0.03, 0.03)
        yield s.step_towards(point() + aim, rot, arm, speed=0.25)


def pick(s: Scripter, arm: int, point, rot: np.ndarray) -> Iterator[np.ndarray]:
    """Come over `point()` above the bins' walls, descend onto it (fingertips clear of the floor) and close the hand.
    All bins stand at one height (same table height and placement z offset), so the target bin's floor serves."""
    floor = float(s.obs["target_bin_pos"][2])
    above = lambda: np.append(point()[:2], max(floor + WALL_TOP + CLEAR, point()[2] + s.op.approach_height))  # noqa: E731
    at = lambda: np.append(point()[:2], max(point()[2], floor + FLOOR_TOP + FINGER_REACH + FLOOR_GAP))  # noqa: E731
    yield from s.move(above, rot, arm=arm, tol=0.015, via=True)
    yield from s.move(lambda: at() + [0.0, 0.0, 0.03], rot, arm=arm, tol=0.02, speed=0.5)
    yield from press(s, arm, at, rot)
    yield from s.grasp(arm)


def rot_x(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rot_y(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def hammer(s: Scripter) -> tuple[np.ndarray, np.ndarray]:
    """The handle's centre and its axis towards the head."""
    return np.asarray(s.obs["payload_pos"], float), quat_to_mat(s.obs["payload_quat"])[:, 2]


def script(s: Scripter) -> Iterator[np.ndarray]:
    yield from together(s, arm0_fetch(s), arm1_trash(s))
    yield from handover(s)


def arm0_fetch(s: Scripter) -> Iterator[np.ndarray]:
    rot = s.yaw_rotation(gripper_yaw(s, 0))  # the lid handle is long along y: the hand's initial yaw closes across it
    yield from pick(s, 0, lambda: np.asarray(s.obs["lid_handle_pos"], float), rot)
    yield from s.move(s.eef(0) * [1, 1, 0] + [0.0, 0.0, LID_DROP[2] + 0.1], rot, arm=0, tol=0.02)  # lid over the walls
    yield from s.move(LID_DROP, rot, arm=0, tol=0.03, via=True)
    yield from s.release(0)
    yield from s.move(s.eef(0) + [0.0, 0.0, 0.1], rot, arm=0, tol=0.03)
    # grasp the handle at the hammer's centre of mass, so it does not pivot in the fingers
    axis = hammer(s)[1]
    yaw = gripper_yaw(s, 0)
    yaw += fold(float(np.arctan2(axis[1], axis[0])) - yaw, np.pi)  # the hand's x axis along the handle
    along = s.rng.uniform(-1, 1) * s.op.grasp_offset
    yield from pick(s, 0, lambda: hammer(s)[0] + (HAMMER_COM + along) * hammer(s)[1], s.yaw_rotation(yaw))
    # the head lies ~1 cm from the bin's wall and drags on it (tipping the hammer in the hand) if lifted straight up:
    # slide it 2.5 cm away first
    yield from s.move(s.eef(0) - 0.025 * axis * [1, 1, 0] + [0.0, 0.0, 0.01], s.yaw_rotation(yaw), arm=0, tol=0.01)
    # hold it out with the head towards arm 0 (-y) and the free end towards arm 1. If the head points along the hand's
    # x axis that takes a half turn of the hand, made through +pi so that joint 7 (which turns opposite to the hand's
    # yaw, from ~0.8 rad at yaw pi/2) stays inside its +-2.9 rad range: a quarter while lifting, a quarter on the way
    turns = (np.pi, 1.5 * np.pi) if hammer(s)[1] @ s.eef_rot(0)[:, 0] > 0 else (yaw, np.pi / 2)
    lift = s.eef(0) * [1, 1, 0] + [0.0, 0.0, HANDOVER[2] + 0.05]
    yield from s.move(lift, s.yaw_rotation(turns[0]), arm=0, tol=0.03, rot_tol=0.2)
    yield from s.move(HANDOVER, s.yaw_rotation(turns[1]), arm=0, tol=0.015, via=True)


def arm1_trash(s: Scripter) -> Iterator[np.ndarray]:
    rot = s.yaw_rotation(face_yaw(s.obs["trash_quat"], gripper_yaw(s, 1)))
    offset = s.rng.uniform(-1, 1, 3) * [s.op.grasp_offset, s.op.grasp_offset, 0.0]
    carry = s.obs["target_bin_pos"][2] + WALL_TOP + CLEAR
    yield from pick(s, 1, lambda: np.asarray(s.obs["trash_pos"], float) + offset, rot)
    yield from s.move(s.eef(1) * [1, 1, 0] + [0.0, 0.0, carry], rot, arm=1, tol=0.03)
    yield from s.move(s.obs["trash_bin_pos"] * [1, 1, 0] + [0.0, 0.0, carry], rot, arm=1, tol=0.03, via=True)
    yield from s.release(1)
    wait = HANDOVER + [0.0, 0.25, 0.1]  # beside where the hammer's free end will be
    yield from s.move(wait, s.yaw_rotation(-np.pi / 2), arm=1, tol=0.03, via=True)
    yield from s.move(wait, rot_x(-REACH_PITCH) @ s.yaw_rotation(-np.pi / 2), arm=1, tol=0.03)


def handover(s: Scripter) -> Iterator[np.ndarray]:
    free_end = lambda: hammer(s)[0] - GRIP1 * hammer(s)[1]  # noqa: E731
    rot = rot_x(-REACH_PITCH) @ s.yaw_rotation(-np.pi / 2)  # fingers point down and towards arm 0
    back = rot[:, 2] * -0.06  # lined up 6 cm back along the fingers
    yield from holding(s, 0, s.move(lambda: free_end() + back, rot, arm=1, tol=0.015))
    yield from holding(s, 0, press(s, 1, free_end, rot, tol=0.01))
    yield from holding(s, 0, s.grasp(1))
    yield from holding(s, 1, s.release(0))
    # arm 0 lifts its open fingers straight off the handle before backing away (sliding along it would catch the head)
    yield from holding(s, 1, s.move(s.eef(0) + [0.0, 0.0, 0.1], s.eef_rot(0), arm=0, tol=0.02))
    # arm 1 turns its hand a quarter as it backs off: the hammer then hangs along +x from its free end, so over the
    # bin the hand is 0.45 m from arm 1's base (along y it would be 0.3 m, too close to reach well)
    rot1 = s.yaw_rotation(0.0)
    yield from together(
        s,
        s.move(s.eef(0) + [0.0, -0.15, 0.0], s.eef_rot(0), arm=0, tol=0.03),
        s.move(s.eef(1) + [0.0, 0.1, 0.05], rot1, arm=1, tol=0.03, rot_tol=0.2),
    )

    # held by one end the hammer tips in the fingers: tilt the hand about the fingers' axis (world y) to level it
    def level() -> np.ndarray:
        axis, tilt = hammer(s)[1], s.eef_rot(1) @ rot1.T
        return rot_y(np.arctan2(tilt[0, 2], tilt[0, 0]) + np.arcsin(np.clip(axis[2], -1, 1)) * np.sign(axis[0])) @ rot1

    # the whole hammer (its handle's centre is HEAD_REACH / 2 off its middle) over the bin's centre, above the walls;
    # then down, creeping the last centimetres (a hammer landing fast bounces off the floor) until it lies pressed
    # flat (its handle 1.5 cm half-thick) on the floor
    target = np.asarray(s.obs["target_bin_pos"], float)
    middle = lambda: hammer(s)[0] + HEAD_REACH / 2 * hammer(s)[1] * [1, 1, 0]  # noqa: E731
    centre_at = lambda z: lambda: s.eef(1) + np.append(target[:2], z) - middle()  # noqa: E731
    carry = lambda: centre_at(0.0)() * [1, 1, 0] + [0.0, 0.0, target[2] + WALL_TOP + CARRY_CLEAR]  # noqa: E731
    yield from s.move(carry, level, arm=1, tol=0.03, rot_tol=0.3, via=True)
    floor = target[2] + FLOOR_TOP
    yield from s.move(centre_at(floor + 0.06), level, arm=1, tol=0.02, rot_tol=0.15, speed=0.5)
    yield from s.move(centre_at(floor + 0.01), level, arm=1, tol=0.005, rot_tol=0.1, speed=0.1)
    yield from s.release(1)
    yield from s.hold(5, arm=1)
    yield from s.move(s.eef(1) + [0.0, 0.0, 0.1], rot1, arm=1, tol=0.03)
    yield from s.hold(10, arm=1)
