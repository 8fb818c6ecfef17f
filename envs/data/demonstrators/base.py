"""Scripted demonstrators for the Robomimic tasks, with per-operator variety.

A task's script is a generator: it reads `s.obs` (robosuite's observation
dict, refreshed before every step) and yields one action per control step,
built with `s.move`/`s.hold`. The `Operator` drawn per episode sets what
robomimic's multi-human data vary between people: speed, path (a via-point
offset and approach height), pauses, overshoot-and-correct, and action noise.
Actions are OSC_POSE deltas in the robot's base frame, scaled to [-1, 1]
(1 = 5 cm / 0.5 rad per step); gripper -1 opens, 1 closes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import numpy as np

POS_SCALE, ROT_SCALE = 0.05, 0.5  # OSC_POSE output_max: metres and radians per step at input 1
OPEN, CLOSE = -1.0, 1.0
STALL_STEPS = 15  # a move that gains under 2 mm in this many steps is done, as close as it gets


@dataclass(frozen=True)
class Operator:
    speed: float  # fraction of the controller's full step the operator moves at, at most
    gain: float  # proportional gain towards the current target (how hard they home in)
    noise: float  # std of Gaussian action noise (hand tremor)
    pause_prob: float  # chance per step of starting a pause
    pause_steps: int  # longest pause
    via_offset: float  # sideways bulge of the path between targets, metres
    approach_height: float  # height above an object to line up before descending, metres
    overshoot: float  # a transport move first aims this far past its target, then corrects
    grasp_offset: float  # xy error in where the operator grasps, metres

    @classmethod
    def sample(cls, rng: np.random.Generator) -> Operator:
        return cls(
            speed=float(rng.uniform(0.5, 1.0)),
            gain=float(rng.uniform(6.0, 12.0)),
            noise=float(rng.uniform(0.0, 0.08)),
            pause_prob=float(rng.choice([0.0, 0.01, 0.02])),
            pause_steps=int(rng.integers(2, 10)),
            via_offset=float(rng.uniform(-0.05, 0.05)),
            approach_height=float(rng.uniform(0.06, 0.12)),
            overshoot=float(rng.choice([0.0, 0.0, rng.uniform(0.01, 0.03)])),
            grasp_offset=float(rng.uniform(-0.006, 0.006)),
        )

    def to_dict(self) -> dict:
        return asdict(self)


def quat_to_mat(q: np.ndarray) -> np.ndarray:
    """robosuite's (x, y, z, w) quaternion to a rotation matrix."""
    x, y, z, w = np.asarray(q, float) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def rotation_vector(r: np.ndarray) -> np.ndarray:
    """Axis * angle of a rotation matrix."""
    angle = np.arccos(np.clip((np.trace(r) - 1) / 2, -1.0, 1.0))
    if angle < 1e-6:
        return np.zeros(3)
    axis = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]])
    if np.pi - angle < 1e-3:  # near pi the antisymmetric part vanishes; take the axis from the diagonal
        axis = np.sqrt(np.clip((np.diag(r) + 1) / 2, 0, None)) * np.sign(axis + 1e-12)
        return axis / np.linalg.norm(axis) * angle
    return axis / (2 * np.sin(angle)) * angle


def rot_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def wrap_angle(a: float) -> float:
    return float((a + np.pi) % (2 * np.pi) - np.pi)


class Scripter:
    """What a task script uses: the latest observation, and moves that yield actions.

    `arm` picks the robot (0 or 1, Transport); the other arm's part of the
    action holds its pose and gripper. `base_rotation[i]` is robot i's base
    orientation in the world, since OSC_POSE takes deltas in the base frame.
    """

    def __init__(
        self, n_arms: int, operator: Operator, rng: np.random.Generator, base_rotation: list[np.ndarray] | None = None
    ):
        self.n_arms, self.op, self.rng = n_arms, operator, rng
        self.base_rotation = base_rotation or [np.eye(3)] * n_arms
        self.obs: dict[str, np.ndarray] = {}
        self.grip = [OPEN] * n_arms
        self.down = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]])  # gripper pointing down

    def eef(self, arm: int = 0) -> np.ndarray:
        return np.asarray(self.obs[f"robot{arm}_eef_pos"], float)

    def eef_rot(self, arm: int = 0) -> np.ndarray:
        return quat_to_mat(self.obs[f"robot{arm}_eef_quat"])

    def gripper_width(self, arm: int = 0) -> float:
        q = self.obs[f"robot{arm}_gripper_qpos"]
        return float(q[0] - q[1])

    def _action(self, arm: int, dpos: np.ndarray, drot: np.ndarray) -> np.ndarray:
        act = np.zeros(7 * self.n_arms)
        for i in range(self.n_arms):
            act[7 * i + 6] = self.grip[i]
        base = self.base_rotation[arm].T  # world -> this robot's base frame
        act[7 * arm : 7 * arm + 3] = base @ dpos / POS_SCALE
        act[7 * arm + 3 : 7 * arm + 6] = base @ drot / ROT_SCALE
        return act

    def step_towards(
        self, target: np.ndarray, rot: np.ndarray | None = None, arm: int = 0, speed: float | None = None
    ) -> np.ndarray:
        """One proportional step towards a world position (and orientation), at most the operator's speed."""
        speed = self.op.speed if speed is None else speed
        dpos = (np.asarray(target, float) - self.eef(arm)) * min(1.0, self.op.gain * 0.1)
        norm = np.linalg.norm(dpos) / POS_SCALE
        if norm > speed:
            dpos *= speed / norm
        drot = np.zeros(3)
        if rot is not None:
            drot = rotation_vector(rot @ self.eef_rot(arm).T) * 0.5
            rnorm = np.linalg.norm(drot) / ROT_SCALE
            if rnorm > speed:
                drot *= speed / rnorm
        act = self._action(arm, dpos, drot)
        noise = self.rng.normal(0.0, self.op.noise, act.shape)
        noise[6::7] = 0.0
        return np.clip(act + noise, -1.0, 1.0)

    def move(
        self,
        target: Callable[[], np.ndarray] | np.ndarray,
        rot: Callable[[], np.ndarray] | np.ndarray | None = None,
        arm: int = 0,
        tol: float = 0.01,
        rot_tol: float = 0.05,
        max_steps: int = 150,
        speed: float | None = None,
        via: bool = False,
    ) -> Iterator[np.ndarray]:
        """Yield steps until the end-effector is within `tol` of `target` (callables are re-read every step).
        `via` bends the path through a sideways via-point and lets the operator overshoot, as people do on
        long transport moves."""
        fixed = None if callable(target) else np.asarray(target, float)
        goal = target if callable(target) else (lambda: fixed)
        goal_rot = rot if callable(rot) or rot is None else (lambda r=rot: r)
        if via:
            start = self.eef(arm)
            end = goal()
            side = np.cross(end - start, [0.0, 0.0, 1.0])
            if np.linalg.norm(side) > 1e-6 and abs(self.op.via_offset) > 1e-3:
                mid = (start + end) / 2 + side / np.linalg.norm(side) * self.op.via_offset
                yield from self.move(mid, rot, arm, tol=0.03, max_steps=max_steps, speed=speed)
            if self.op.overshoot > 0:
                past = end + (end - start) / (np.linalg.norm(end - start) + 1e-9) * self.op.overshoot
                past[2] = max(past[2], end[2])
                yield from self.move(past, rot, arm, tol=0.02, max_steps=max_steps, speed=speed)
        errors = []
        for _ in range(max_steps):
            r = goal_rot() if goal_rot is not None else None
            pos_err = np.linalg.norm(goal() - self.eef(arm))
            rot_err = 0.0 if r is None else np.linalg.norm(rotation_vector(r @ self.eef_rot(arm).T))
            if pos_err < tol and rot_err < rot_tol:
                return
            errors.append(pos_err + 0.1 * rot_err)
            if len(errors) > STALL_STEPS and errors[-STALL_STEPS - 1] - errors[-1] < 0.002:
                return  # no headway (a reach limit, or a load the controller can't hold exactly): go on
            yield self.step_towards(goal(), r, arm, speed)

    def hold(self, steps: int, arm: int = 0, grip: float | None = None) -> Iterator[np.ndarray]:
        """Stay put (tracking the current pose) for `steps`, optionally opening or closing the gripper."""
        if grip is not None:
            self.grip[arm] = grip
        here = self.eef(arm)
        for _ in range(steps):
            yield self.step_towards(here, None, arm)

    def grasp(self, arm: int = 0, steps: int = 12) -> Iterator[np.ndarray]:
        yield from self.hold(steps, arm, CLOSE)

    def release(self, arm: int = 0, steps: int = 8) -> Iterator[np.ndarray]:
        yield from self.hold(steps, arm, OPEN)

    def yaw_rotation(self, yaw: float) -> np.ndarray:
        """The gripper pointing down, turned by `yaw` about the world z axis."""
        return rot_z(yaw) @ self.down


def face_yaw(quat: np.ndarray, current: float, symmetry: float = np.pi / 2) -> float:
    """The object's yaw, folded by its symmetry to the one nearest the gripper's current yaw."""
    r = quat_to_mat(quat)
    yaw = np.arctan2(r[1, 0], r[0, 0])
    return current + fold(yaw - current, symmetry)


def fold(delta: float, symmetry: float) -> float:
    """`delta` wrapped into [-symmetry/2, symmetry/2)."""
    return float((delta + symmetry / 2) % symmetry - symmetry / 2)


def gripper_yaw(s: Scripter, arm: int = 0) -> float:
    """The gripper's turn about world z away from pointing straight down."""
    r = s.eef_rot(arm) @ s.down.T
    return float(np.arctan2(r[1, 0], r[0, 0]))


def with_pauses(actions: Iterator[np.ndarray], s: Scripter) -> Iterator[np.ndarray]:
    """Interleave the operator's pauses (arm held still, gripper unchanged) into a script."""
    for act in actions:
        if s.op.pause_prob and s.rng.random() < s.op.pause_prob:
            for _ in range(int(s.rng.integers(1, s.op.pause_steps + 1))):
                still = np.zeros_like(act)
                still[6::7] = act[6::7]
                yield still
        yield act
