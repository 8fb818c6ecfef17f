"""Transport: arm 0 lifts the lid off the start bin and picks the hammer while arm 1 drops the trash cube from the
target bin into the trash bin; arm 0 then holds the hammer out over the gap, arm 1 takes it and lays it in the
target bin.

Geometry from robosuite 1.5.2 (two_arm_transport.py, objects/group/transport.py, objects/composite/): the robots'
bases are at y = -0.81 (robot0) and y = +0.81 (robot1), tables centred at y = -+0.45. The start bin (lid and hammer)
is on robot0's table at x = 0.2; the target bin (with the trash) at x = -0.2 and the trash bin at x = 0.2 on
robot1's. Bins are 0.3 x 0.3 x 0.15 with a 1 cm floor, so their walls top out 0.145 m above `*_bin_pos`. The hammer
lies flat, its handle (body z axis, 0.2 m long, 0.03 m thick) within 30 degrees of the world y axis, its head at
either end; `payload_pos` is the handle's centre. The lid handle is a 0.02 x 0.08 x 0.03 box, long along y.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from envs.data.demonstrators.base import Scripter, fold, gripper_yaw, quat_to_mat

WALL_TOP = 0.145  # bin wall top above `*_bin_pos` (the floor's centre): 0.15 tall, floor half-thickness 0.005
CLEAR = 0.06  # margin over walls for what hangs below the hand
LID_DROP = np.array([-0.2, -0.45, 0.9])  # hand position to let the lid go: on robot0's table, beside the start bin
GRIP_ALONG = 0.05  # each hand grasps the handle this far from its centre, robot0's toward -y, robot1's toward +y
HANDOVER = np.array([0.0, 0.0, 1.05])  # where the handle's centre is held out for the swap, midway between bases
PLACE_Z = 0.05  # lowest hand height above the target bin's floor while lowering the hammer
FLOOR_TOP = 0.005  # a bin's floor surface above `*_bin_pos`
FINGER_REACH = 0.011  # fingertips below the grip site: finger tip body 0.1084 vs eef 0.097 (panda_gripper.xml)
FLOOR_GAP = 0.008  # fingertips kept this far off a bin's floor when grasping (they drag and push the hand off)


def together(s: Scripter, first: Iterator[np.ndarray], second: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """Run an arm-0 script and an arm-1 script side by side; an arm whose script has ended holds still."""
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


def axis_yaw(axis: np.ndarray, current: float) -> float:
    """Gripper yaw whose fingers close across `axis` (the hand's x axis along it), the one nearest `current`."""
    return current + fold(float(np.arctan2(axis[1], axis[0])) - current, np.pi)


def until(steps: Iterator[np.ndarray], done) -> Iterator[np.ndarray]:
    """`steps` cut short once `done()` holds."""
    for act in steps:
        if done():
            return
        yield act


def pick(s: Scripter, arm: int, point, rot: np.ndarray) -> Iterator[np.ndarray]:
    """Come over `point()` above the bins' walls, descend onto it (fingertips clear of the floor) and close the hand.
    All bins stand at one height (same table height and placement z offset), so the target bin's floor serves."""
    floor = float(s.obs["target_bin_pos"][2])
    above = lambda: np.append(point()[:2], max(floor + WALL_TOP + CLEAR, point()[2] + s.op.approach_height))  # noqa: E731
    at = lambda: np.append(point()[:2], max(point()[2], floor + FLOOR_TOP + FINGER_REACH + FLOOR_GAP))  # noqa: E731
    yield from s.move(above, rot, arm=arm, tol=0.015, via=True)
    yield from s.move(at, rot, arm=arm, tol=0.007, speed=0.5)
    yield from s.grasp(arm)


def script(s: Scripter) -> Iterator[np.ndarray]:
    obs = lambda key: np.asarray(s.obs[key], float)  # noqa: E731
    handle_axis = lambda: quat_to_mat(s.obs["payload_quat"])[:, 2] * np.sign(quat_to_mat(s.obs["payload_quat"])[1, 2])  # noqa: E731
    up = lambda h: np.array([0.0, 0.0, h])  # noqa: E731
    yield from together(s, arm0_fetch(s, obs, handle_axis, up), arm1_trash(s, obs, up))
    yield from handover(s, obs, handle_axis, up)


def arm0_fetch(s, obs, handle_axis, up):
    rot = s.yaw_rotation(gripper_yaw(s, 0))  # the lid handle is long along y: the hand's initial yaw closes across it
    lid = lambda: obs("lid_handle_pos")  # noqa: E731
    yield from pick(s, 0, lid, rot)
    yield from s.move(lambda: s.eef(0) * [1, 1, 0] + up(1.1), rot, arm=0, tol=0.03)
    yield from s.move(LID_DROP + up(0.2), rot, arm=0, tol=0.03, via=True)
    yield from s.move(LID_DROP, rot, arm=0, tol=0.02)
    yield from s.release(0)
    yield from s.move(s.eef(0) + up(0.1), rot, arm=0, tol=0.03)
    # the hammer: grasp the handle GRIP_ALONG from its centre on robot0's side
    rot = s.yaw_rotation(axis_yaw(handle_axis(), gripper_yaw(s, 0)))
    grip = lambda: obs("payload_pos") - GRIP_ALONG * handle_axis()  # noqa: E731
    yield from pick(s, 0, grip, rot)
    yield from s.move(lambda: s.eef(0) * [1, 1, 0] + up(HANDOVER[2]), rot, arm=0, tol=0.03)
    rot = s.yaw_rotation(np.pi / 2)  # handle along y for the swap
    yield from s.move(HANDOVER - [0.0, GRIP_ALONG, 0.0], rot, arm=0, tol=0.015, via=True)


def arm1_trash(s, obs, up):
    from envs.data.demonstrators.base import face_yaw

    rot = s.yaw_rotation(face_yaw(s.obs["trash_quat"], gripper_yaw(s, 1)))
    trash = lambda: obs("trash_pos")  # noqa: E731
    carry = obs("target_bin_pos")[2] + WALL_TOP + CLEAR
    yield from pick(s, 1, trash, rot)
    yield from s.move(lambda: s.eef(1) * [1, 1, 0] + up(carry), rot, arm=1, tol=0.03)
    yield from s.move(lambda: obs("trash_bin_pos") * [1, 1, 0] + up(carry), rot, arm=1, tol=0.03, via=True)
    yield from s.release(1)
    rot = s.yaw_rotation(-np.pi / 2)
    yield from s.move(HANDOVER + [0.0, GRIP_ALONG + 0.05, 0.12], rot, arm=1, tol=0.03, via=True)


def handover(s, obs, handle_axis, up):
    grip = lambda: obs("payload_pos") + GRIP_ALONG * handle_axis()  # noqa: E731
    rot = lambda: s.yaw_rotation(axis_yaw(handle_axis(), gripper_yaw(s, 1)))  # noqa: E731
    yield from s.move(lambda: grip() + up(0.08), rot, arm=1, tol=0.015)
    yield from s.move(lambda: grip() + up(0.0), rot, arm=1, tol=0.006, speed=0.5)
    yield from s.grasp(1)
    yield from s.release(0)
    # arm 0 lifts its open fingers straight off the handle before backing away (sliding along it would catch the head)
    rot0 = s.yaw_rotation(gripper_yaw(s, 0))
    yield from s.move(s.eef(0) + up(0.1), rot0, arm=0, tol=0.02)
    yield from together(
        s,
        s.move(s.eef(0) + [0.0, -0.15, 0.0], rot0, arm=0, tol=0.03),
        s.move(s.eef(1) + [0.0, 0.1, 0.0], None, arm=1, tol=0.03),
    )
    rot1 = s.yaw_rotation(gripper_yaw(s, 1))
    # put the hammer's centre (not the hand) over the bin's centre
    over = lambda z: lambda: np.append(s.eef(1)[:2] + obs("target_bin_pos")[:2] - obs("payload_pos")[:2], z)  # noqa: E731
    floor = obs("target_bin_pos")[2]
    yield from s.move(over(floor + WALL_TOP + CLEAR), rot1, arm=1, tol=0.03, via=True)
    landed = lambda: bool(s.obs["payload_in_target_bin"])  # noqa: E731
    yield from until(s.move(over(floor + PLACE_Z), rot1, arm=1, tol=0.02, speed=0.3), landed)
    yield from s.release(1)
    yield from s.hold(5, arm=1)
    yield from s.move(s.eef(1) + up(0.1), rot1, arm=1, tol=0.03)
    yield from s.hold(10, arm=1)
