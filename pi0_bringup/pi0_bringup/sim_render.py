"""Synthetic camera images of the simulated robot in a simple tabletop scene.

The scene (world frame, z up, metres): a checkered floor, a table in front of
the robot's start pose and three coloured blocks on it. The robot is drawn from
a generic pseudo-kinematic chain per arm (the descriptions carry no link
geometry): the first joint yaws, the next two pitch the long links, the rest
alternate roll and pitch on short wrist links, and the tool points down toward
the table. A one-joint group (a gripper) opens two fingers on the arm listed
before it. Cameras follow their names and slots: wrist cameras ride on their
arm's tool and see its fingers; "high", "low" and any other camera are fixed
on the robot body, so base motion pans every view.

Rendering is a pinhole projection drawn with OpenCV primitives (painter's
algorithm, no z-buffer), vectorized so a frame costs about a millisecond at
224x224, and a pure function of the :class:`SimState`: identical states give
identical images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from pi0_bringup.sim_robot import SimState
from pi0_ros.core.robot_description import PI0_IMAGE_SLOTS, CameraSpec, RobotDescription

Colour = tuple[int, int, int]  # RGB
_Rod = tuple[tuple[int, int], tuple[int, int], int]  # pixel start, pixel end, thickness

_HORIZONTAL_FOV = math.radians(70.0)
_NEAR = 0.02  # m, near clipping plane
_TABLE_HEIGHT = 0.75  # m; arms are mounted on the table top
_ARM_SPACING = 0.5  # m between neighbouring arm mounts
_SKY = (178, 200, 225)
_FLOOR = (120, 120, 128)
_FLOOR_DARK = (92, 92, 100)
_TABLE = (150, 110, 70)
_ARM_COLOURS = ((235, 120, 30), (40, 160, 220), (120, 200, 60), (200, 60, 160))
# Table (centre, size) and blocks on it (centre x, y on the table top; edge length; colour).
_TABLE_BOX = (np.array([0.45, 0.0, _TABLE_HEIGHT / 2]), np.array([1.1, 1.4, _TABLE_HEIGHT]))
_BLOCKS = (
    ((0.62, 0.10), 0.06, (210, 40, 40)),
    ((0.74, -0.14), 0.05, (40, 170, 70)),
    ((0.52, -0.03), 0.045, (50, 80, 210)),
)
# Links of the generic arm chain (metres along the link), by joint index; later joints use _WRIST_LINK.
_ARM_LINKS = ((0.0, 0.0, 0.10), (0.25, 0.0, 0.0), (0.25, 0.0, 0.0))
_WRIST_LINK = (0.05, 0.0, 0.0)
_TOOL_TILT = 0.7  # rad the tool points below the last link, so the fingers face the table
_LINK_RADIUS = 0.03  # m
_FINGER_RADIUS = 0.008
_FINGER_LENGTH = 0.07
_MAX_FINGER_GAP = 0.08  # m between fingers when fully open
# Wrist cameras sit behind and above the flange, pitched down a little, so the fingers show at the bottom.
_WRIST_CAMERA_OFFSET = np.array([-0.08, 0.0, 0.07])
_WRIST_CAMERA_PITCH = 0.25  # rad
# Camera axes (x right, y down, z forward) expressed in a tool frame (x forward, y left, z up).
_CAMERA_IN_TOOL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
# Body cameras: (eye, target) in the robot frame.
_BODY_VIEWS = {
    "high": (np.array([-0.25, 0.0, 1.45]), np.array([0.55, 0.0, _TABLE_HEIGHT])),
    "low": (np.array([1.05, 0.0, 0.85]), np.array([0.3, 0.0, 0.95])),
    "scene": (np.array([1.4, -0.9, 1.35]), np.array([0.45, 0.0, 0.85])),
}


@dataclass(frozen=True)
class _Arm:
    joints: np.ndarray  # indices into SimState.positions, in chain order
    mount: np.ndarray  # [3] robot frame
    colour: Colour
    gripper: int | None  # index into SimState.positions
    gripper_range: tuple[float, float]  # (closed, open) positions


@dataclass(frozen=True)
class _Mount:
    """Where a camera sits: on an arm's tool, or fixed on the robot body."""

    arm: int | None = None  # index into the arms; None: on the body
    eye: np.ndarray | None = None  # [3] robot frame (body cameras)
    target: np.ndarray | None = None  # [3] robot frame (body cameras)


@dataclass(frozen=True)
class _Faces:
    """Static world geometry as quads, drawn back-face culled."""

    corners: np.ndarray  # [F, 4, 3] world
    normals: np.ndarray  # [F, 3] outward
    colours: tuple[Colour, ...]  # [F], shaded
    owner: np.ndarray  # [F] 0: table, k: block k


class SceneRenderer:
    """Renders every camera of a description; sizes default to each camera's own."""

    def __init__(self, description: RobotDescription, width: int = 0, height: int = 0) -> None:
        if width < 0 or height < 0:
            raise ValueError(f"image size must not be negative, got {width}x{height}")
        self._arms = _arms(description)
        self._mounts = {c.name: _camera_mount(c, len(self._arms)) for c in description.cameras}
        self._sizes = {c.name: (width or c.width, height or c.height) for c in description.cameras}
        self._backgrounds = {size: np.full((size[1], size[0], 3), _SKY, np.uint8) for size in self._sizes.values()}
        self._floor_tiles = _floor_tiles()
        self._faces = _static_faces()
        self._block_centres = np.array([[x, y, _TABLE_HEIGHT + edge / 2] for (x, y), edge, _ in _BLOCKS])  # [B, 3]

    def image_size(self, camera: str) -> tuple[int, int]:
        """(width, height) in pixels."""
        return self._sizes[camera]

    def render(self, camera: str, state: SimState) -> np.ndarray:
        """[H, W, 3] uint8 RGB image of `camera` for the robot in `state`."""
        size = self._sizes[camera]
        robot_to_world = _robot_pose(state)
        chains = [_arm_chain(arm, state.positions) for arm in self._arms]
        mount = self._mounts[camera]
        view = _View(*_camera_pose(mount, robot_to_world, chains), *size)
        image = self._backgrounds[size].copy()
        view.fill_polygon(image, _square(0.0, 0.0, 50.0, 0.0), _FLOOR)
        view.fill_polygons(image, self._floor_tiles, _FLOOR_DARK)
        faces = view.visible_faces(self._faces)
        _fill(image, faces, self._faces, owner=0)
        segments, radii, colours = self._robot_segments(state, robot_to_world, chains, mount.arm)
        segment_depths, rods = view.rods(segments, radii)
        # Painter's algorithm over blocks and robot segments: farthest first.
        depths = np.concatenate((view.to_camera(self._block_centres)[:, 2], segment_depths))
        num_blocks = len(self._block_centres)
        for item in np.argsort(-depths, kind="stable").tolist():
            if item < num_blocks:
                _fill(image, faces, self._faces, owner=item + 1)
            elif rods[item - num_blocks] is not None:
                start, end, thickness = rods[item - num_blocks]
                cv2.line(image, start, end, colours[item - num_blocks], thickness)
        return image

    def _robot_segments(
        self,
        state: SimState,
        robot_to_world: np.ndarray,
        chains: list[tuple[np.ndarray, np.ndarray]],
        camera_arm: int | None,
    ) -> tuple[np.ndarray, np.ndarray, list[Colour]]:
        """Links and fingers as world segments [S, 2, 3] with radii [S] and colours.

        A wrist camera's own links are left out: they sit behind and under it.
        """
        segments, radii, colours = [], [], []
        for index, (arm, (points, tool)) in enumerate(zip(self._arms, chains)):
            if index != camera_arm:
                links = np.stack((points[:-1], points[1:]), axis=1)  # [n + 1, 2, 3]
                segments.append(links)
                radii += [_LINK_RADIUS] * len(links)
                colours += [arm.colour] * len(links)
            fingers = _fingers(arm, state.positions, points[-1], tool)  # [2, 2, 3]
            segments.append(fingers)
            radii += [_FINGER_RADIUS] * 2
            colours += [arm.colour] * 2
        robot = np.concatenate(segments)
        world = robot @ robot_to_world[:3, :3].T + robot_to_world[:3, 3]
        return world, np.array(radii), colours


class _View:
    """A pinhole camera: projects world geometry and draws it into an image."""

    def __init__(self, rotation: np.ndarray, eye: np.ndarray, width: int, height: int) -> None:
        self._rotation = rotation  # [3, 3] world -> camera (x right, y down, z forward)
        self._eye = eye  # [3] world
        self._focal = (width / 2) / math.tan(_HORIZONTAL_FOV / 2)
        self._centre = np.array([width / 2, height / 2])

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """[..., 3] world -> [..., 3] camera frame."""
        return (points - self._eye) @ self._rotation.T

    def project(self, camera_points: np.ndarray) -> np.ndarray:
        """[..., 3] camera frame (z > 0) -> [..., 2] int32 pixels."""
        pixels = self._focal * camera_points[..., :2] / camera_points[..., 2:3] + self._centre
        # OpenCV rasterizes far off-image vertices exactly; the bound only guards the int32 cast
        # (scene extent / near plane keeps real vertices well inside it).
        return np.clip(np.rint(pixels), -1e9, 1e9).astype(np.int32)

    def fill_polygon(self, image: np.ndarray, world_polygon: np.ndarray, colour: Colour) -> None:
        """One polygon [K, 3], clipped to the near plane."""
        polygon = _clip_near(self.to_camera(world_polygon))
        if len(polygon) >= 3:
            cv2.fillPoly(image, [self.project(polygon)], colour)

    def fill_polygons(self, image: np.ndarray, world_polygons: np.ndarray, colour: Colour) -> None:
        """Many small polygons [P, K, 3] in one call; any crossing the near plane is skipped."""
        camera = self.to_camera(world_polygons)
        visible = camera[np.all(camera[..., 2] > _NEAR, axis=1)]
        if len(visible):
            cv2.fillPoly(image, list(self.project(visible)), colour)

    def visible_faces(self, faces: _Faces) -> dict[int, np.ndarray]:
        """Pixel polygons of the faces turned toward the camera, by face index."""
        front = np.einsum("fk,fk->f", faces.normals, self._eye - faces.corners[:, 0]) > 0
        camera = self.to_camera(faces.corners[front])  # [V, 4, 3]
        inside = np.all(camera[..., 2] >= _NEAR, axis=1)
        pixels = self.project(np.where(inside[:, None, None], camera, 1.0))
        polygons = {}
        for index, corners, pixel, whole in zip(np.flatnonzero(front).tolist(), camera, pixels, inside.tolist()):
            if whole:
                polygons[index] = pixel
            else:
                clipped = _clip_near(corners)
                if len(clipped) >= 3:
                    polygons[index] = self.project(clipped)
        return polygons

    def rods(self, segments: np.ndarray, radii: np.ndarray) -> tuple[np.ndarray, list[_Rod | None]]:
        """Camera depths [S] of world segments [S, 2, 3] with radii [S] (m), and each one's pixel
        (start, end, thickness), None where it lies behind the camera."""
        camera = self.to_camera(segments)  # [S, 2, 3]
        depths = camera[..., 2].mean(axis=1)
        inside = np.all(camera[..., 2] >= _NEAR, axis=1)
        pixels = self.project(np.where(inside[:, None, None], camera, 1.0)).tolist()  # [S, 2, 2]
        thickness = np.clip(2 * radii * self._focal / np.maximum(depths, _NEAR), 1, 255).astype(int).tolist()
        rods: list[_Rod | None] = [(tuple(a), tuple(b), t) for (a, b), t in zip(pixels, thickness)]
        for k in np.flatnonzero(~inside).tolist():
            ends = _clip_near(camera[k], closed=False)
            if len(ends) < 2:
                rods[k] = None
                continue
            a, b = self.project(ends).tolist()
            width = int(np.clip(2 * radii[k] * self._focal / ends[:, 2].mean(), 1, 255))
            rods[k] = (tuple(a), tuple(b), width)
        return depths, rods


def _fill(image: np.ndarray, polygons: dict[int, np.ndarray], faces: _Faces, owner: int) -> None:
    for index in np.flatnonzero(faces.owner == owner).tolist():
        if index in polygons:
            cv2.fillPoly(image, [polygons[index]], faces.colours[index])


def _arms(description: RobotDescription) -> list[_Arm]:
    """Multi-joint groups are arms; a one-joint group is the gripper of the arm listed before it."""
    groups = description.joint_groups
    arm_names = [g.name for g in groups if len(g.joints) > 1] or [g.name for g in groups]
    offsets, offset = {}, 0
    for group in groups:
        offsets[group.name] = offset
        offset += len(group.joints)
    grippers: dict[str, tuple[int, tuple[float, float]]] = {}
    last_arm: str | None = None
    for group in groups:
        if group.name in arm_names:
            last_arm = group.name
        elif last_arm is not None and last_arm not in grippers:
            joint = group.joints[0]
            grippers[last_arm] = (offsets[group.name], (joint.lower, joint.upper))
    # Mounts spread along y; the first arm is the left one (+y), as in ALOHA's left/right order.
    spread = ((len(arm_names) - 1) / 2 - np.arange(len(arm_names))) * _ARM_SPACING
    arms = []
    for i, name in enumerate(arm_names):
        size = len(next(g for g in groups if g.name == name).joints)
        gripper = grippers.get(name)
        arms.append(
            _Arm(
                joints=np.arange(offsets[name], offsets[name] + size),
                mount=np.array([0.0, spread[i], _TABLE_HEIGHT]),
                colour=_ARM_COLOURS[i % len(_ARM_COLOURS)],
                gripper=None if gripper is None else gripper[0],
                gripper_range=(0.0, 1.0) if gripper is None else gripper[1],
            )
        )
    return arms


def _camera_mount(camera: CameraSpec, num_arms: int) -> _Mount:
    """Wrist cameras by name or pi0 slot ("right" picks the second arm); others by name on the body."""
    name = camera.name.lower()
    if num_arms and ("wrist" in name or camera.slot in PI0_IMAGE_SLOTS[1:]):
        right = "right" in name or camera.slot == PI0_IMAGE_SLOTS[2]
        return _Mount(arm=min(int(right), num_arms - 1))
    view = "high" if "high" in name else "low" if "low" in name else "scene"
    eye, target = _BODY_VIEWS[view]
    return _Mount(eye=eye, target=target)


def _camera_pose(
    mount: _Mount, robot_to_world: np.ndarray, chains: list[tuple[np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray]:
    """(rotation [3, 3] world -> camera, eye [3] world) of a mounted camera."""
    if mount.arm is None:
        eye, target = _transform(robot_to_world, np.stack((mount.eye, mount.target)))
        return _look_at(eye, target), eye
    points, tool = chains[mount.arm]
    eye = points[-1] + tool @ _WRIST_CAMERA_OFFSET
    camera_to_robot = tool @ _rotation("y", _WRIST_CAMERA_PITCH) @ _CAMERA_IN_TOOL
    return (robot_to_world[:3, :3] @ camera_to_robot).T, _transform(robot_to_world, eye[None])[0]


def _arm_chain(arm: _Arm, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points [n + 1, 3] of the generic chain (mount ... flange, robot frame) and the tool rotation [3, 3]."""
    rotation = np.eye(3)
    points = [arm.mount]
    for i, q in enumerate(positions[arm.joints]):
        rotation = rotation @ _rotation(_joint_axis(i), float(q))
        link = _ARM_LINKS[i] if i < len(_ARM_LINKS) else _WRIST_LINK
        points.append(points[-1] + rotation @ np.array(link))
    return np.array(points), rotation @ _rotation("y", _TOOL_TILT)


def _joint_axis(index: int) -> str:
    if index == 0:
        return "z"
    if index <= 2:
        return "y"
    return "x" if index % 2 else "y"


def _fingers(arm: _Arm, positions: np.ndarray, flange: np.ndarray, tool: np.ndarray) -> np.ndarray:
    """Two finger segments [2, 2, 3] (robot frame) whose gap follows the gripper opening."""
    closed, opened = arm.gripper_range
    opening = 0.5 if arm.gripper is None else (positions[arm.gripper] - closed) / (opened - closed)
    half_gap = 0.5 * (0.01 + _MAX_FINGER_GAP * float(np.clip(opening, 0.0, 1.0)))
    forward, left = tool[:, 0], tool[:, 1]
    bases = np.stack((flange + half_gap * left, flange - half_gap * left))  # [2, 3]
    return np.stack((bases, bases + _FINGER_LENGTH * forward), axis=1)


def _robot_pose(state: SimState) -> np.ndarray:
    """[4, 4] robot frame -> world frame from the base pose (identity for a fixed robot)."""
    pose = np.eye(4)
    if state.base is not None:
        pose[:3, :3] = _rotation("z", state.base.yaw)
        pose[:2, 3] = (state.base.x, state.base.y)
    return pose


def _transform(pose: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Applies a [4, 4] pose to points [N, 3]."""
    return points @ pose[:3, :3].T + pose[:3, 3]


def _rotation(axis: str, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    if axis == "x":
        return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    if axis == "y":
        return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """[3, 3] world -> camera rotation looking from `eye` at `target` with world z up."""
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, (0.0, 0.0, 1.0))
    right /= np.linalg.norm(right)
    return np.stack((right, np.cross(forward, right), forward))


def _clip_near(points: np.ndarray, closed: bool = True) -> np.ndarray:
    """Clips a polygon (or an open polyline) [K, 3] in camera frame to z >= _NEAR."""
    inside = points[:, 2] >= _NEAR
    if inside.all():
        return points
    clipped = []
    count = len(points) if closed else len(points) - 1
    for i in range(count):
        j = (i + 1) % len(points)
        if inside[i]:
            clipped.append(points[i])
        if inside[i] != inside[j]:
            t = (_NEAR - points[i, 2]) / (points[j, 2] - points[i, 2])
            clipped.append(points[i] + t * (points[j] - points[i]))
    if not closed and inside[-1]:
        clipped.append(points[-1])
    return np.array(clipped).reshape(-1, 3)


def _square(x: float, y: float, half: float, z: float) -> np.ndarray:
    """[4, 3] corners of a horizontal square."""
    signs = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]])
    return np.column_stack((x + half * signs[:, 0], y + half * signs[:, 1], np.full(4, z)))


def _floor_tiles(tile: float = 0.5, extent: int = 10) -> np.ndarray:
    """[P, 4, 3] dark squares of a checkerboard floor around the origin."""
    return np.array(
        [
            _square((i + 0.5) * tile, (j + 0.5) * tile, tile / 2, 0.0)
            for i in range(-extent, extent)
            for j in range(-extent, extent)
            if (i + j) % 2 == 0
        ]
    )


def _static_faces() -> _Faces:
    boxes = [(*_TABLE_BOX, _TABLE)]
    boxes += [
        (np.array([x, y, _TABLE_HEIGHT + edge / 2]), np.full(3, edge), colour) for (x, y), edge, colour in _BLOCKS
    ]
    corners, normals, colours, owner = [], [], [], []
    for index, (centre, size, colour) in enumerate(boxes):
        for normal, face, shade in _box_faces(centre, size):
            corners.append(face)
            normals.append(normal)
            colours.append(tuple(int(c * shade) for c in colour))
            owner.append(index)
    return _Faces(np.array(corners), np.array(normals), tuple(colours), np.array(owner))


def _box_faces(centre: np.ndarray, size: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """(outward normal, corners [4, 3], shade) for the six faces of an axis-aligned box; lit from above."""
    half = size / 2
    faces = []
    for axis, shades in ((2, (1.0, 0.5)), (0, (0.8, 0.8)), (1, (0.65, 0.65))):
        u, v = [a for a in range(3) if a != axis]
        for sign, shade in zip((1.0, -1.0), shades):
            corners = np.tile(centre, (4, 1))
            corners[:, axis] += sign * half[axis]
            corners[:, u] += np.array([-1, 1, 1, -1]) * half[u]
            corners[:, v] += np.array([-1, -1, 1, 1]) * half[v]
            normal = np.zeros(3)
            normal[axis] = sign
            faces.append((normal, corners, shade))
    return faces
